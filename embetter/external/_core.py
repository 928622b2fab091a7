"""The shared core of the hosted-API encoders: batching, ordering, concurrency, retries, errors.

Each provider file only says how to build its client, send one batch and read one error; this
module does the rest, the same way for every provider:

- texts are split into batches by count (`batch_size`) and by an estimated token budget
  (`max_tokens_per_request`), in input order;
- at most `max_concurrency` batches are in flight; each reply lands in its batch's rows, so
  the output is in input order whatever order the replies come back in;
- every retry is made by `_retries.RetryPolicy` (the clients are built with theirs off),
  after the server's `Retry-After` or a backoff, and none once a batch has failed;
- a reply with the wrong number of rows or a different width is an error, and so is any
  batch that still fails after the retries: nothing partial or misordered is ever returned;
- the client is built lazily and cached on the instance, never pickled; an `api_key` given as
  an argument is masked in every repr and dropped from pickles.
"""

from __future__ import annotations

import copy
import logging
import numbers
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import numpy as np

from embetter._validation import as_texts, check_int
from embetter.base import EmbetterBase, text_input_tags
from embetter.external._calls import (
    MAX_RETRY_AFTER,
    HostedAPIError,
    MalformedReply,
    Secret,
    Stopped,
    check_key,
    checked_reply,
    make_batches,
    retry_after,
    short_message,
)
from embetter.external._retries import RetryPolicy

log = logging.getLogger("embetter.external")

#: the longest `timeout` taken, in seconds (about 11.6 days; far longer overflows a socket's)
MAX_TIMEOUT = 1e6


def _positive_int(value, name, upper=None, *, allow_none=False):
    value = check_int(value, name, allow_none=allow_none)
    if upper is not None and value is not None and value > upper:
        raise ValueError(f"{name} must be a positive int and at most {upper}, got {value!r}")


def _env_digest(names) -> str:
    """A digest of the environment variables `names` as they are now."""
    import hashlib

    values = "\0".join(f"{name}={os.environ.get(name)}" for name in names)
    return hashlib.sha256(values.encode("utf-8", "surrogatepass")).hexdigest()


class HostedEncoder(RetryPolicy, EmbetterBase):
    """Base class of the hosted-API encoders; subclasses set the class attributes below and
    implement `_make_client`, `_embed_batch` and `_error_status`."""

    #: name of the extra that installs the client, the provider's key variable
    extra = ""
    key_env = ""
    #: the environment variables the client is built from (key, address...): a change to
    #: one builds a new client, as a change to a parameter does
    client_env: tuple[str, ...] = ()
    #: the provider's hard cap on texts per request (None: no cap)
    max_batch_size: int | None = None
    #: whether `base_url` needs its scheme (Ollama's client adds http:// itself)
    url_needs_scheme = True
    #: the environment variables the client reads its address from (checked as `base_url`
    #: where it needs a scheme; part of a disk cache's key)
    url_env: tuple = ()
    #: output widths of well-known models, so empty input needs no request
    known_dims: dict[str, int] = {}

    # -- parameters --------------------------------------------------------------------------
    def _check_params(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty str, got {self.model!r}")
        _positive_int(self.batch_size, "batch_size", self.max_batch_size)
        _positive_int(self.max_tokens_per_request, "max_tokens_per_request", allow_none=True)
        _positive_int(self.max_concurrency, "max_concurrency")
        _positive_int(self.dimensions, "dimensions", allow_none=True)
        check_int(self.max_retries, "max_retries", 0)
        t = self.timeout
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < t <= MAX_TIMEOUT:
            raise ValueError("timeout must be a finite positive number of seconds, at most "
                             f"{MAX_TIMEOUT:g} (the sockets' limit is near), got {t!r}")
        if self.api_key is not None and not isinstance(self.api_key, (str, Secret)):
            raise TypeError(f"api_key must be None or a str, got {type(self.api_key).__name__}")
        for name in ("base_url", "azure_endpoint"):
            value = self.__dict__.get(name)  # a str, or a URL object the client takes
            if value is not None and (isinstance(value, (bool, numbers.Number, bytes))
                                      or not str(value).strip()):
                raise TypeError(f"{name} must be None or a non-empty str (an address such as "
                                f"'http://127.0.0.1:8000/v1'), got {value!r}")
            if value is not None and self.url_needs_scheme and not _has_scheme(value):
                raise ValueError(f"{name} must start with http:// or https://, got "
                                 f"{_shown(value)!r}")
        given = any(self.__dict__.get(name) is not None for name in ("base_url", "azure_endpoint"))
        for env in self.url_env if self.url_needs_scheme and not given else ():
            value = os.environ.get(env)
            if value and not _has_scheme(value):
                raise ValueError(f"the environment variable {env} must start with http:// or "
                                 f"https://, got {_shown(value)!r}")

    # -- the client: built lazily, cached on the instance, never pickled ---------------------
    def _client_params(self) -> tuple:
        """Everything the client is built from; a change (set_params) builds a new one
        (not `max_retries`: the clients retry nothing, the core does)."""
        return (self.base_url, self.api_key, self.timeout)

    def _client_env(self) -> str:
        """A digest of the `client_env` variables as they are now (a digest: the key read
        from the environment is not kept in one more place)."""
        return _env_digest(self.client_env)

    #: settings that change how texts are sent, never the vectors: a disk cache's key leaves
    #: them out (raising `timeout` after a timeout sends no cached text again)
    _cache_ignores = ("batch_size", "max_tokens_per_request", "max_retries",
                      "max_concurrency", "timeout")

    def _cache_context(self) -> str:
        """For a disk cache's key: the address read from the environment (`url_env`:
        OPENAI_BASE_URL, OLLAMA_HOST...): another server's vectors are another cache's;
        another key's, organisation's or project's are the same."""
        return _env_digest(self.url_env)

    def _client(self):
        # a forked child (gunicorn --preload, multiprocessing) builds its own: sharing the
        # parent's open connection mixed replies between processes; a key or address fixed
        # in the environment (after a 401, in a notebook) takes effect at the next call
        params = (os.getpid(), self._client_params(), self._client_env())
        cached = self.__dict__.get("_client_cache")
        if cached is not None and cached[0] == params:
            return cached[1]
        client = self._make_client()
        self.__dict__["_client_cache"] = (params, client)
        return client

    # -- the key: masked in every repr, never pickled ------------------------------------------
    @property
    def api_key(self):
        """The API key given as an argument (None: the provider's environment variable)."""
        return self.__dict__.get("_api_key")

    @api_key.setter
    def api_key(self, value):
        # a str that shows as '***' in any repr: the estimator's own, a pipeline's, a
        # CachedEncoder's, a parameter table's; the clients still read the real value
        if isinstance(value, str) and not isinstance(value, Secret):
            value = Secret(value)
        self.__dict__["_api_key"] = value

    def __getstate__(self):
        state = super().__getstate__().copy()
        state.pop("_client_cache", None)
        state.pop("_dim_cache", None)
        # A key given as an argument never travels: the unpickled encoder reads the provider's
        # environment variable where it is loaded (the state is the same with or without a
        # key, so a CachedEncoder's key for it is too)
        state.pop("_api_key", None)
        return state

    def _optional_key(self):
        """The key where one is given (the argument, else `key_env`), checked; None where
        none is (a server that checks none, or a client with another way in)."""
        if self.api_key or os.environ.get(self.key_env):
            return self._key_or_env(self.key_env)
        return None

    def _key_or_env(self, *env_names):
        """The key: the argument, else the first of `env_names` set; a clear error without."""
        if self.api_key:
            return check_key(self.api_key, "api_key")
        for name in env_names:
            if os.environ.get(name):
                return check_key(os.environ[name], f"the environment variable {name}")
        where = " or ".join(env_names)
        raise ValueError(
            f"{type(self).__name__} needs an API key: pass api_key=... or set {where} (any "
            "non-empty string for a local server that checks none). A key given as api_key= "
            "is never pickled: an encoder that was (in a joblib worker with n_jobs > 1, on "
            f"Dask, loaded from a file) reads {where} where it runs"
        )

    def _twin(self):
        """A new encoder with this one's key and nothing else: in-memory copies keep the key
        (only pickles drop it), never the client."""
        twin = type(self).__new__(type(self))
        twin.__dict__["_api_key"] = self.__dict__.get("_api_key")
        return twin

    def __copy__(self):  # copy.copy would go through the pickle protocol and lose the key
        twin = self._twin()
        twin.__dict__.update(self.__getstate__())
        return twin

    def __deepcopy__(self, memo):
        twin = memo[id(self)] = self._twin()
        twin.__dict__.update(copy.deepcopy(self.__getstate__(), memo))
        return twin

    # -- output width ------------------------------------------------------------------------
    def _dim_key(self):
        # (the environment too: an address read from OLLAMA_HOST, OPENAI_BASE_URL...)
        return (self.model, self.dimensions, self.base_url, self._client_env())

    def _known_dim(self) -> int | None:
        if self.dimensions is not None:
            return int(self.dimensions)
        cached = self.__dict__.get("_dim_cache")
        if cached is not None and cached[0] == self._dim_key():
            return cached[1]
        return self.known_dims.get(self.model)

    def _output_dim(self) -> int:
        """The width of the output. Without `dimensions`, a known model or an earlier reply,
        one short probe text is embedded once to learn it."""
        dim = self._known_dim()
        if dim is None:
            log.debug("%s: one probe request to learn the width of %r",
                      type(self).__name__, self.model)
            dim = self._encode(["dimension probe"]).shape[1]
        return dim

    def get_feature_names_out(self, input_features=None):
        """Output column names: `<classname>0`, `<classname>1`, ..."""
        self._check_params()
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self._output_dim())], dtype=object)

    # -- transform ---------------------------------------------------------------------------
    def transform(self, X):
        """Embed texts into a float32 array of shape `(n_texts, dim)`, in input order."""
        self._check_params()
        texts = as_texts(X)
        if not texts:
            return np.zeros((0, self._output_dim()), dtype=np.float32)
        self._check_texts(texts)
        return self._encode(texts)

    def _check_texts(self, texts: list[str]) -> None:
        """What the provider refuses in a text, checked before any request (default: none)."""

    def _encode(self, texts: list[str]) -> np.ndarray:
        batches = make_batches(texts, int(self.batch_size), self.max_tokens_per_request)
        client = self._client()
        n = len(batches)
        out: list[np.ndarray | None] = [None] * n
        stop = threading.Event()  # set on the first failure: no batch starts or retries after
        errors: list[BaseException] = []  # the real failures, the first first

        def run(k: int) -> None:
            if stop.is_set():
                raise Stopped
            try:
                out[k] = self._checked_batch(client, texts, batches[k], k, n, stop)
            except BaseException as e:
                if not isinstance(e, Stopped):
                    errors.append(e)  # before stop is set: a batch stopped by it ends later
                stop.set()  # at once, from this worker: it starts no other batch, nor do the rest
                raise

        workers = min(int(self.max_concurrency), n)
        try:
            if workers == 1:
                for k in range(n):
                    run(k)
            else:
                pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embetter-api")
                try:
                    futures = [pool.submit(run, k) for k in range(n)]
                    wait(futures, return_when=FIRST_EXCEPTION)
                    if errors:
                        raise errors[0]
                    if any(part is None for part in out):  # (only a Stopped batch is left)
                        raise HostedAPIError(f"{type(self).__name__}: a batch was stopped "
                                             "before it was sent; nothing is returned")
                finally:
                    # at the first failure (or an interrupt) queued batches are cancelled and
                    # running ones stop retrying; a request already sent ends on its own
                    stop.set()
                    pool.shutdown(wait=False, cancel_futures=True)
        except HostedAPIError as e:
            e.finished = _finished(out, batches)
            raise
        widths = sorted({part.shape[1] for part in out})
        if len(widths) > 1:
            k = next(k for k, part in enumerate(out) if part.shape[1] != out[0].shape[1])
            raise HostedAPIError(
                f"{type(self).__name__}: the server returned embeddings of different widths "
                f"{widths} (batch 1 vs batch {k + 1}); nothing is returned",
                batch=k, texts=(batches[k].start, batches[k].stop),
            )
        emb = np.concatenate(out, axis=0)
        self.__dict__["_dim_cache"] = (self._dim_key(), emb.shape[1])
        return emb

    def _checked_batch(self, client, texts, rows: range, k: int, n: int,
                       stop=None) -> np.ndarray:
        where = f"batch {k + 1} of {n} (texts {rows.start} to {rows.stop - 1})"
        chunk = texts[rows.start:rows.stop]
        span = (rows.start, rows.stop)
        # A failure is raised after the handler, not inside it: a server may echo the
        # request's headers (the key among them), so the key is blanked out of the message
        # and the client's exception is left behind, not even as the context (which errors
        # pickled with tblib, as Dask does, carry along).
        failed = None
        try:
            emb = self._with_retries(lambda: self._embed_batch(client, chunk), where, stop)
        except HostedAPIError:
            raise
        except MalformedReply as e:
            raise HostedAPIError(
                f"{type(self).__name__}: {where}: {e}; nothing is returned rather than a "
                "partial or misaligned array", batch=k, texts=span,
            ) from None
        except Exception as e:
            status, what = self._error_status(e)
            if status is None and what is None:
                if not isinstance(e, (ValueError, TypeError, AttributeError, KeyError)):
                    raise
                # the client could not read the reply (not JSON, fields missing: a pydantic
                # ValidationError is a ValueError): say so, with the batch
                failed = HostedAPIError(
                    f"{type(self).__name__}: {where}: the server's reply could not be read "
                    f"({type(e).__name__}: {short_message(self._without_keys(str(e)))}); "
                    "nothing is returned rather than a partial or misaligned array",
                    batch=k, texts=span)
            else:
                label = f"status {status}" if status is not None else what
                asked = retry_after(self._error_headers(e))
                if asked is not None and asked > MAX_RETRY_AFTER:
                    label += (f"; the server asked for a wait of {asked:.0f} s, over the "
                              f"{MAX_RETRY_AFTER:.0f} s waited, so it was not retried")
                failed = HostedAPIError(
                    f"{type(self).__name__}: {where} failed with {label} "
                    f"(max_retries={self.max_retries}): "
                    f"{short_message(self._without_keys(self._error_message(e)))}",
                    batch=k, texts=span, status=status)
        if failed is not None:
            raise failed
        return checked_reply(emb, len(chunk), self.dimensions,
                             f"{type(self).__name__}: {where}", k, rows)

    # -- what a provider file implements -----------------------------------------------------
    def _make_client(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _embed_batch(self, client, texts: list[str]):  # pragma: no cover - abstract
        """Embed one batch; return its rows in the order of `texts`."""
        raise NotImplementedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        text_input_tags(tags)
        tags.non_deterministic = False
        return tags


def _has_scheme(address) -> bool:
    return str(address).lower().startswith(("http://", "https://"))


def _shown(address) -> str:
    """An address as an error may show it: without a user and password before `@`, nor a
    query (`?api-key=...`)."""
    authority, slash, rest = str(address).partition("/")
    if "@" in authority:  # (the last one: a password may hold '@' or '?')
        authority = "***@" + authority.rsplit("@", 1)[1]
    else:
        authority = authority.split("?", 1)[0]
    return authority + slash + rest.split("?", 1)[0]


def _finished(out, batches):
    """`(positions, rows)` of the batches that came back before a failure (None: none did,
    or their widths differ)."""
    done = [(batches[k], part) for k, part in enumerate(out) if part is not None]
    if not done or len({part.shape[1] for _, part in done}) > 1:
        return None
    positions = np.concatenate([np.arange(r.start, r.stop) for r, _ in done])
    return positions, np.concatenate([part for _, part in done])
