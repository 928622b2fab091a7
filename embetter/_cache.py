"""The disk cache for embeddings: `CachedEncoder` and `cached` (public in `embetter.utils`)."""

from __future__ import annotations

import hashlib
import os
import pickle
import sqlite3
import types

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from embetter._validation import as_texts


class CachedEncoder(TransformerMixin, BaseEstimator):
    """Wrap an encoder with a disk cache of its embeddings (backed by `diskcache`).

    Every text is keyed by the encoder's identity (a hash of its parameters and fitted state)
    plus the text itself, so two differently configured encoders never share entries. The
    identity is hashed once per state of the encoder: it is hashed again only when a parameter
    or fitted attribute (of the encoder or of an estimator inside it) is replaced or a counter
    such as `n_iter_` moves, as `fit`, `partial_fit` and `set_params` do. (Weights edited in
    place by hand, outside those methods, are not noticed: call `fit` again.) A batch
    is looked up at once, and only the misses are encoded, in one call. The cache lives on
    disk: it survives restarts and can be shared by processes writing at the same time.

    Arguments:
        encoder: the transformer to cache (texts in, a 2-D array out).
        path: the cache folder.

    Usage:

    ```python
    import tempfile
    from embetter.text import SentenceEncoder
    from embetter.utils import cached

    enc = cached(tempfile.mkdtemp(), SentenceEncoder())
    first = enc.transform(["hello", "world"])
    again = enc.transform(["world", "hello"])  # served from disk
    assert (again[0] == first[1]).all()
    ```
    """

    def __init__(self, encoder, path):
        self.encoder = encoder
        self.path = path

    def _check_encoder(self):
        if not callable(getattr(self.encoder, "transform", None)):
            hint = (f" {self.encoder!r}: pass an encoder, e.g. SentenceEncoder({self.encoder!r})"
                    if isinstance(self.encoder, (str, os.PathLike)) else "")
            raise TypeError("encoder must be a transformer with a transform method, got "
                            f"{type(self.encoder).__name__}{hint}")

    def fit(self, X, y=None):
        """Fit the wrapped encoder (a no-op for the stateless pretrained encoders)."""
        self._check_encoder()
        self.encoder.fit(X, y)
        return self

    def _cache(self):
        import diskcache

        if not isinstance(self.path, (str, os.PathLike)):
            raise TypeError(
                f"path must be the cache's folder (a str or Path), got {type(self.path).__name__}")
        # expanded as diskcache expands it: compared with its `directory` on every call
        folder = os.path.expandvars(os.path.expanduser(os.fspath(self.path)))
        if os.path.isfile(folder):
            raise ValueError(f"path must be a folder for the cache, got the file {self.path!r}")
        cache = self.__dict__.get("_cache_handle")
        if cache is None or cache.directory != folder:
            if cache is not None:  # set_params(path=...): the old folder's database closes
                cache.close()
            # cull_limit=0: transform culls once per batch of writes, not on every set
            try:
                cache = diskcache.Cache(folder, cull_limit=0)
            except sqlite3.DatabaseError as e:  # "file is not a database", "malformed"
                raise ValueError(
                    f"the cache at {folder!r} is damaged ({e}); delete that folder (its "
                    "vectors are computed again) or give another path") from None
            self.__dict__["_cache_handle"] = cache
        return cache

    def _identity(self) -> str:
        """The encoder's fingerprint, re-hashed only when its state signature moved."""
        signature = _state_signature(self.encoder)
        memo = self.__dict__.get("_identity_memo")
        if memo is None or memo[0] != signature:
            memo = (signature, _content_hash(self.encoder))
            self.__dict__["_identity_memo"] = memo
        return memo[1] + _model_folders(self.encoder)

    def transform(self, X):
        """Embed texts, reading known ones from disk and encoding only the rest."""
        self._check_encoder()
        texts = as_texts(X)
        identity = self._identity()
        keys = [
            identity + hashlib.blake2b(t.encode("utf-8", "surrogatepass"),
                                       digest_size=16).hexdigest()
            for t in texts
        ]
        cache = self._cache()
        found = _bulk_get(cache, keys)
        missing = {}  # key -> first index; a text repeated in X is encoded once
        for i, key in enumerate(keys):
            if key not in found:
                missing.setdefault(key, i)
        if missing:
            try:
                encoded = np.asarray(self.encoder.transform(
                    [texts[i] for i in missing.values()]), dtype=np.float32)
            except Exception as e:
                # a hosted encoder's error carries the batches it had back before failing:
                # they are paid for, so they are kept, and a re-run sends only the rest
                finished = getattr(e, "finished", None)
                # only rows certain to be the wrapped encoder's own output: a hosted encoder
                # wrapped directly (inside a pipeline, or behind another cache, the rows and
                # positions are another step's)
                if (isinstance(finished, tuple) and len(finished) == 2
                        and _hosted(self.encoder)):
                    pending = list(missing)
                    self._store(cache, [pending[i] for i in finished[0]],
                                [row.tobytes() for row in finished[1]])
                raise
            rows = [row.tobytes() for row in encoded]
            self._store(cache, missing, rows)
            found.update(zip(missing, rows))
        if not texts:
            return np.asarray(self.encoder.transform([]), dtype=np.float32)
        if len({len(found[k]) for k in keys}) > 1:  # never reshape rows of two widths
            raise RuntimeError(
                f"the cache at {self.path!r} holds rows of another width for this encoder: its "
                "key missed a change to the encoder; clear that folder"
            )
        flat = np.frombuffer(b"".join(found[k] for k in keys), dtype=np.float32)
        return flat.reshape(len(keys), -1).copy()

    def _store(self, cache, keys, rows) -> None:
        """Write rows to the cache, best effort: the vectors are computed (a hosted API's
        paid for), so a write that fails (disk full, a database locked too long) is a
        warning, and they are returned all the same."""
        import warnings

        from diskcache import Timeout

        try:
            _store(cache, keys, rows)
        except (sqlite3.Error, OSError, Timeout) as e:
            warnings.warn(f"the cache at {self.path!r} could not store {len(rows)} rows "
                          f"({type(e).__name__}: {e}); they are returned, not cached",
                          RuntimeWarning, stacklevel=3)

    def close(self):
        """Close the cache's database now (it opens again on the next `transform`)."""
        cache = self.__dict__.pop("_cache_handle", None)
        if cache is not None:
            cache.close()

    def get_feature_names_out(self, input_features=None):
        """The wrapped encoder's output names (for `set_output` and pipelines)."""
        return self.encoder.get_feature_names_out(input_features)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_cache_handle", None)
        state.pop("_identity_memo", None)  # object ids mean nothing in another process
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        inner = getattr(self.encoder, "__sklearn_tags__", None)
        if inner is not None:
            tags.requires_fit = inner().requires_fit
        return tags

    def __sklearn_is_fitted__(self):
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(self.encoder)
        except Exception:
            return False
        return True


_PLAIN = (type(None), bool, int, float, complex, str, bytes, np.generic)


def _model_folders(encoder) -> str:
    """Content hashes of the local model folders the encoder's `name` parameters point to: a
    model saved again to the same folder (fine-tuned in place) gives other vectors, and its
    parameters alone would not tell."""
    if not hasattr(encoder, "get_params"):
        return ""
    from pathlib import Path

    from embetter.text._models import folder_fingerprint, resolve_model

    parts = []
    for key, value in sorted(encoder.get_params(deep=True).items()):
        if (key == "name" or key.endswith("__name")) and isinstance(value, (str, os.PathLike)):
            folder = Path(resolve_model(value))
            if folder.is_dir():
                parts.append(folder_fingerprint(folder)[:16])
    return "".join(parts)


def _content_hash(encoder) -> str:
    """What the encoder is, by value: joblib's hash of its pickle (weights included), plus
    the code of the functions in it (a pickle names a function, so an edited `prep` would
    keep its key); an encoder pickle cannot write (a lambda inside) is hashed with its
    functions written as their code."""
    encoder = _without_volatile(encoder)
    digest = _digest(encoder, frozenset({id(encoder)}))
    code = _function_code(encoder)
    return digest + (hashlib.blake2b(code, digest_size=8).hexdigest() if code else "")


def _digest(obj, seen) -> str:
    """joblib's hash of `obj`; where pickle cannot write it (a lambda inside), the hash of
    its pickle with functions written as their code (`seen`: the ids being hashed further
    out, see `_value_bytes`)."""
    import joblib

    try:
        return joblib.hash(obj)
    except (pickle.PicklingError, AttributeError, TypeError):
        sink = hashlib.blake2b(digest_size=16)
        _CodePickler(_Writer(sink.update), seen).dump(obj)
        return sink.hexdigest()


#: attributes that hold a memory address (scikit-learn's text vectorizers keep
#: `id(stop_words)`): another in every process, so an encoder's identity leaves them out
_VOLATILE = frozenset({"_stop_words_id"})


def _without_volatile(obj, _seen=frozenset()):
    """`obj` as its identity is hashed: estimators at any depth (attributes, pipeline steps,
    the owners of bound methods) without their `_VOLATILE` attributes, as stand-ins made for
    the hash only; `obj` itself where nothing inside holds one (its hash, and so its cache
    rows, stay as they were)."""
    if isinstance(obj, _PLAIN) or id(obj) in _seen:
        return obj
    seen = _seen | {id(obj)}
    if isinstance(obj, (list, tuple)):
        items = [_without_volatile(v, seen) for v in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return type(obj)(items) if isinstance(obj, list) or type(obj) is tuple else obj
    if isinstance(obj, dict):
        items = {k: _without_volatile(v, seen) for k, v in obj.items()}
        return obj if all(items[k] is v for k, v in obj.items()) else items
    if isinstance(obj, types.MethodType):  # FunctionTransformer(vectorizer.transform)
        owner = _without_volatile(obj.__self__, seen)
        return obj if owner is obj.__self__ else types.MethodType(obj.__func__, owner)
    if isinstance(obj, BaseEstimator):
        state = vars(obj)
        kept = {k: _without_volatile(v, seen) for k, v in state.items() if k not in _VOLATILE}
        if len(kept) == len(state) and all(kept[k] is v for k, v in state.items()):
            return obj
        stand_in = object.__new__(type(obj))
        stand_in.__dict__.update(kept)
        return stand_in
    return obj


class _Writer:
    """A file-like `write` for a pickler (into a hash)."""

    def __init__(self, write):
        self.write = write


class _CodePickler(pickle.Pickler):
    """A pickler into a hash that writes each function as its code (no import path needed)."""

    def __init__(self, sink, seen=frozenset()):
        super().__init__(sink, protocol=4)
        self._seen = seen  # what is being hashed further out (see `_value_bytes`)

    def reducer_override(self, obj):
        if isinstance(obj, types.FunctionType):
            return (str, (_code_bytes(obj, self._seen).hex(),))
        return NotImplemented


def _code_bytes(fn, _seen=frozenset()) -> bytes:
    """A function's code, constants and defaults, the same in every process (a nested code
    object's repr holds its address; a set's order varies with the hash seed), and the values
    a closure captured (`scaled(2)` and `scaled(100)` share their code) and its keyword-only
    defaults, where it has them."""
    out = _code_object_bytes(fn.__code__) + _stable_repr(fn.__defaults__).encode()
    inner = _seen | {id(fn)}
    if fn.__kwdefaults__:
        out += b"\x01" + b"".join(_value_bytes(k) + _value_bytes(v, inner)
                                   for k, v in sorted(fn.__kwdefaults__.items()))
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # a cell not filled yet
            out += b"\x02"
            continue
        out += b"\x03" + _value_bytes(value, inner)
    return out


def _value_bytes(value, _seen=frozenset()) -> bytes:
    """A captured value by content: a function as its code, anything else by joblib's hash
    (without `_VOLATILE` attributes), or, where pickle cannot write it, the code pickler's;
    a value neither can write (a module, a lock) by its type only, as before captured values
    counted. `_seen`: the ids of the functions and values being hashed (a value that holds
    the encoder that holds it ends there)."""
    if id(value) in _seen:
        return b"<cycle>"
    if isinstance(value, types.FunctionType):
        return _code_bytes(value, _seen)
    try:
        return _digest(_without_volatile(value), _seen | {id(value)}).encode()
    except (pickle.PicklingError, AttributeError, TypeError, RecursionError):
        return repr(type(value)).encode()


def _code_object_bytes(code) -> bytes:
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            parts.append(_code_object_bytes(const))
        else:
            parts.append(_stable_repr(const).encode())
    return b"\x00".join(parts)


def _stable_repr(value) -> str:
    if isinstance(value, (set, frozenset)):
        return "{" + ",".join(sorted(_stable_repr(v) for v in value)) + "}"
    if isinstance(value, tuple):
        return "(" + ",".join(_stable_repr(v) for v in value) + ")"
    return repr(value)


def _function_code(obj) -> bytes:
    """The code, constants and defaults of every plain function among an estimator's
    (nested) parameters, as bytes."""
    if not hasattr(obj, "get_params"):
        return b""
    parts = []
    for _key, value in sorted(obj.get_params(deep=True).items()):
        values = value.values() if isinstance(value, dict) else [value]
        parts += [_code_bytes(fn) for fn in values if isinstance(fn, types.FunctionType)]
    return b"".join(parts)


def _state_signature(obj, _seen=frozenset()):
    """A cheap summary of an estimator's state that changes whenever `fit`, `partial_fit` or
    `set_params` changes the state, at any depth (a step of a pipeline in a union in a
    pipeline): plain values by value, other objects by identity, and estimators (and small
    containers) recursively through their attributes."""
    if isinstance(obj, _PLAIN):
        return obj
    if id(obj) in _seen:  # a cycle
        return ("id", id(obj))
    if isinstance(obj, np.ndarray):
        return ("array", id(obj), obj.shape, obj.dtype.str)
    seen = _seen | {id(obj)}
    if isinstance(obj, (list, tuple)):
        if len(obj) > 64:  # e.g. every text seen: its identity and length stand for it
            return ("seq", id(obj), len(obj))
        return ("seq", id(obj), tuple(_state_signature(v, seen) for v in obj))
    if isinstance(obj, dict):
        if len(obj) > 64:
            return ("map", id(obj), len(obj))
        return ("map", id(obj), tuple((k, _state_signature(v, seen))
                                      for k, v in obj.items() if isinstance(k, str)))
    if isinstance(obj, BaseEstimator):
        return ("est", id(obj), tuple((k, _state_signature(v, seen))
                                      for k, v in sorted(vars(obj).items())))
    return ("id", id(obj))


def _hosted(encoder) -> bool:
    """Whether `encoder` is itself a hosted-API encoder (the one kind whose failed
    `transform` hands back the rows it did get)."""
    from embetter.external._core import HostedEncoder

    return isinstance(encoder, HostedEncoder)


def _store(cache, keys, rows) -> None:
    """Write rows under their keys in one transaction, then cull once (not once per row)."""
    with cache.transact():
        for key, row in zip(keys, rows):
            cache.set(key, row)
    cache.cull()


def _bulk_get(cache, keys: list[str], chunk: int = 500) -> dict[str, bytes]:
    """Fetch many cached rows in a few SQL queries instead of one `get` per key.

    diskcache has no multi-get; its per-key `get` costs ~50 us, which would dominate a
    warm-cache pass. Rows stored inline as raw bytes are read in bulk from its table; any
    other storage mode (or an unexpected schema) goes through the public `get`.
    """
    import os
    import sqlite3
    from contextlib import closing

    from diskcache.core import DBNAME, MODE_RAW

    unique = list(dict.fromkeys(keys))
    found: dict[str, bytes] = {}
    try:
        # a read-only connection of our own to the cache's database (a second reader is what
        # SQLite's write-ahead log is for); diskcache's own connection stays its own
        # (quoted: a folder named with ?, # or % is a path, not a query or an escape)
        from urllib.parse import quote

        uri = "file:" + quote(os.path.join(cache.directory, DBNAME)) + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=60)) as db:
            for start in range(0, len(unique), chunk):
                part = unique[start : start + chunk]
                marks = ",".join("?" * len(part))
                rows = db.execute(
                    f"SELECT key, mode, value FROM Cache WHERE raw = 1 AND key IN ({marks})",
                    part,
                ).fetchall()
                for key, mode, value in rows:
                    found[key] = bytes(value) if mode == MODE_RAW and value is not None else None
    except sqlite3.Error:
        found = {k: None for k in unique}  # schema not as expected: fall back to get()
    for key in [k for k, v in found.items() if v is None]:
        value = cache.get(key)
        if value is None:
            del found[key]
        else:
            found[key] = value
    return found


def cached(name, encoder) -> CachedEncoder:
    """Wrap `encoder` with a disk cache stored in the folder `name`; see `CachedEncoder`.

    Arguments:
        name: the cache's folder (a str or path; created when missing).
        encoder: the encoder (or pipeline) whose outputs are cached, keyed by text.
    """
    return CachedEncoder(encoder=encoder, path=name)


# public as embetter.utils.CachedEncoder: pickles and skops files name it there
CachedEncoder.__module__ = "embetter.utils"
