"""Fixes from a review of the encoders, their backends and the cache: each test failed on the
code before its fix."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from embetter.text import LiteTextEncoder, SentenceEncoder

TEXTS = ["the weather is nice today", "refund my order please", "where is my parcel"]


def _cos(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture
def export_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBETTER_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("backend", ["pipelined", "onnx"])
def test_fast_backends_run_a_model_with_its_own_truncate_dim(tiny_model_path, backend,
                                                             export_cache):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu", truncate_dim=8)
    ref = SentenceEncoder(model, device="cpu").transform(TEXTS)
    extra = {"precision": "float32"} if backend == "onnx" else {}
    got = SentenceEncoder(model, device="cpu", backend=backend, **extra).transform(TEXTS)
    assert ref.shape == got.shape == (3, 8)  # the forward pass gives 32: index_copy_ failed
    np.testing.assert_allclose(got, ref, atol=1e-4)  # values, scale included


@pytest.mark.parametrize("backend", ["pipelined", "onnx"])
def test_fast_backends_add_the_models_default_prompt_as_encode_does(tiny_model_path, backend,
                                                                    export_cache):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu",
                                prompts={"query": "the weather "}, default_prompt_name="query")
    ref = SentenceEncoder(model, device="cpu", backend="torch").transform(TEXTS)
    extra = {"precision": "float32"} if backend == "onnx" else {}
    got = SentenceEncoder(model, device="cpu", backend=backend, **extra).transform(TEXTS)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    # an explicit empty prompt means none, on every path
    none_ref = SentenceEncoder(model, device="cpu", backend="torch", prompt="").transform(TEXTS)
    none = SentenceEncoder(model, device="cpu", backend=backend, prompt="", **extra)
    np.testing.assert_allclose(none.transform(TEXTS), none_ref, atol=1e-4)
    assert _cos(none_ref, ref).min() < 0.999  # the prompt does change the vectors


def test_auto_logs_its_choice_when_the_default_path_cannot_run(tmp_path, monkeypatch, caplog):
    from embetter.text._backends import auto

    monkeypatch.setenv("EMBETTER_CACHE_DIR", str(tmp_path / "cache"))
    default = auto.candidates("cuda", None, set(), set())[0]

    def build(plan):
        if plan == default:
            raise ValueError("no fast tokenizer; use backend='torch'")
        return lambda texts: np.ones((len(texts), 4), dtype=np.float32)

    with caplog.at_level(logging.INFO, logger="embetter"):
        plan, report = auto.resolve("a-model", "cuda", None, build, gpu="a test GPU",
                                    budget_s=2.0)  # KeyError before
    assert plan != default and "texts/s (default" in caplog.text


def test_azure_file_without_an_address_loads_beside_the_loaders_endpoint(tmp_path, monkeypatch):
    pytest.importorskip("openai", reason="the openai extra (in dev)")
    from embetter.external import AzureOpenAIEncoder
    from embetter.utils import load_skops, save_skops

    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    path = save_skops(AzureOpenAIEncoder("deployment", dimensions=8), tmp_path / "enc.skops")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://mine.openai.azure.com")
    assert load_skops(path).azure_endpoint is None  # refused as "an address the file names"


def test_replay_size_zero_set_between_calls_replays_nothing():
    from embetter.finetune import FeedForwardTuner

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(110, 6)).astype(np.float32), np.arange(110) % 2
    tuner = FeedForwardTuner(hidden_dim=4, n_epochs=2, random_state=0, refit_growth=None)
    tuner.fit(X[:100], y[:100]).set_params(replay_size=0)
    drawn, items = [], tuner._items

    def spy(rows, anchors, partners=None):
        drawn.append(len(anchors()))
        return items(rows, anchors, partners)

    tuner._items = spy
    tuner.partial_fit(X[100:110], y[100:110])
    assert drawn == [10]  # the 10 new rows and no remembered ones (20 before)


def test_cached_encoder_names_its_features_and_keeps_one_handle_for_a_home_path(
        tmp_path, monkeypatch):
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline

    from embetter.utils import cached

    monkeypatch.setenv("HOME", str(tmp_path))
    lite = LiteTextEncoder(n_components=3, random_state=0)
    enc = cached("~/cache", lite).fit(TEXTS * 2)
    np.testing.assert_array_equal(enc.get_feature_names_out(),
                                  lite.get_feature_names_out())
    pipe = make_pipeline(enc, PCA(2)).set_output(transform="pandas")
    assert list(pipe.fit_transform(TEXTS * 2).columns) == ["pca0", "pca1"]
    enc.transform(TEXTS)
    handle = enc._cache_handle
    enc.transform(TEXTS)
    assert enc._cache_handle is handle and (tmp_path / "cache").is_dir()


def test_lite_encoder_fits_texts_without_a_two_letter_word():
    X = LiteTextEncoder(n_components=2, random_state=0).fit_transform(["a", "b", "c", "I"])
    assert X.shape == (4, 2) and np.isfinite(X).all()
    with pytest.raises(ValueError, match="no characters to learn from"):
        LiteTextEncoder(n_components=2).fit(["", " "])



def test_a_callers_model_moved_to_another_device_changes_the_encoders_key(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    from embetter.text._model_copies import model_state_key

    model = SentenceTransformer(tiny_model_path, device="cpu")
    before = model_state_key(model, None)
    model.to("meta")  # the pipelined engine of the first key sends its inputs to the CPU
    assert model_state_key(model, None) != before


def test_auto_backend_runs_a_model_with_its_own_truncate_dim(tiny_model_path, tmp_path,
                                                             monkeypatch):
    from sentence_transformers import SentenceTransformer

    monkeypatch.setenv("EMBETTER_CACHE_DIR", str(tmp_path / "cache"))
    model = SentenceTransformer(tiny_model_path, device="cpu", truncate_dim=16).eval()
    got = SentenceEncoder(model, backend="auto").transform(TEXTS)  # broadcast error before
    ref = SentenceEncoder(model, backend="torch").transform(TEXTS)
    assert got.shape == ref.shape == (3, 16) and _cos(got, ref).min() > 0.99
    # whichever path it picked (int8 included), the rows keep the model's own length
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(ref, axis=1),
                               rtol=0.05)


@pytest.mark.parametrize("backend", ["pipelined", "onnx"])
def test_a_new_default_prompt_on_the_same_weights_is_used(tiny_model_path, backend,
                                                          export_cache):
    from sentence_transformers import SentenceTransformer

    extra = {"precision": "float32"} if backend == "onnx" else {}
    model = SentenceTransformer(tiny_model_path, device="cpu",
                                prompts={"query": "the weather "}, default_prompt_name="query")
    model.eval()
    enc = SentenceEncoder(model, backend=backend, **extra)
    enc.transform(TEXTS)
    model.default_prompt_name = None  # the same weights, no prompt now
    ref = SentenceEncoder(model, backend="torch").transform(TEXTS)
    np.testing.assert_allclose(enc.transform(TEXTS), ref, atol=1e-4)
    plain = SentenceTransformer(tiny_model_path, device="cpu").eval()  # the export's cache
    np.testing.assert_allclose(SentenceEncoder(plain, backend=backend, **extra).transform(TEXTS),
                               ref, atol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "pipelined", "onnx"])
@pytest.mark.parametrize("normalize", [False, True])
def test_truncate_dim_gives_upstreams_numbers_with_and_without_normalising(
        tiny_model_path, backend, normalize, export_cache):
    """The same numbers as sentence-transformers' own encode with the same arguments: a
    truncated row is the first columns of the full one, re-normalised only when asked."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    ref = model.encode(TEXTS, truncate_dim=8, normalize_embeddings=normalize,
                       convert_to_numpy=True)
    extra = {"precision": "float32"} if backend == "onnx" else {}
    got = SentenceEncoder(tiny_model_path, device="cpu", backend=backend, truncate_dim=8,
                          normalize_embeddings=normalize, **extra).transform(TEXTS)
    assert got.shape == (3, 8)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    if not normalize:  # the tiny model's rows are far from unit length: scale is tested
        assert np.abs(np.linalg.norm(ref, axis=1) - 1).min() > 0.05


def test_lite_encoder_names_a_vocabulary_of_one_term():
    # before: TruncatedSVD's "Found array with 1 feature(s) ... a minimum of 2 is required"
    from embetter.text import LiteTextEncoder

    with pytest.raises(ValueError, match="vocabulary of 1 term.*max_features"):
        LiteTextEncoder(n_components=5, random_state=0, max_features=1).fit(["a", "b"])
