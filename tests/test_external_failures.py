"""The hosted-API encoders when requests fail (a review, session 28; each test failed on the
code before its fix): what was paid for is kept, the first real error is the one raised, a key
fixed in the environment takes effect, the server's retry instructions are obeyed, and a bad
address is named."""

import threading
import time

import numpy as np
import pytest

import embetter.external._core as core
from embetter.external import (
    AzureOpenAIEncoder,
    CohereEncoder,
    HostedAPIError,
    OllamaEncoder,
    OpenAIEncoder,
)
from embetter.utils import cached
from tests import test_external as ext
from tests.test_external import FAST, KEY, KINDS, make, texts_of

api, local, server = ext.api, ext.local, ext.server  # the live server's fixtures

KEY_ENV = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY", "cohere": "CO_API_KEY",
           "ollama": "OLLAMA_API_KEY"}


@pytest.mark.parametrize("concurrency", [1, 4])
def test_batches_that_came_back_before_a_failure_are_cached(server, tmp_path, concurrency):
    texts = texts_of(10)
    enc = cached(tmp_path / "c", make("openai", server, batch_size=2, max_retries=0,
                                      max_concurrency=concurrency))
    server.inject(status=500, times=1, match="number 9", slow=0.2)  # the last batch fails
    with pytest.raises(HostedAPIError) as failure:
        enc.transform(texts)
    positions, rows = failure.value.finished
    assert rows.shape == (len(positions), 32) and 9 not in positions
    if concurrency == 1:
        assert sorted(positions) == list(range(8))  # the four batches before it
    server.wait_idle()
    server.reset()
    again = enc.transform(texts)
    # only what did not come back is sent again (before: all ten texts)
    assert sorted(server.texts_seen) == sorted(t for i, t in enumerate(texts)
                                               if i not in set(positions))
    np.testing.assert_allclose(again, make("openai", server).transform(texts), atol=1e-6)


def test_the_first_real_error_is_raised_when_a_stopped_batch_ends_first(server, monkeypatch):
    class SlowFirstSet(threading.Event):
        """The failing worker paused right after it set `stop` (as the OS may pause it)."""

        def set(self):
            first = not self.is_set()
            super().set()
            if first:
                time.sleep(0.05)

    monkeypatch.setattr(core, "threading", type("T", (), {"Event": SlowFirstSet}))
    server.inject(status=400, match="bad", slow=0.1, times=None)
    server.inject(status=429, match="ok", headers={"retry-after": "30"}, times=None)
    enc = make("openai", server, batch_size=1, max_concurrency=4)
    # before: AttributeError: 'NoneType' object has no attribute 'shape'
    with pytest.raises(HostedAPIError, match="status 400"):
        enc.transform(["bad", "ok1", "ok2", "ok3"])


@pytest.mark.parametrize("kind", KINDS)
def test_a_key_fixed_in_the_environment_takes_effect(kind, server, monkeypatch):
    monkeypatch.setenv(KEY_ENV[kind], "wrong")
    enc = make(kind, server, api_key=None, max_retries=0)
    with pytest.raises(HostedAPIError, match="401"):
        enc.transform(["a b"])
    monkeypatch.setenv(KEY_ENV[kind], KEY)
    assert enc.transform(["a b"]).shape == (1, 32)  # it kept the old client's 401 before


@pytest.mark.parametrize("kind", KINDS)
def test_a_wait_longer_than_two_minutes_is_not_retried(kind, server):
    server.inject(status=429, times=None, headers={"retry-after": "300"})
    enc = make(kind, server, max_retries=3)
    start = time.monotonic()
    with pytest.raises(HostedAPIError, match="asked for a wait of 300 s"):
        enc.transform(["a b"])
    # before: three more requests after the backoff
    assert len(server.requests) == 1 and time.monotonic() - start < 5


@pytest.mark.parametrize("kind", KINDS)
def test_the_servers_x_should_retry_is_obeyed(kind, server):
    server.inject(status=503, times=None, headers={**FAST, "x-should-retry": "false"})
    with pytest.raises(HostedAPIError, match="503"):
        make(kind, server, max_retries=3).transform(["a b"])
    assert len(server.requests) == 1  # before: 4
    server.reset()
    server.inject(status=400, times=1, headers={**FAST, "x-should-retry": "true"})
    assert make(kind, server, max_retries=1).transform(["a b"]).shape == (1, 32)
    assert len(server.requests) == 2


@pytest.mark.parametrize("make_bad, name", [
    (lambda: OpenAIEncoder(base_url=123, api_key=KEY), "base_url"),
    (lambda: CohereEncoder(base_url=123, api_key=KEY), "base_url"),
    (lambda: OllamaEncoder(base_url="  "), "base_url"),
    (lambda: AzureOpenAIEncoder(azure_endpoint=123, api_key=KEY), "azure_endpoint"),
])
def test_a_bad_address_is_named(make_bad, name):
    # before: errors from inside the clients ("'int' object has no attribute 'partition'")
    with pytest.raises(TypeError, match=f"{name} must be None or a non-empty str"):
        make_bad().transform(["a b"])


def test_a_cached_pipeline_never_stores_the_hosted_steps_rows_as_its_own(server, tmp_path):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    texts = texts_of(6)
    pipe = make_pipeline(make("openai", server, batch_size=2, max_retries=0, max_concurrency=1),
                         Normalizer())
    enc = cached(tmp_path / "c", pipe)
    server.inject(status=500, times=1, match="number 5")
    with pytest.raises(HostedAPIError):
        enc.transform(texts)
    server.reset()
    # the finished rows were the hosted step's, not the pipeline's: none are stored
    np.testing.assert_allclose(enc.transform(texts), pipe.transform(texts), atol=1e-6)


def test_an_address_given_as_a_url_object_is_taken(server):
    import httpx2

    enc = OpenAIEncoder(model="tiny", base_url=httpx2.URL(server.url + "/v1"), api_key=KEY)
    assert enc.transform(["a b"]).shape == (1, 32)


def test_an_address_read_from_the_environment_is_part_of_the_cache_key(server, tmp_path,
                                                                      monkeypatch):
    # the cache served the first server's rows for another server (a review, session 36)
    from tests.test_external import CLOSED

    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    enc = cached(tmp_path / "c", OpenAIEncoder(model="tiny", api_key=KEY, max_retries=0))
    enc.transform(texts_of(2))
    monkeypatch.setenv("OPENAI_BASE_URL", CLOSED + "/v1")
    with pytest.raises(HostedAPIError, match="connection"):
        enc.transform(texts_of(2))


@pytest.mark.parametrize("setting", [{"timeout": 120.0}, {"max_retries": 8},
                                     {"max_concurrency": 8}, {"batch_size": 64},
                                     {"max_tokens_per_request": None}])
def test_settings_that_change_no_vector_keep_the_cached_rows(server, tmp_path, setting):
    # each sent every cached text again (a review, session 36)
    cached(tmp_path / "c", make("openai", server)).transform(texts_of(3))
    server.reset()
    again = cached(tmp_path / "c", make("openai", server, **setting)).transform(texts_of(3))
    assert server.texts_seen == []
    np.testing.assert_allclose(again, make("openai", server).transform(texts_of(3)), atol=1e-6)
    other = cached(tmp_path / "c", make("openai", server, model="other")).transform(texts_of(1))
    assert other.shape == (1, 32) and len(server.texts_seen) == 4  # (the model is in the key)


def test_the_cache_drops_no_row_past_a_size_limit(tmp_path, tiny_model_path):
    # diskcache's default dropped the oldest rows past 1 GiB (a review, session 36)
    import diskcache

    from embetter.text import SentenceEncoder

    cached(tmp_path / "c", SentenceEncoder(tiny_model_path)).transform(["a", "b"])
    with diskcache.Cache(str(tmp_path / "c")) as raw:
        assert raw.size_limit >= 1 << 62
