"""Cohere's embed API (v2), on the official `cohere` client."""

from __future__ import annotations

import os

from embetter.external._calls import MalformedReply, require, reveal, short_message
from embetter.external._core import HostedEncoder

COHERE_DIMS = {
    "embed-v4.0": 1536,
    "embed-english-v3.0": 1024,
    "embed-multilingual-v3.0": 1024,
    "embed-english-light-v3.0": 384,
    "embed-multilingual-light-v3.0": 384,
}


class CohereEncoder(HostedEncoder):
    """Embed texts with Cohere's embed API.

    Runs on the official `cohere` client (`pip install 'embetter[cohere]'`). Retries,
    batching, ordering, the concurrency bound, errors and key handling are those of
    `OpenAIEncoder`. The key comes from `api_key`, `CO_API_KEY` or `COHERE_API_KEY`.

    Arguments:
        model: the embedding model.
        input_type: what the texts are for: `"search_document"`, `"search_query"`,
            `"classification"` or `"clustering"` (v3 models and later need one).
        base_url: the API's address; `None` uses `CO_API_URL` or Cohere's own.
        api_key: the key; `None` reads `CO_API_KEY` (or `COHERE_API_KEY`).
        dimensions: the output width (`output_dimension`, embed-v4 and later).
        batch_size: at most this many texts per request (Cohere's cap is 96).
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
    from embetter.external import CohereEncoder

    enc = CohereEncoder("embed-english-v3.0", input_type="classification")
    assert enc.transform([]).shape == (0, 1024)
    ```
    """

    max_batch_size = 96
    known_dims = COHERE_DIMS
    key_env = "CO_API_KEY"
    url_env = ("CO_API_URL",)
    client_env = ("CO_API_KEY", "COHERE_API_KEY", "CO_API_URL")

    def __init__(
        self,
        model="embed-english-v3.0",
        input_type="search_document",
        base_url=None,
        api_key=None,
        dimensions=None,
        batch_size=96,
        max_tokens_per_request=None,
        max_retries=5,
        max_concurrency=4,
        timeout=60.0,
    ):
        self.model = model
        self.input_type = input_type
        self.base_url = base_url
        self.api_key = api_key
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.max_tokens_per_request = max_tokens_per_request
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.timeout = timeout

    def _check_params(self):
        super()._check_params()
        if not isinstance(self.input_type, str) or not self.input_type:
            raise ValueError(f"input_type must be a non-empty str, got {self.input_type!r}")

    def _make_client(self):
        cohere = require("cohere", "cohere", type(self).__name__)
        key = self._key_or_env("CO_API_KEY", "COHERE_API_KEY")
        return cohere.ClientV2(api_key=reveal(key),
                               base_url=self.base_url or os.environ.get("CO_API_URL"),
                               timeout=float(self.timeout), max_retries=0)  # the core retries

    def _embed_batch(self, client, texts):
        extra = {"output_dimension": int(self.dimensions)} if self.dimensions is not None else {}
        from cohere.core.api_error import ApiError

        try:
            reply = client.embed(model=self.model, input_type=self.input_type, texts=texts,
                                 embedding_types=["float"], **extra)
        except ApiError as e:  # (the SDK's error for a 2xx reply it cannot read: not JSON)
            if e.status_code is None or not 200 <= e.status_code < 300:
                raise
            raise MalformedReply(
                "the server's reply could not be read (status "
                f"{e.status_code}: {short_message(self._without_keys(str(e.body)))})") from None
        rows = reply.embeddings.float_
        if rows is None:
            raise MalformedReply("the reply holds no float embeddings")
        return rows

    def _error_status(self, error):
        import httpx
        from cohere.core.api_error import ApiError

        if isinstance(error, ApiError):
            return error.status_code, None
        if isinstance(error, httpx.TimeoutException):
            return None, "a timeout"
        if isinstance(error, httpx.TransportError):
            return None, "a connection error"
        return None, None

    def _error_message(self, error):
        return str(getattr(error, "body", None) or error)

    def _error_headers(self, error):
        return getattr(error, "headers", None)
