"""OpenAI embeddings, Azure OpenAI, and OpenAI-compatible servers (vLLM, Ollama's /v1, ...)."""

from __future__ import annotations

import os

from embetter.external._calls import MalformedReply, check_key, require, reveal
from embetter.external._core import HostedEncoder

OPENAI_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


class OpenAIEncoder(HostedEncoder):
    """Embed texts with OpenAI's embeddings API or any OpenAI-compatible server.

    Runs on the official `openai` client (`pip install 'embetter[openai]'`). 408, 409 and 429
    replies (honouring `Retry-After`), 5xx replies, timeouts and lost connections are
    retried with exponential backoff and jitter, by embetter for every provider (so a
    failure stops them all). Texts are sent in batches of at most `batch_size` texts and
    (estimated) `max_tokens_per_request` tokens, `max_concurrency` batches at a time; the
    output is always in input order. A batch that still fails raises `HostedAPIError`, naming the
    batch and the status: never a partial array.

    The client is created on first use. The key comes from `api_key` or `OPENAI_API_KEY`; a
    key given as an argument is shown as `'***'` in reprs and is not pickled (an unpickled
    encoder reads `OPENAI_API_KEY` where it is loaded).

    Arguments:
        model: the embedding model (or the name a compatible server serves it under).
        base_url: the API's address, e.g. `http://localhost:8000/v1` for a vLLM server;
            `None` uses `OPENAI_BASE_URL` or OpenAI's own.
        api_key: the key; `None` reads `OPENAI_API_KEY`. Servers that check no key accept
            any non-empty string.
        dimensions: shorten the output to this many dimensions (text-embedding-3 and later).
        batch_size: at most this many texts per request (OpenAI's cap is 2048).
        max_tokens_per_request: at most this many estimated tokens per request (OpenAI's cap
            is 300,000); `None` for no budget.
        max_retries: retries per request on 408, 409, 429, 5xx, timeouts and connection
            errors.
        max_concurrency: how many requests may be in flight at once.
        timeout: seconds to wait for the server to connect, and then for each read of
            its reply (the HTTP client's timeout: a reply that keeps trickling in may take
            longer in all).

    Usage:

    ```python
    from embetter.external import OpenAIEncoder

    enc = OpenAIEncoder("text-embedding-3-small", api_key="sk-not-a-real-key", dimensions=256)
    assert "sk-not" not in repr(enc)                # the key is masked
    assert enc.transform([]).shape == (0, 256)      # no request for no texts
    ```
    """

    max_batch_size = 2048
    known_dims = OPENAI_DIMS
    key_env = "OPENAI_API_KEY"
    url_env = ("OPENAI_BASE_URL",)
    client_env = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")

    def __init__(
        self,
        model="text-embedding-3-small",
        base_url=None,
        api_key=None,
        dimensions=None,
        batch_size=256,
        max_tokens_per_request=250_000,
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
        openai = require("openai", "openai", type(self).__name__)
        key = self._key_or_env(self.key_env)
        # no retries in the client: the core does them all, and stops them all at a failure
        return openai.OpenAI(api_key=reveal(key), base_url=self.base_url,
                             timeout=float(self.timeout), max_retries=0)

    def _official(self) -> bool:
        """Whether the texts go to OpenAI's own service (not a compatible server)."""
        return self.base_url is None and not os.environ.get("OPENAI_BASE_URL")

    def _check_texts(self, texts):
        # OpenAI's service refuses an empty input with a 400 for its whole batch; a compatible
        # server (vLLM, a proxy) may take one
        if self._official():
            empty = next((i for i, text in enumerate(texts) if not text), None)
            if empty is not None:
                raise ValueError(
                    f"X[{empty}] is an empty string, which OpenAI's embeddings API refuses: "
                    "drop it or give it some text")

    def _embed_batch(self, client, texts):
        extra = {"dimensions": int(self.dimensions)} if self.dimensions is not None else {}
        reply = client.embeddings.create(model=self.model, input=texts, **extra)
        if all(getattr(item, "index", None) is None for item in reply.data):
            return [item.embedding for item in reply.data]  # a server that numbers none
        data = sorted(reply.data, key=lambda item: (item.index is None, item.index or 0))
        if [item.index for item in data] != list(range(len(data))):
            raise MalformedReply(
                f"the reply's indices are {[item.index for item in reply.data][:10]}, "
                f"expected 0 to {len(texts) - 1} once each"
            )
        return [item.embedding for item in data]

    def _error_status(self, error):
        import openai

        if isinstance(error, openai.APIStatusError):
            return error.status_code, None
        if isinstance(error, openai.APITimeoutError):
            return None, "a timeout"
        if isinstance(error, openai.APIConnectionError):
            return None, "a connection error"
        return None, None

    def _error_headers(self, error):
        return getattr(getattr(error, "response", None), "headers", None)


class AzureOpenAIEncoder(OpenAIEncoder):
    """`OpenAIEncoder` for an Azure OpenAI resource (the `openai` client's `AzureOpenAI`).

    The other arguments mean what they mean in `OpenAIEncoder`; retries, batching,
    concurrency and key handling are the same.

    Arguments:
        model: the name of your deployment of an embedding model.
        azure_endpoint: the resource's address, e.g. `https://my-resource.openai.azure.com`;
            `None` reads `AZURE_OPENAI_ENDPOINT`.
        api_version: the Azure OpenAI API version (default `"2024-10-21"`); pass `None` to
            read `OPENAI_API_VERSION`.
        api_key: the key; `None` reads `AZURE_OPENAI_API_KEY` (or `AZURE_OPENAI_AD_TOKEN`).

    Usage:

    ```python
    from embetter.external import AzureOpenAIEncoder

    enc = AzureOpenAIEncoder("my-embedding-deployment", dimensions=256,
                             azure_endpoint="https://my-resource.openai.azure.com")
    assert enc.transform([]).shape == (0, 256)
    ```
    """

    key_env = "AZURE_OPENAI_API_KEY"
    url_env = ("AZURE_OPENAI_ENDPOINT",)
    client_env = ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OPENAI_API_VERSION",
                  "AZURE_OPENAI_AD_TOKEN", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")

    def __init__(
        self,
        model="text-embedding-3-small",
        azure_endpoint=None,
        api_version="2024-10-21",
        api_key=None,
        dimensions=None,
        batch_size=256,
        max_tokens_per_request=250_000,
        max_retries=5,
        max_concurrency=4,
        timeout=60.0,
    ):
        self.model = model
        self.azure_endpoint = azure_endpoint
        self.api_version = api_version
        self.api_key = api_key
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.max_tokens_per_request = max_tokens_per_request
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.timeout = timeout

    @property
    def base_url(self):
        """Where requests go (the core keys its caches by it)."""
        return self.azure_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")

    def _client_params(self):
        return super()._client_params() + (self.api_version,)

    def _official(self) -> bool:
        return True  # Azure's deployments refuse empty inputs as OpenAI's service does

    def _make_client(self):
        openai = require("openai", "openai", type(self).__name__)
        self._optional_key()  # checked; none is asked for (an AD token may stand in)
        if os.environ.get("AZURE_OPENAI_AD_TOKEN"):  # (the client sends it as a header)
            check_key(os.environ["AZURE_OPENAI_AD_TOKEN"],
                      "the environment variable AZURE_OPENAI_AD_TOKEN")
        try:
            return openai.AzureOpenAI(
                api_key=reveal(self.api_key), azure_endpoint=self.base_url,
                api_version=self.api_version, timeout=float(self.timeout),
                max_retries=0,
            )
        except (openai.OpenAIError, ValueError) as e:
            raise ValueError(
                f"{type(self).__name__} cannot build its client: {e} (azure_endpoint= or "
                "AZURE_OPENAI_ENDPOINT, api_version= or OPENAI_API_VERSION, api_key= or "
                "AZURE_OPENAI_API_KEY; a key given as api_key= is never pickled: an encoder "
                "that was, in a joblib or Dask worker, reads AZURE_OPENAI_API_KEY there)"
            ) from None
