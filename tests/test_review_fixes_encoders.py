"""Fixes from a second review of the encoders and hosted APIs: each test failed on the code
before its fix."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from embetter.text import SentenceEncoder
from embetter.text._models import bundled_model_path


@pytest.fixture(scope="module")
def lowercasing_model(tmp_path_factory):
    """The bundled MiniLM, configured with `do_lower_case=True` (its big files linked)."""
    src = bundled_model_path()
    dst = tmp_path_factory.mktemp("lower") / "model"
    for root, _dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        os.makedirs(dst / rel, exist_ok=True)
        for name in files:
            os.symlink(os.path.join(root, name), dst / rel / name)
    config = dst / "sentence_bert_config.json"
    settings = json.loads(config.read_text())
    config.unlink()
    config.write_text(json.dumps({**settings, "do_lower_case": True}))
    return str(dst)


@pytest.mark.parametrize("backend", ["pipelined", "onnx"])
def test_fast_backends_lowercase_as_the_models_tokenizer_does(lowercasing_model, backend):
    """sentence-transformers lowercases inside the Rust tokenizer; lowercasing again in
    Python turned a final capital sigma into "ς" where the model sees "σ"."""
    texts = ["ΟΔΟΣ ΣΟΦΟΣ", "A HAPPY DOG", "a happy dog"]
    ref = SentenceEncoder(lowercasing_model, device="cpu", backend="torch").transform(texts)
    extra = {"precision": "float32"} if backend == "onnx" else {}
    got = SentenceEncoder(lowercasing_model, device="cpu", backend=backend,
                          **extra).transform(texts)
    np.testing.assert_allclose(got, ref, atol=1e-4)  # cosine 0.88 on the Greek row before
    np.testing.assert_allclose(ref[1], ref[2], atol=1e-5)  # the model does lowercase


KEY = "sk-live-REALKEY123"


@pytest.mark.parametrize("kind", ["OpenAIEncoder", "CohereEncoder", "OllamaEncoder",
                                  "AzureOpenAIEncoder"])
def test_the_key_is_in_no_json_or_pickle_of_the_parameters(kind):
    """A str subclass was written as the real key by json.dumps and by pickle."""
    import pickle

    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    import embetter.external

    enc = getattr(embetter.external, kind)(model="m", api_key=KEY)
    pipe = make_pipeline(enc, LogisticRegression())
    text = json.dumps(enc.get_params(), default=str)  # a run logger's config dump
    assert KEY not in text and '"api_key": "***"' in text
    with pytest.raises(TypeError):  # and without a fallback it refuses, never leaks
        json.dumps(enc.get_params())
    assert KEY.encode() not in pickle.dumps(pipe.get_params())
    assert pickle.loads(pickle.dumps(enc.get_params()))["api_key"] is None
    # in memory the key is kept: clone, set_params, comparisons
    twin = clone(pipe)[0]
    assert twin.api_key == KEY and twin.get_params()["api_key"] == enc.api_key
    assert bool(twin.api_key) and f"{twin.api_key}" == "***"
    twin.set_params(api_key="other")
    assert twin.api_key == "other" and twin.api_key != KEY


@pytest.mark.parametrize("kind", ["OpenAIEncoder", "CohereEncoder", "AzureOpenAIEncoder"])
def test_a_pickled_encoder_without_its_key_says_why(kind, monkeypatch):
    """n_jobs > 1 or Dask: the key given is dropped on purpose, and the error told the user
    only to pass the api_key=... they had passed."""
    import pickle

    import embetter.external

    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN",
                 "CO_API_KEY", "COHERE_API_KEY", "OPENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    extra = {"azure_endpoint": "http://127.0.0.1:9", "api_version": "2024-02-01"} \
        if kind == "AzureOpenAIEncoder" else {"base_url": "http://127.0.0.1:9"}
    enc = getattr(embetter.external, kind)(model="m", api_key=KEY, dimensions=8, **extra)
    worker = pickle.loads(pickle.dumps(enc))
    with pytest.raises(ValueError, match="never pickled: an encoder that was.* reads "):
        worker.transform(["a"])
    # the state pickled is the same with or without a key: a cache's key for it too
    import joblib

    plain = getattr(embetter.external, kind)(model="m", dimensions=8, **extra)
    assert joblib.hash(enc) == joblib.hash(plain)


@pytest.mark.parametrize("timeout", [float("inf"), 1e300, float("nan"), 0, -1])
def test_timeout_must_be_finite(timeout):
    from embetter.external import OllamaEncoder

    with pytest.raises(ValueError, match="timeout must be a finite positive number"):
        OllamaEncoder("m", base_url="http://127.0.0.1:9", timeout=timeout).transform(["a"])


def test_retry_after_reads_seconds_milliseconds_and_dates():
    from email.utils import formatdate

    from embetter.external._calls import retry_after, retry_delay

    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 8 < retry_after({"retry-after": formatdate(__import__("time").time() + 10,
                                                       usegmt=True)}) <= 10
    for bad in (None, {}, {"retry-after": "soon"}, {"retry-after": "-1"},
                {"retry-after-ms": "nan"}):
        assert retry_after(bad) is None
    assert retry_delay(0, 3.0) == 3.0
    assert retry_delay(0, 3600.0) <= 0.5  # a wait of an hour is not waited: the backoff


@pytest.mark.parametrize("backend", ["torch", "pipelined", "onnx"])
def test_truncate_dim_overrides_the_models_own_as_encode_does(tiny_model_path, backend):
    """sentence-transformers' encode(truncate_dim=24) widens a model built with
    truncate_dim=16; ours refused the same arguments."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu", truncate_dim=16)
    texts = ["the cat likes pizza", "a dog hates the rain"]
    extra = {"precision": "float32"} if backend == "onnx" else {}
    for asked in (24, 8, None):
        ref = model.encode(texts, truncate_dim=asked, convert_to_numpy=True)
        got = SentenceEncoder(model, device="cpu", backend=backend, truncate_dim=asked,
                              **extra).transform(texts)
        assert got.shape == ref.shape == (2, asked or 16)
        np.testing.assert_allclose(got, ref, atol=1e-4)
    with pytest.raises(ValueError, match="dim must be an int between 1 and the model's "
                                         "dimension 32, got 40"):
        from embetter.text import MatryoshkaEncoder

        MatryoshkaEncoder(model, dim=40, device="cpu").transform(texts)


def test_an_export_another_process_is_still_moving_in_is_done_again(tiny_model_path,
                                                                    tmp_path, monkeypatch):
    """meta.json moves in last: a folder with the graph but without it is half there, and
    reading it failed with FileNotFoundError."""
    monkeypatch.setenv("EMBETTER_CACHE_DIR", str(tmp_path / "cache"))
    texts = ["the cat likes pizza", "a dog hates the rain"]
    first = SentenceEncoder(tiny_model_path, backend="onnx", precision="float32")
    ref = first.transform(texts)
    (meta,) = (tmp_path / "cache").glob("onnx/*/meta.json")
    meta.unlink()  # as another process leaves it just before its last move
    again = SentenceEncoder(tiny_model_path, backend="onnx", precision="float32")
    np.testing.assert_allclose(again.transform(texts), ref, atol=1e-6)
    assert meta.is_file()


def test_lite_encoder_reads_its_basis_in_place(corpus, monkeypatch):
    """TruncatedSVD leaves a strided basis, which scipy copied whole at every transform
    (368 MB for 10 texts at the default size); an encoder fitted before this keeps working
    and gives the same vectors, in chunks as at once."""
    import copy

    from embetter.text import LiteTextEncoder, _lite

    enc = LiteTextEncoder(n_components=8, random_state=0).fit(corpus)
    assert enc.svd_.components_.flags.f_contiguous
    whole = enc.transform(corpus)
    older = copy.deepcopy(enc)
    older.svd_.components_ = np.ascontiguousarray(older.svd_.components_)[:, ::-1][:, ::-1]
    assert not older.svd_.components_.flags.f_contiguous
    np.testing.assert_array_equal(older.transform(corpus), whole)
    monkeypatch.setattr(_lite, "TRANSFORM_CHUNK", 7)
    np.testing.assert_array_equal(enc.transform(corpus), whole)
