"""How a hosted encoder judges a failed request: what the server said, whether and when to
try again, and the keys no message may show. Each provider overrides how it reads an error
(`_error_status`, `_error_message`, `_error_headers`); the core (`_core.HostedEncoder`) sends
every request through `_with_retries`."""

from __future__ import annotations

import logging
import os
import time

from embetter.external._calls import (
    MAX_RETRY_AFTER,
    Stopped,
    retry_after,
    retry_delay,
    retryable_status,
    reveal,
    server_says_retry,
)

log = logging.getLogger("embetter.external")


class RetryPolicy:
    """The retry and error half of `HostedEncoder`: it reads the estimator's `max_retries`,
    `api_key`, `key_env` and `client_env`."""

    def _with_retries(self, call, where: str, stop=None):
        """Every retry of a request (the clients retry nothing themselves): rate limits, server
        errors, timeouts and lost connections (see `_retryable`), after the wait the server
        asks for or a backoff; none where the server says `x-should-retry: false` or asks
        for a wait over `MAX_RETRY_AFTER`; none once `stop` is set (another batch failed)."""
        retries = int(self.max_retries)
        for attempt in range(retries + 1):
            try:
                return call()
            except Exception as e:
                headers = self._error_headers(e)
                asked = retry_after(headers)
                if attempt == retries or not self._worth_retrying(e, headers, asked):
                    raise
                delay = retry_delay(attempt, asked)
                status, what = self._error_status(e)
                log.info("%s: %s got %s; retry %d of %d in %.2f s", type(self).__name__, where,
                         f"status {status}" if status is not None else what,
                         attempt + 1, retries, delay)
                if stop is None:
                    time.sleep(delay)
                elif stop.wait(delay):
                    raise Stopped from e

    def _error_status(self, error) -> tuple[int | None, str | None]:
        """`(HTTP status, or None; a short description when there is no status)` of a failed
        request, or `(None, None)` for an exception that is not the API's (a bug: re-raised)."""
        return None, None

    def _without_keys(self, text: str) -> str:
        """`text` with every key this encoder could send (the argument, the environment
        variables it reads) replaced by `***`."""
        keys = [reveal(self.api_key)]
        keys += [os.environ.get(name) for name in (self.key_env, *self.client_env)
                 if name and name.endswith(("KEY", "TOKEN"))]
        # (8 characters at least: a placeholder such as "EMPTY" or "ollama" is no secret,
        # and blanking it would blank the words it is part of)
        for key in sorted({k for k in keys if isinstance(k, str) and len(k) >= 8},
                          key=len, reverse=True):
            text = text.replace(key, "***")
        return text

    def _error_message(self, error) -> str:
        """What the server said, for the error message."""
        return str(error)

    def _error_headers(self, error):
        """The headers of the reply a failed request got (None without one)."""
        return None

    def _worth_retrying(self, error, headers, asked) -> bool:
        """As openai's client decides: not when the server asks for a wait longer than
        `MAX_RETRY_AFTER`; as its `x-should-retry` header says, when it has one; else
        `_retryable`."""
        if asked is not None and asked > MAX_RETRY_AFTER:
            return False
        says = server_says_retry(headers)
        return self._retryable(error) if says is None else says

    def _retryable(self, error) -> bool:
        """Whether a request that failed so is worth another try: a status of
        `RETRY_STATUSES` or 5xx, a timeout, a lost connection."""
        status, what = self._error_status(error)
        return retryable_status(status) or what is not None
