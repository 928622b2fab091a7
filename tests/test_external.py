"""The hosted-API encoders against a real HTTP server on 127.0.0.1 (tests/_api_server.py) that
serves real embeddings of the tiny local model in OpenAI's, Azure's, Cohere's and Ollama's
request shapes, and misbehaves on request."""

import logging
import pickle
import subprocess
import sys
import time

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

import embetter.external._calls as calls
from embetter.external import (
    AzureOpenAIEncoder,
    CohereEncoder,
    HostedAPIError,
    OllamaEncoder,
    OpenAIEncoder,
)
from embetter.grab import ColumnGrabber
from embetter.text import SentenceEncoder
from embetter.utils import cached
from tests._api_server import EmbeddingServer
from tests.test_text import API_CHECKS

KEY = "sk-test-7f3a9c1e5b"  # what the server expects; must never show up where it should not
KINDS = ["openai", "azure", "cohere", "ollama"]
ENV_VARS = ["OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT",
            "AZURE_OPENAI_AD_TOKEN", "OPENAI_API_VERSION", "CO_API_KEY", "COHERE_API_KEY",
            "CO_API_URL", "OLLAMA_HOST", "OLLAMA_API_KEY"]
MODULES = {"openai": "openai", "azure": "openai", "cohere": "cohere", "ollama": "ollama"}
FAST = {"retry-after-ms": "5"}  # keep the retries' waits short in tests
CLOSED = "http://127.0.0.1:9"  # where a request that should not be made would go: never outside


@pytest.fixture(scope="module")
def local(tiny_model_path):
    return SentenceEncoder(tiny_model_path, device="cpu")


@pytest.fixture(scope="module")
def api(local):
    server = EmbeddingServer(local.transform, api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture
def server(api, monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(calls, "INITIAL_RETRY_DELAY", 0.005)  # our own backoff, for Ollama
    api.wait_idle()
    api.reset()
    api.delay = 0.0
    yield api
    api.delay = 0.0
    api.wait_idle()
    api.reset()


def make(kind, server, **kw):
    kw.setdefault("api_key", KEY)
    kw.setdefault("model", "tiny")
    if kind == "openai":
        return OpenAIEncoder(base_url=server.url + "/v1", **kw)
    if kind == "azure":
        return AzureOpenAIEncoder(azure_endpoint=server.url, **kw)
    if kind == "cohere":
        return CohereEncoder(base_url=server.url, **kw)
    return OllamaEncoder(base_url=server.url, **kw)


def texts_of(n, start=0):
    return [f"text number {i} about {['cats', 'tax', 'rain', 'pizza'][i % 4]}"
            for i in range(start, start + n)]


# -- the same battery as SentenceEncoder's ---------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_real_embeddings_in_input_order_for_every_input_form(kind, server, local, corpus):
    enc = make(kind, server, batch_size=5, max_concurrency=3)
    X = enc.transform(corpus[:23])
    assert X.shape == (23, 32) and X.dtype == np.float32
    np.testing.assert_allclose(X, local.transform(corpus[:23]), atol=1e-5)
    assert len(server.requests) == 5  # 23 texts in batches of 5
    assert all(len(r["texts"]) <= 5 for r in server.requests)
    assert server.texts_seen.count(corpus[0]) == 1
    for same in (tuple(corpus[:5]), np.array(corpus[:5]), pd.Series(corpus[:5]),
                 pd.DataFrame({"t": corpus[:5]}), np.array(corpus[:5], dtype=object)[:, None],
                 (t for t in corpus[:5])):
        np.testing.assert_allclose(enc.transform(same), X[:5], atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_input_sends_no_request(kind, server):
    out = make(kind, server, dimensions=16).transform([])
    assert out.shape == (0, 16) and out.dtype == np.float32
    enc = make(kind, server)
    enc.transform(["a b"])
    n = len(server.requests)
    assert enc.transform([]).shape == (0, 32)  # the width learned from the earlier reply
    assert len(server.requests) == n
    # a model of known width needs no request either; an unknown one costs one probe
    known = {"openai": OpenAIEncoder("text-embedding-3-large", base_url=CLOSED),
             "azure": AzureOpenAIEncoder("x", dimensions=64, azure_endpoint=CLOSED),
             "cohere": CohereEncoder("embed-english-light-v3.0", base_url=CLOSED),
             "ollama": OllamaEncoder("nomic-embed-text", base_url=CLOSED)}[kind]
    assert known.transform([]).shape[0] == 0 and known.transform([]).shape[1] in (3072, 64, 384,
                                                                                   768)
    assert make(kind, server).transform([]).shape == (0, 32)
    assert len(server.requests) == n + 1


@pytest.mark.parametrize("kind", KINDS)
def test_dimensions_are_requested_and_checked(kind, server, local, corpus):
    X = make(kind, server, dimensions=8).transform(corpus[:4])
    full = local.transform(corpus[:4])[:, :8]
    np.testing.assert_allclose(X, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5)
    body = server.requests[-1]["body"]
    assert body.get("dimensions", body.get("output_dimension")) == 8


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_and_parameters(kind, server):
    enc = make(kind, server)
    with pytest.raises(TypeError, match="wrap it in a list"):
        enc.transform("just one string")
    with pytest.raises(ValueError, match=r"X\[1\]"):
        enc.transform(["ok", None])
    for param, value in [("batch_size", 0), ("max_concurrency", 0), ("dimensions", 0),
                         ("max_retries", -1), ("timeout", 0), ("max_tokens_per_request", 0),
                         ("model", "")]:
        with pytest.raises(ValueError, match=param):
            make(kind, server, **{param: value}).transform(["a"])
    assert server.requests == []  # nothing is sent for a bad call


def test_provider_batch_caps():
    with pytest.raises(ValueError, match="batch_size must be a positive int and at most 96"):
        CohereEncoder(batch_size=97, api_key="x", base_url=CLOSED).transform(["a"])
    with pytest.raises(ValueError, match="at most 2048"):
        OpenAIEncoder(batch_size=5000, api_key="x", base_url=CLOSED).transform(["a"])


def test_token_budget_splits_batches(server):
    long = ["word " * 300] * 6  # ~500 estimated tokens each
    enc = make("openai", server, batch_size=100, max_tokens_per_request=1200, max_concurrency=1)
    assert enc.transform(long).shape == (6, 32)
    assert [len(r["texts"]) for r in server.requests] == [2, 2, 2]
    server.reset()
    huge = make("openai", server, max_tokens_per_request=10, max_concurrency=1)
    assert huge.transform(["a " * 100, "b"]).shape == (2, 32)  # over budget: a batch alone
    assert [len(r["texts"]) for r in server.requests] == [1, 1]


@pytest.mark.parametrize("kind", KINDS)
def test_params_verbatim_lazy_client_and_clone(kind, server):
    enc = make(kind, server)
    assert "_client_cache" not in enc.__dict__  # nothing built in __init__
    assert enc.get_params()["dimensions"] is None
    enc.transform(["a b"])
    assert "_client_cache" in enc.__dict__
    twin = clone(enc)
    assert "_client_cache" not in twin.__dict__ and twin.get_params() == enc.get_params()
    assert enc.get_feature_names_out()[1] == f"{type(enc).__name__.lower()}1"


@pytest.mark.parametrize("kind", KINDS)
def test_set_params_builds_a_new_client(kind, server):
    enc = make(kind, server, max_retries=0)
    enc.transform(["a"])
    enc.set_params(api_key="sk-wrong")
    with pytest.raises(HostedAPIError, match="status 401") as err:
        enc.transform(["a"])
    assert err.value.status == 401
    enc.set_params(api_key=KEY, dimensions=4)
    assert enc.transform(["a"]).shape == (1, 4)


@pytest.mark.parametrize("kind", KINDS)
def test_set_output_pickle_and_pipeline(kind, server, corpus, monkeypatch):
    env = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY", "cohere": "CO_API_KEY",
           "ollama": "OLLAMA_API_KEY"}[kind]
    enc = make(kind, server).set_output(transform="pandas")
    out = enc.transform(pd.Series(corpus[:3], index=[7, 8, 9]))
    assert list(out.index) == [7, 8, 9] and out.shape == (3, 32)
    pipe = make_pipeline(ColumnGrabber("text"), make(kind, server))
    df = pd.DataFrame({"text": corpus[:6]})
    before = pipe.transform(df)
    blob = pickle.dumps(pipe)
    assert KEY.encode() not in blob and b"httpx" not in blob
    loaded = pickle.loads(blob)
    assert loaded[-1].api_key is None  # a key given as an argument does not travel
    monkeypatch.setenv(env, KEY)  # ... the provider's variable does, where it is loaded
    np.testing.assert_allclose(loaded.transform(df), before, atol=1e-6)
    np.testing.assert_allclose(joblib.load(_dump(pipe, monkeypatch)).transform(df), before,
                               atol=1e-6)


def _dump(obj, monkeypatch):
    import io

    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    buffer.seek(0)
    return buffer


def test_grid_search_over_encoder_params(server, corpus):
    y = np.array([i % 2 for i in range(40)])
    pipe = make_pipeline(make("openai", server), LogisticRegression())
    grid = GridSearchCV(pipe, {"openaiencoder__dimensions": [8, None]}, cv=2,
                        scoring=lambda est, X, y: est[-1].n_features_in_)
    grid.fit(corpus[:40], y)
    assert grid.cv_results_["mean_test_score"].tolist() == [8, 32]
    assert {r["body"].get("dimensions") for r in server.requests} == {8, None}


@pytest.mark.parametrize(
    "estimator",
    [OpenAIEncoder(), AzureOpenAIEncoder(), CohereEncoder(), OllamaEncoder()],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("check", API_CHECKS, ids=lambda c: c.__name__)
def test_sklearn_api_checks(estimator, check):
    check(type(estimator).__name__, clone(estimator))


@pytest.mark.parametrize("kind", KINDS)
def test_missing_client_names_the_extra(kind, server, monkeypatch):
    monkeypatch.setitem(sys.modules, MODULES[kind], None)  # as if not installed
    extra = {"azure": "openai"}.get(kind, kind)
    with pytest.raises(ImportError, match=rf"pip install 'embetter\[{extra}\]'"):
        make(kind, server).transform(["a"])


@pytest.mark.parametrize("kind", ["openai", "cohere"])
def test_missing_key_names_the_variable(kind, server):
    var = {"openai": "OPENAI_API_KEY", "cohere": "CO_API_KEY"}[kind]
    with pytest.raises(ValueError, match=var):
        make(kind, server, api_key=None).transform(["a"])


@pytest.mark.parametrize("kind", KINDS)
def test_works_inside_cached_and_sends_only_unseen_texts(kind, server, tmp_path, local):
    enc = make(kind, server, batch_size=4)
    wrapped = cached(tmp_path / "cache", enc)
    first = wrapped.transform(texts_of(10))
    server.reset()
    again = wrapped.transform(texts_of(10, start=5))  # texts 5..14: 5..9 seen before
    assert sorted(server.texts_seen) == sorted(texts_of(5, start=10))
    np.testing.assert_allclose(again[:5], first[5:], atol=1e-6)
    np.testing.assert_allclose(again, local.transform(texts_of(10, start=5)), atol=1e-5)
    # the cache's identity of the encoder ignores its client, its key and what it learned
    assert joblib.hash(enc) == joblib.hash(make(kind, server, batch_size=4, api_key="other"))


def test_import_needs_no_client():
    code = ("import sys, embetter.external; "
            "print(sorted({'openai', 'cohere', 'ollama'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


# -- faults ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_then_succeeds(kind, status, server, local, corpus):
    server.inject(status=status, times=2, headers={**FAST, "retry-after": "0"})
    X = make(kind, server, max_concurrency=1, max_retries=3).transform(corpus[:4])
    np.testing.assert_allclose(X, local.transform(corpus[:4]), atol=1e-5)
    assert len(server.requests) == 3  # two refused, the third answered


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("header", [{"retry-after": "1"}, {"retry-after-ms": "1000"}])
def test_every_provider_honours_retry_after(kind, header, server):
    """One retry policy for all: Ollama's client carries no headers, and waited 0.5 s."""
    server.inject(status=429, times=1, headers=header)
    start = time.perf_counter()
    make(kind, server, max_concurrency=1).transform(["a"])
    assert time.perf_counter() - start >= 0.95 and len(server.requests) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_retries_run_out_error_names_batch_and_status(kind, server):
    texts = texts_of(15)
    texts[7] = "poison pill"
    server.inject(status=503, times=None, match="poison", headers=FAST)
    enc = make(kind, server, batch_size=5, max_retries=2, max_concurrency=2)
    with pytest.raises(HostedAPIError, match=r"batch 2 of 3 \(texts 5 to 9\).*status 503") as err:
        enc.transform(texts)
    assert err.value.status == 503 and err.value.batch == 1 and err.value.texts == (5, 10)
    poisoned = [r for r in server.requests if "poison pill" in r["texts"]]
    assert len(poisoned) == 3  # the first try and max_retries=2 retries


@pytest.mark.parametrize("kind", KINDS)
def test_client_errors_are_not_retried(kind, server):
    server.inject(status=400, times=None)
    with pytest.raises(HostedAPIError, match="status 400"):
        make(kind, server, max_retries=3).transform(["a"])
    assert len(server.requests) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_slow_reply_times_out_and_is_retried(kind, server, local):
    server.inject(slow=6, times=1)  # the retry must answer within the timeout, even when busy
    X = make(kind, server, timeout=2, max_retries=2).transform(["slow one"])
    np.testing.assert_allclose(X, local.transform(["slow one"]), atol=1e-5)
    assert len(server.requests) == 2
    server.reset()
    server.inject(slow=1.0, times=None)
    with pytest.raises(HostedAPIError, match="batch 1 of 1 .*a timeout") as err:
        make(kind, server, timeout=0.2, max_retries=1).transform(["slow"])
    assert err.value.status is None


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_length_reply_is_an_error_not_a_partial_array(kind, server):
    server.inject(short=True, times=1, match="text number 6")
    with pytest.raises(HostedAPIError, match=r"batch 2 of 2 \(texts 5 to 9\).*returned 4 "
                                             r"embeddings of width 32, expected 5"):
        make(kind, server, batch_size=5, max_concurrency=1).transform(texts_of(10))


@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_or_empty_replies_are_errors_naming_the_batch(kind, server):
    server.inject(raw=b"<html>the gateway says hello</html>", times=1, match="text number 6")
    with pytest.raises(HostedAPIError, match=r"batch 2 of 2 \(texts 5 to 9\).*could not be "
                                             r"read") as failure:
        make(kind, server, batch_size=5, max_concurrency=1, max_retries=0).transform(
            texts_of(10))
    assert failure.value.status is None  # (Cohere's said "failed with status 200")
    server.inject(width=0, times=1)
    with pytest.raises(HostedAPIError, match="embeddings of width 0"):
        make(kind, server, max_retries=0).transform(texts_of(3))


@pytest.mark.parametrize("kind", KINDS)
def test_batches_of_different_widths_are_an_error(kind, server):
    server.inject(width=16, times=1, match="text number 6")
    with pytest.raises(HostedAPIError, match=r"different widths \[16, 32\] \(batch 1 vs batch 2"):
        make(kind, server, batch_size=5, max_concurrency=2).transform(texts_of(10))


@pytest.mark.parametrize("kind", ["openai", "azure"])
def test_reply_out_of_order_is_put_back_in_order(kind, server, local):
    server.inject(shuffle=True, times=None)  # rows come back reversed, with their indices
    X = make(kind, server).transform(texts_of(6))
    np.testing.assert_allclose(X, local.transform(texts_of(6)), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bound", [1, 3])
def test_concurrency_bound(kind, bound, server, local):
    server.delay = 0.4  # each reply takes a while, so requests overlap when allowed
    texts = texts_of(12)
    X = make(kind, server, batch_size=2, max_concurrency=bound).transform(texts)
    np.testing.assert_allclose(X, local.transform(texts), atol=1e-5)
    assert server.max_in_flight == bound  # reached, never exceeded


@pytest.mark.parametrize("kind", KINDS)
def test_key_never_leaks(kind, server, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, the clients' and httpx's included
    enc = make(kind, server, max_retries=1)
    server.inject(status=429, times=1, headers=FAST)
    enc.transform(["hello"])
    server.inject(status=500, times=None, headers=FAST)
    with pytest.raises(HostedAPIError) as err:
        enc.transform(["world"])
    assert server.requests[0]["key"] == KEY  # it was sent where it belongs
    assert "retry" in caplog.text.lower()  # the retries were logged...
    assert KEY not in caplog.text  # ... without the key
    assert KEY not in str(err.value) and KEY not in repr(err.value.__cause__)
    assert KEY not in repr(enc) and "api_key='***'" in repr(enc)
    assert KEY not in repr(cached("x", enc)) and KEY not in enc._repr_html_()
    assert KEY not in str(pickle.dumps(enc)) and enc.get_params()["api_key"] == KEY
    assert f"{enc.api_key} {enc.get_params()['api_key']}" == "*** ***"  # as text, too
    logging.getLogger("embetter.test").warning("params %s", enc.api_key)
    assert KEY not in caplog.text
    import copy

    for twin in (copy.copy(enc), copy.deepcopy(enc)):  # in-memory copies keep the key
        assert twin.get_params()["api_key"] == KEY and "_client_cache" not in vars(twin)
