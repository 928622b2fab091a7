"""What one hosted-API call needs besides the encoder: the key's mask (`Secret`), the errors,
batches by count and estimated tokens, and the retries' timing."""

from __future__ import annotations

import math
import random

#: Our own backoff, for clients without retry machinery (Ollama) and for what a client does not
#: retry (timeouts in Cohere's client): the same curve as openai's (0.5 s doubling to 8 s,
#: minus up to 25% jitter).
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0

#: Statuses worth retrying: request timeout, lock conflict, rate limit, server errors.
RETRY_STATUSES = frozenset({408, 409, 429})


class Secret(str):
    """An API key: `'***'` in a repr, `***` as text (`str()`, f-strings, a logger's `%s`, a
    parameter table); the clients get the real value from `reveal`."""

    __slots__ = ()

    def __repr__(self):
        return "'***'"

    def __str__(self):
        return "***"

    def __format__(self, spec):
        return format("***", spec)


def reveal(key):
    """The real text of a key (a plain str for the provider's client), or None."""
    return None if key is None else str.__str__(key) if isinstance(key, Secret) else key


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
    """A cheap upper estimate of a text's token count: UTF-8 bytes / 3, rounded up.

    BPE tokenisers average about 4 bytes per token on English and about 3 on CJK scripts, so
    this overestimates, which keeps a batch under a provider's per-request token limit
    without shipping the provider's tokenizer.
    """
    return max(1, math.ceil(len(text.encode("utf-8")) / 3))


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


class Stopped(Exception):
    """A batch given up because another one failed (or the call was interrupted)."""


def retryable_status(status: int | None) -> bool:
    return status is not None and (status in RETRY_STATUSES or status >= 500)


def short_message(error, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
