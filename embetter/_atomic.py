"""The one write-to-a-temporary-then-rename helper: a reader never sees a half-written file or
folder, and a failure leaves what was there before intact."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def _usual_permissions(path: str, folder: bool) -> None:
    # mkstemp/mkdtemp create private entries (0600/0700); give the result the usual ones
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_path(path, *, folder: bool = False):
    """Yield a temporary path next to `path`; when the block succeeds, move it over `path`.

    With `folder=True` the temporary path is an (empty) directory and `path` a directory; an
    existing one is moved aside first (a directory cannot be renamed onto a non-empty one),
    then removed. The parent folder is created when missing.

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
    target = Path(os.fspath(path)).expanduser()
    if folder and target.exists() and not target.is_dir():
        raise ValueError(
            f"path must be a directory (or not exist yet), got the file {str(target)!r}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    if folder:
        tmp = tempfile.mkdtemp(prefix=prefix, dir=target.parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
    try:
        yield tmp
        _usual_permissions(tmp, folder)
        if folder and target.exists():
            old = tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent)
            os.replace(target, Path(old, "previous"))
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
