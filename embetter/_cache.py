"""The disk cache for embeddings: `CachedEncoder` and `cached` (public in `embetter.utils`)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading

import diskcache
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from embetter._cache_key import _content_hash, _model_folders, _state_signature
from embetter._cache_store import (
    Reader,
    bulk_get,
    database_file,
    open_cache,
    open_reader,
    store_rows,
)
from embetter._validation import as_texts
from embetter.base import ReadsTextsOnce


class CachedEncoder(ReadsTextsOnce, TransformerMixin, BaseEstimator):
    """Wrap an encoder with a disk cache of its embeddings (backed by `diskcache`).

    Every text is keyed by the encoder's identity (a hash of its parameters and fitted state)
    plus the text itself, so two differently configured encoders never share entries. The
    identity is hashed once per state of the encoder: it is hashed again only when a parameter
    or fitted attribute (of the encoder or of an estimator inside it) is replaced or a counter
    such as `n_iter_` moves, as `fit`, `partial_fit` and `set_params` do, or when a torch
    model given as a parameter (a caller's, which may train in place) moves its weights (a
    sample of them is compared). Weights of a model loaded or trained inside the encoder
    and edited by hand are not noticed: call `fit` again. A batch
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
        """Fit the wrapped encoder (a no-op for the stateless pretrained encoders).

        The encoder given is fitted itself, as a `Pipeline` fits its steps (not a copy): the
        wrapper is transparent, and `cache.encoder` is the fitted model. Two caches given one
        encoder object share it; give each its own (`sklearn.base.clone`) to fit them apart.
        """
        self._check_encoder()
        self.encoder.fit(X, y)
        return self

    def _cache(self):
        if not isinstance(self.path, (str, os.PathLike)):
            raise TypeError(
                f"path must be the cache's folder (a str or Path), got {type(self.path).__name__}")
        # expanded as diskcache expands it: compared with its `directory` on every call
        folder = os.path.expandvars(os.path.expanduser(os.fspath(self.path)))
        if os.path.isfile(folder):
            raise ValueError(f"path must be a folder for the cache, got the file {self.path!r}")
        cache = self.__dict__.get("_cache_handle")
        # (a folder deleted, and maybe made again, meanwhile: the open handle would go on in
        # the deleted database, where no other process finds what it stores)
        if (cache is None or cache.directory != folder
                or self.__dict__.get("_cache_file") != database_file(folder)):
            if cache is not None:  # set_params(path=...): the old folder's database closes
                cache.close()
            cache = open_cache(folder)
            self.__dict__["_cache_handle"] = cache
            self.__dict__["_cache_file"] = database_file(folder)
        return cache

    def _identity(self) -> str:
        """The encoder's fingerprint, re-hashed only when its state signature moved."""
        signature, held = _state_signature(self.encoder)
        memo = self.__dict__.get("_identity_memo")
        if memo is None or memo[0] != signature:
            # (the memo holds the objects the signature names by id: none is reused)
            memo = (signature, _content_hash(self.encoder), held)
            self.__dict__["_identity_memo"] = memo
        return memo[1] + _model_folders(self.encoder)

    def transform(self, X):
        """Embed texts, reading known ones from disk and encoding only the rest."""
        self._check_encoder()
        # (checked here, where the positions are the caller's: the encoder sees the texts
        # not cached only; one that reads any str, a lone surrogate too, says so)
        texts = as_texts(X, utf8=not _reads_any_str(self.encoder))
        identity = self._identity()
        keys = [
            identity + hashlib.blake2b(t.encode("utf-8", "surrogatepass"),
                                       digest_size=16).hexdigest()
            for t in texts
        ]
        cache = self._cache()
        found = bulk_get(cache, keys, self._reader(cache))
        missing = {}  # key -> first index; a text repeated in X is encoded once
        for i, key in enumerate(keys):
            if key not in found:
                missing.setdefault(key, i)
        if missing:
            try:
                encoded = _storable_rows(self.encoder, self.encoder.transform(
                    [texts[i] for i in missing.values()]), len(missing))
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
            # a row with NaN or inf is served but not stored: a failure of the moment (an
            # overflow, a provider's bad row) is not kept for every later call
            finite = np.isfinite(encoded).all(axis=1)
            self._store(cache, [k for k, ok in zip(missing, finite) if ok],
                        [row for row, ok in zip(rows, finite) if ok])
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

        try:
            store_rows(cache, keys, rows)
        except (sqlite3.Error, OSError, diskcache.Timeout) as e:
            warnings.warn(f"the cache at {self.path!r} could not store {len(rows)} rows "
                          f"({type(e).__name__}: {e}); they are returned, not cached",
                          RuntimeWarning, stacklevel=3)

    def _reader(self, cache):
        """This thread's read-only connection to the cache's database (a second reader is
        what SQLite's write-ahead log is for; diskcache's own connection stays its own), kept
        between calls: opening one took 0.6 ms of a 0.9 ms cached call. A forked child,
        another folder or a database made again opens its own; a thread's closes when the
        thread ends. None where it cannot be opened (then every text is a miss)."""
        readers = self.__dict__.setdefault("_readers", threading.local())
        where = (os.getpid(), cache.directory, self.__dict__.get("_cache_file"))
        held = getattr(readers, "held", None)
        if held is None or held.where != where:
            if held is not None:
                held.close()
            db = open_reader(cache.directory)
            readers.held = None if db is None else Reader(db, where)  # (None: try again)
            return db
        return held.db

    def close(self):
        """Close the cache's database now (it opens again on the next `transform`)."""
        readers = self.__dict__.pop("_readers", None)
        held = getattr(readers, "held", None)
        if held is not None:
            held.close()  # (this thread's; other threads' are let go, see Reader.close)
        cache = self.__dict__.pop("_cache_handle", None)
        if cache is not None:
            cache.close()
        self.__dict__.pop("_cache_file", None)

    def get_feature_names_out(self, input_features=None):
        """The wrapped encoder's output names (for `set_output` and pipelines)."""
        return self.encoder.get_feature_names_out(input_features)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_cache_handle", None)
        state.pop("_readers", None)
        state.pop("_cache_file", None)
        state.pop("_identity_memo", None)  # object ids mean nothing in another process
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        inner = getattr(self.encoder, "__sklearn_tags__", None)
        if inner is not None:
            tags.requires_fit = inner().requires_fit
            tags.target_tags.required = inner().target_tags.required  # (an SbertTuner's y)
        return tags

    def __sklearn_is_fitted__(self):
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(self.encoder)
        except Exception:
            return False
        return True


def _reads_any_str(encoder) -> bool:
    """Whether `encoder` (a pipeline: its first step; a cache: the encoder it wraps) reads
    any str, one holding a lone surrogate too (`reads_any_str`: the TF-IDF encoder)."""
    from sklearn.pipeline import Pipeline

    while True:
        if isinstance(encoder, Pipeline):
            steps = [s for _, s in encoder.steps if s not in (None, "passthrough")]
            if not steps:
                return False
            encoder = steps[0]
        elif isinstance(encoder, CachedEncoder):
            encoder = encoder.encoder
        else:
            return bool(getattr(encoder, "reads_any_str", False))


def _hosted(encoder) -> bool:
    """Whether `encoder` is itself a hosted-API encoder (the one kind whose failed
    `transform` hands back the rows it did get)."""
    from embetter.external._core import HostedEncoder

    return isinstance(encoder, HostedEncoder)


def cached(name, encoder) -> CachedEncoder:
    """Wrap `encoder` with a disk cache stored in the folder `name`; see `CachedEncoder`.

    Arguments:
        name: the cache's folder (a str or path; created when missing).
        encoder: the encoder (or pipeline) whose outputs are cached, keyed by text.
    """
    return CachedEncoder(encoder=encoder, path=name)


# public as embetter.utils.CachedEncoder: pickles and skops files name it there
CachedEncoder.__module__ = "embetter.utils"


def _storable_rows(encoder, out, n: int) -> np.ndarray:
    """The wrapped encoder's output for `n` texts as float32 rows, checked before anything
    is stored: a row per text, each a flat vector (a misaligned row would be cached under
    another text's key)."""
    import scipy.sparse

    name = type(encoder).__name__
    if scipy.sparse.issparse(out):
        raise TypeError(
            f"the cached encoder ({name}) returned a sparse matrix; the cache stores dense "
            "rows: cache an encoder with dense output (add a step such as TruncatedSVD)")
    try:
        rows = np.asarray(out, dtype=np.float32)
    except (TypeError, ValueError) as e:  # (strings, ragged lists)
        raise TypeError(f"the cached encoder ({name}) returned values that are not numbers "
                        f"({type(e).__name__}: {e}); the cache stores float rows") from e
    if rows.ndim != 2 or rows.shape[0] != n:
        raise ValueError(
            f"the cached encoder ({name}) returned an array of shape {rows.shape} for {n} "
            f"texts; the cache needs one flat row per text (shape ({n}, dim))")
    return rows
