"""Ollama's native embed API (`/api/embed`), on the official `ollama` client."""

from __future__ import annotations

import threading

from embetter.external._calls import require, reveal
from embetter.external._core import HostedEncoder

#: the headers of the last reply each thread's request got: the client's errors carry none,
#: and a rate limit's `Retry-After` is in them
_REPLY = threading.local()


def _keep_headers(response) -> None:
    _REPLY.headers = response.headers

OLLAMA_DIMS = {
    "nomic-embed-text": 768,
    "mxbai-embed-large": 1024,
    "all-minilm": 384,
    "bge-m3": 1024,
}


class OllamaEncoder(HostedEncoder):
    """Embed texts with a model served by Ollama (`/api/embed`).

    Runs on the official `ollama` client (`pip install 'embetter[ollama]'`). Retries (the
    server's `Retry-After` honoured), batching, ordering, the concurrency bound, errors and
    key handling are those of `OpenAIEncoder`. (Ollama's OpenAI-compatible `/v1` endpoint
    works with `OpenAIEncoder(base_url=...)` too.)

    Arguments:
        model: the embedding model, as Ollama names it (`ollama pull nomic-embed-text`).
        base_url: the server; `None` reads `OLLAMA_HOST` (default `http://localhost:11434`).
        api_key: a bearer token for a server behind authentication; `None` reads
            `OLLAMA_API_KEY`, and none is sent when neither is set.
        dimensions: shorten the output to this many dimensions (models that support it).
        batch_size: at most this many texts per request.
        max_tokens_per_request: at most this many estimated tokens per request; `None` for no
            budget.
        max_retries: retries per request on 408, 409, 429, 5xx, timeouts and connection
            errors.
        max_concurrency: how many requests may be in flight at once.
        timeout: seconds to wait for the server to connect, and then for each read of
            its reply (the HTTP client's timeout: a reply that keeps trickling in may take
            longer in all).

    Usage:

    ```python
    from embetter.external import OllamaEncoder

    enc = OllamaEncoder("nomic-embed-text", base_url="http://localhost:11434")
    assert enc.transform([]).shape == (0, 768)
    ```
    """

    known_dims = OLLAMA_DIMS
    key_env = "OLLAMA_API_KEY"
    url_needs_scheme = False
    url_env = ("OLLAMA_HOST",)
    client_env = ("OLLAMA_API_KEY", "OLLAMA_HOST")

    def __init__(
        self,
        model="nomic-embed-text",
        base_url=None,
        api_key=None,
        dimensions=None,
        batch_size=32,
        max_tokens_per_request=None,
        max_retries=5,
        max_concurrency=4,
        timeout=60.0,
    ):
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.max_tokens_per_request = max_tokens_per_request
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.timeout = timeout

    def _make_client(self):
        ollama = require("ollama", "ollama", type(self).__name__)
        key = self._optional_key()  # a local server checks none
        headers = {"authorization": f"Bearer {reveal(key)}"} if key else None
        return ollama.Client(host=self.base_url, timeout=float(self.timeout), headers=headers,
                             event_hooks={"response": [_keep_headers]})

    def _embed_batch(self, client, texts):
        extra = {"dimensions": int(self.dimensions)} if self.dimensions is not None else {}
        _REPLY.headers = None  # a timeout gets no reply: no stale headers either
        return client.embed(model=self.model, input=texts, **extra).embeddings

    def _error_status(self, error):
        import httpx
        from ollama import ResponseError

        if isinstance(error, ResponseError):
            return error.status_code, None
        if isinstance(error, httpx.TimeoutException):
            return None, "a timeout"
        if isinstance(error, (ConnectionError, httpx.TransportError)):
            return None, "a connection error"
        return None, None

    def _error_message(self, error):
        return str(getattr(error, "error", None) or error)

    def _error_headers(self, error):
        from ollama import ResponseError

        return getattr(_REPLY, "headers", None) if isinstance(error, ResponseError) else None
