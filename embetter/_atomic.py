"""The one write-to-a-temporary-then-rename helper: a reader never sees a half-written file or
folder, a failure leaves what was there before intact, and what was written is on the disk
(synced) before it takes the old one's name, so a power cut cannot leave it half there."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import sys
import tempfile
from pathlib import Path

#: names longer than this get a short temporary name (the prefix and suffix would overflow
#: the file system's 255)
_LONG_NAME = 200


def _sync(path: str) -> None:
    """Flush a file, every file in a folder, or a folder's own entries to the disk."""
    if os.path.isdir(path):
        for root, _dirs, files in os.walk(path):
            for name in files:
                _sync(os.path.join(root, name))
        flags = os.O_RDONLY
    else:
        flags = os.O_RDWR
    try:
        fd = os.open(path, flags)
    except OSError:  # a folder cannot be opened on Windows: nothing to sync there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_entry(parent: Path, prefix: str, folder: bool) -> str:
    """A new, uniquely named file or folder in `parent`, made with the usual permissions (the
    process's umask applies, as to any file it creates; mkstemp's would be private)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            if folder:
                os.mkdir(path, 0o777)
            else:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return str(path)
    raise FileExistsError(f"no free temporary name {prefix}... in {str(parent)!r}")


def user_path(path) -> str:
    """`path` (str or path-like) as the file system names it: `~` expanded, as a shell would.
    Every save and load goes through it, so what a save returns loads back."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or path-like (pathlib.Path), got "
                        f"{type(path).__name__}")
    return os.path.expanduser(os.fspath(path))


def _exchange(a, b) -> bool:
    """Swap two directories in one step (Linux's `renameat2` with `RENAME_EXCHANGE`): a
    process killed during a re-save leaves the old folder or the new one at the target,
    never neither. False where the system or file system has no such call."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (ImportError, AttributeError, OSError):  # no ctypes, or a C library without it
        return False  # (glibc < 2.28, musl)
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextlib.contextmanager
def atomic_path(path, *, folder: bool = False):
    """Yield a temporary path next to `path`; when the block succeeds, move it over `path`.

    With `folder=True` the temporary path is an (empty) directory and `path` a directory; an
    existing one is swapped with it in one step where Linux can (else moved aside first: a
    directory cannot be renamed onto a non-empty one), then removed. The parent folder is
    created when missing.

    Arguments:
        path: the file (or folder) to write.
        folder: write a directory instead of a file.

    Usage:

    ```python
    import tempfile, pathlib
    from embetter._atomic import atomic_path

    target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    with atomic_path(target) as tmp:
        pathlib.Path(tmp).write_text("done")
    assert target.read_text() == "done"
    ```
    """
    target = Path(user_path(path))
    if target.is_symlink() and target.exists():  # a link keeps pointing where it did, at the
        target = Path(os.path.realpath(target))  # new content (a dangling one is replaced)
    if folder and target.exists() and not target.is_dir():
        raise ValueError(
            f"path must be a directory (or not exist yet), got the file {str(target)!r}"
        )
    if not folder and target.is_dir():  # (the rename would name our temporary file)
        raise ValueError(f"path must be a file (or not exist yet), got the directory "
                         f"{str(target)!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    long = len(os.fsencode(target.name)) > _LONG_NAME  # the file system counts bytes
    stem = target.name if not long else hashlib.blake2b(
        target.name.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    tmp = _new_entry(target.parent, f".{stem}.tmp-", folder)
    aside = None  # the folder that was at `path`, while the new one moves in
    try:
        yield tmp
        _sync(tmp)
        if not folder and target.is_file():  # a re-save keeps the file's permissions
            with contextlib.suppress(OSError):  # where the file system takes them
                os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        if folder and target.exists() and _exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # (now the old folder)
        elif folder and target.exists():  # no atomic swap here: the old one moves aside
            old = tempfile.mkdtemp(prefix=f".{stem}.old-", dir=target.parent)
            aside = Path(old, "previous")
            os.replace(target, aside)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _sync(str(target.parent))  # the new name itself
    except BaseException:
        if aside is not None and aside.exists() and not target.exists():
            os.replace(aside, target)  # the new folder did not move in: the old one goes back
            shutil.rmtree(aside.parent, ignore_errors=True)
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
