"""What one hosted-API call needs besides the encoder: the key's mask (`Secret`), the errors,
batches by count and estimated tokens, the retries' timing, and the check of a reply."""

from __future__ import annotations

import math
import random
import re
import time

import numpy as np

#: Every retry is ours (the providers' clients are built with their own retries off, so a
#: failed call stops them all), timed as openai's client times its own: the wait a server
#: asks for in `Retry-After` when that is at most two minutes (a longer one is not retried),
#: else 0.5 s doubling to 8 s, minus up to 25% jitter.
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 120.0

#: Statuses worth retrying: request timeout, lock conflict, rate limit, server errors.
RETRY_STATUSES = frozenset({408, 409, 429})


class Secret:
    """An API key: `'***'` in a repr, `***` as text (`str()`, f-strings, a logger's `%s`, a
    parameter table); the clients get the real value from `reveal`.

    Not a `str`, so nothing that writes a str's content (`json.dumps` of `get_params()`, a
    config logger) can write the key: those raise or show `***`. Equal to (and hashed as) its
    value, and copied as itself, so `clone` and `set_params` keep it; a pickle never holds
    it (it loads as `None`: the provider's environment variable, as a pickled encoder does).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = str(value)

    def __repr__(self):
        return "'***'"

    def __str__(self):
        return "***"

    def __format__(self, spec):
        return format("***", spec)

    def __eq__(self, other):
        if isinstance(other, Secret):
            return self._value == other._value
        if isinstance(other, str):
            return self._value == other
        return NotImplemented

    def __hash__(self):
        return hash(self._value)

    def __bool__(self):
        return bool(self._value)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return (_dropped_key, ())


def _dropped_key():
    """What a pickled `Secret` loads as: no key."""
    return None


def reveal(key):
    """The real text of a key (a plain str for the provider's client), or None."""
    return key._value if isinstance(key, Secret) else key


class MalformedReply(ValueError):
    """A reply that parsed but does not fit the request (raised by a provider's
    `_embed_batch`; the core adds which batch it was)."""


class HostedAPIError(RuntimeError):
    """A batch that the hosted API did not embed (after the retries, where the error was worth
    retrying), or a reply that does not fit the request.

    `batch` is the 0-based batch number, `texts` the `(start, stop)` range of input positions
    it held, and `status` the HTTP status (`None` for a timeout, a lost connection or a
    malformed reply).
    """

    def __init__(self, message, *, batch=None, texts=None, status=None):
        super().__init__(message)
        self.batch = batch
        self.texts = texts
        self.status = status
        #: the batches embedded before the failure, as `(positions, rows)` (input positions
        #: and their float32 rows; `None` when none were), so a caller can keep what was
        #: paid for: `cached` stores them and a re-run sends only the rest
        self.finished = None


def require(module: str, extra: str, owner: str):
    """Import a provider's client package, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{owner} needs the `{module}` package, which is not installed. "
            f"Install it with: pip install 'embetter[{extra}]'"
        ) from e


def estimate_tokens(text: str) -> int:
    """A cheap upper estimate of a text's token count: one token per 3 letters of each run of
    ASCII letters and per 3 digits of each run of digits, one per ASCII punctuation mark or
    control character, one per 2 characters of a run of two or more spaces or line breaks
    (a single one joins the next word's token), plus one per UTF-8 byte of the other
    characters.

    A BPE tokeniser's pre-tokeniser cuts text into words, numbers of at most 3 digits,
    punctuation and runs of white space, each at least one token, and English words average
    over 4 letters a token; on other scripts a byte-level tokeniser can fall back to one
    token per byte (Devanagari, emoji), never more. So this overestimates natural text,
    numbers, ids and CSV rows alike (characters / 3 took "1,2,3,..." at a third of its
    tokens), which keeps a batch under a provider's per-request token limit without
    shipping the provider's tokenizer.
    """
    runs = sum(-(-len(run) // 3) for run in _WORDS.findall(text))
    spaces = sum(-(-len(run) // 2) for run in _SPACES.findall(text))
    other = 0 if text.isascii() else (len(text.encode("utf-8", "surrogatepass"))
                                       - len(text.encode("ascii", "ignore")))
    return max(1, runs + spaces + len(_MARKS.findall(text)) + other)


#: what `estimate_tokens` counts: runs of ASCII letters or digits (a token per 3), runs of
#: white space (a token per 2), ASCII punctuation marks and control characters (one each)
_WORDS = re.compile(r"[A-Za-z]+|[0-9]+")
_SPACES = re.compile(r"\s{2,}")
_MARKS = re.compile(r"[!-/:-@\[-`{-~\x00-\x08\x0e-\x1f\x7f]")


def check_key(key: str, where: str) -> str:
    """`key` as given, if an HTTP header can carry it; else a ValueError naming `where` (the
    argument or variable it came from) without showing the key: a stray line break or space
    made the HTTP layer refuse it with the key in its message, retried as a network error."""
    text = reveal(key)
    if text != text.strip():
        raise ValueError(f"{where} starts or ends with a space or a line break (read from a "
                         "file?): strip it")
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"{where} holds a character an API key cannot have (a control "
                         "character or one outside ASCII, perhaps pasted with it)")
    return key


def make_batches(texts: list[str], batch_size: int, max_tokens: int | None) -> list[range]:
    """Consecutive ranges of positions: at most `batch_size` texts and (estimated)
    `max_tokens` tokens each. A single text over the budget gets a batch of its own (the
    provider truncates it or says it is too long)."""
    batches, start, tokens = [], 0, 0
    for i, text in enumerate(texts):
        cost = estimate_tokens(text) if max_tokens is not None else 0
        full = i - start >= batch_size or (max_tokens is not None and tokens + cost > max_tokens)
        if full and i > start:
            batches.append(range(start, i))
            start, tokens = i, 0
        tokens += cost
    if start < len(texts):
        batches.append(range(start, len(texts)))
    return batches


#: the jitter's own generator: retries never move the caller's `random` sequence
_JITTER = random.Random()


def backoff_delay(retry: int) -> float:
    """Seconds to wait before retry number `retry` (0-based): exponential, with jitter."""
    return min(INITIAL_RETRY_DELAY * 2.0**retry, MAX_RETRY_DELAY) * (1 - 0.25 * _JITTER.random())


def retry_after(headers) -> float | None:
    """The wait a reply asks for (`retry-after-ms`, or `retry-after` in seconds or as an HTTP
    date), in seconds; None when it names none, or an unreadable or negative one."""
    if not headers:
        return None
    try:  # (an unreadable retry-after-ms is skipped for retry-after, as openai's client does)
        wait = float(headers.get("retry-after-ms")) / 1000
        if math.isfinite(wait) and wait >= 0:
            return wait
    except (TypeError, ValueError, OverflowError):
        pass
    try:
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            wait = float(value)
        except ValueError:
            from email.utils import parsedate_to_datetime

            when = parsedate_to_datetime(value)
            wait = when.timestamp() - time.time()
        return wait if math.isfinite(wait) and wait >= 0 else None
    except (TypeError, ValueError, OverflowError):
        return None


def retry_delay(retry: int, asked: float | None) -> float:
    """The wait before retry number `retry`: what the server asked for, when it asked for a
    wait of at most `MAX_RETRY_AFTER` seconds (0 is no wait asked: the backoff, as openai's
    client does), else the backoff."""
    if asked is not None and 0 < asked <= MAX_RETRY_AFTER:
        return asked
    return backoff_delay(retry)


class Stopped(Exception):
    """A batch given up because another one failed (or the call was interrupted)."""


def retryable_status(status: int | None) -> bool:
    return status is not None and (status in RETRY_STATUSES or status >= 500)


def server_says_retry(headers) -> bool | None:
    """What a reply's `x-should-retry` header asks ("true"/"false", which openai's client
    obeys), or None when it has none."""
    flag = headers.get("x-should-retry") if headers else None
    return {"true": True, "false": False}.get(str(flag).lower()) if flag is not None else None


def short_message(error, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def checked_reply(emb, n_texts: int, expected: int | None, where: str, batch: int,
                  rows: range) -> np.ndarray:
    """One batch's reply as a float32 `(n_texts, width)` array, or a `HostedAPIError` that
    says what is wrong with it (`where`: the encoder and the batch, for the message)."""
    span = (rows.start, rows.stop)
    try:
        emb = np.asarray(emb, dtype=np.float32)
    except (TypeError, ValueError) as e:  # ragged rows, non-numbers
        raise HostedAPIError(f"{where}: the reply is not a table of numbers ({e})",
                             batch=batch, texts=span) from None
    if emb.ndim != 2 or emb.shape[0] != n_texts or emb.shape[1] == 0 or (
        expected is not None and emb.shape[1] != expected
    ):
        got = f"{emb.shape[0]} embeddings of width {emb.shape[1]}" if emb.ndim == 2 else (
            f"an array of shape {emb.shape}")
        want = f"{n_texts} of width {expected}" if expected else f"{n_texts}"
        raise HostedAPIError(
            f"{where}: the server returned {got}, expected {want}; nothing is returned "
            "rather than a partial or misaligned array", batch=batch, texts=span,
        )
    if not np.isfinite(emb).all():
        raise HostedAPIError(f"{where}: the server returned NaN or infinite values",
                             batch=batch, texts=span)
    return emb
