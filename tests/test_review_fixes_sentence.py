"""Fixes from a review of SentenceEncoder, its model loading and speed paths: each test failed
on the code before its fix."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin

from embetter._validation import as_matrix
from embetter.text import SentenceEncoder

TEXTS = ["the cat likes pizza and the dog hates the rain old cars the news",
         "a dog hates the rain"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBETTER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _reference(model, texts):
    """What the caller's model encodes now (a copy in eval mode: the model stays as it is)."""
    import copy

    return copy.deepcopy(model).eval().encode(texts)


def test_a_private_copy_follows_the_callers_length_and_prompt(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu").train()  # runs through a copy
    enc = SentenceEncoder(model, device="cpu")
    enc.transform(TEXTS)
    model.max_seq_length = 4
    np.testing.assert_allclose(enc.transform(TEXTS), _reference(model, TEXTS), atol=1e-5)
    model.max_seq_length = 64
    model.prompts, model.default_prompt_name = {"q": "query: "}, "q"
    np.testing.assert_allclose(enc.transform(TEXTS), _reference(model, TEXTS), atol=1e-5)
    assert model.training  # the caller's model stays as it was


def test_a_float32_engine_of_a_half_model_follows_its_training(tiny_model_path):
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu").to(torch.bfloat16).eval()
    enc = SentenceEncoder(model, backend="pipelined", precision="float32", device="cpu")
    before = enc.transform(TEXTS)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # as a training step would
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator).to(p.dtype) * 0.5)
    after = enc.transform(TEXTS)
    assert _cos(before, after).min() < 0.99
    now = SentenceEncoder(model, device="cpu").transform(TEXTS)
    assert _cos(after, now).min() > 0.98


def test_loading_a_model_keeps_the_hubs_settings_per_group(tiny_model_path):
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    disable_progress_bars("huggingface_hub.http_get")
    try:
        SentenceEncoder(tiny_model_path, device="cpu").transform(["a dog"])
        assert are_progress_bars_disabled("huggingface_hub.http_get")
    finally:
        enable_progress_bars("huggingface_hub.http_get")


def test_model_names_get_errors_that_fit(tmp_path):
    from embetter.text._models import ModelNotFoundError

    with pytest.raises(ValueError, match="empty name"):  # it loaded the current folder
        SentenceEncoder("").transform(["a"])
    with pytest.raises(ModelNotFoundError, match="a folder, but no saved") as info:
        SentenceEncoder(str(tmp_path)).transform(["a"])
    assert "no such directory" not in str(info.value)
    with pytest.raises(ModelNotFoundError, match="not downloaded from URLs"):
        SentenceEncoder("http://www.example.com/my_model.zip").transform(["a"])


@pytest.mark.parametrize("big", [10**40, 10**400], ids=["1e40", "1e400"])
def test_a_python_int_beyond_float32_is_named(big):
    # before: numpy's "ufunc 'isfinite' not supported" TypeError, or an OverflowError
    with pytest.raises(ValueError, match="beyond float32's range"):
        as_matrix([[big, 1]], "X")


def test_exports_of_a_model_that_trains_on_do_not_pile_up(tiny_model_path, cache_dir):
    # each weight state got its own export (two graphs each), never removed
    import torch
    from sentence_transformers import SentenceTransformer

    from embetter.text._backends._export import MEMORY_EXPORTS

    model = SentenceTransformer(tiny_model_path, device="cpu").eval()
    enc = SentenceEncoder(model, backend="onnx", device="cpu")
    for _step in range(MEMORY_EXPORTS + 2):
        enc.transform(TEXTS)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.01)
    exports = [f for f in (cache_dir / "onnx" / "in-memory").iterdir()
               if not f.name.startswith(".")]
    assert len(exports) == MEMORY_EXPORTS
    np.testing.assert_allclose(enc.transform(TEXTS), SentenceEncoder(model).transform(TEXTS),
                               atol=0.05)


def test_cpu_0_runs_a_callers_cpu_model_as_it_is(tiny_model_path):
    # torch.device("cpu:0") != torch.device("cpu"): the model was copied for nothing
    from sentence_transformers import SentenceTransformer

    from embetter.text._model_copies import runs_as_is

    model = SentenceTransformer(tiny_model_path, device="cpu").eval()
    assert runs_as_is(model, "cpu:0")


def test_auto_runs_a_model_whose_new_export_drifts_as_it_is(tiny_model_path, cache_dir,
                                                            monkeypatch):
    # a choice of ONNX made for a caller's model held after it trained on: an export of its
    # new weights that failed the drift check raised from backend="auto"
    import torch
    from sentence_transformers import SentenceTransformer

    from embetter.text._backends import _export, auto

    monkeypatch.setattr(auto, "resolve", lambda *a, **k: (auto.Plan("onnx", "int8"), {}))
    model = SentenceTransformer(tiny_model_path, device="cpu").eval()
    enc = SentenceEncoder(model, backend="auto", device="cpu")
    enc.transform(TEXTS)
    assert enc.backend_ == "onnx"
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.01)
    monkeypatch.setitem(_export.EXPORT_MIN_COSINE, "int8", 1.5)  # every export drifts now
    got = enc.transform(TEXTS)
    assert enc.backend_ == "torch"
    np.testing.assert_allclose(got, SentenceEncoder(model, backend="torch").transform(TEXTS),
                               atol=1e-5)


def test_a_callers_static_model_in_training_mode_encodes_twice(tiny_model_path):
    # the copy's settings followed the model's: a static model's max_seq_length has no setter
    import os

    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    try:  # sentence-transformers 6; earlier: models
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    except ImportError:  # pragma: no cover - the floor's
        from sentence_transformers.models import StaticEmbedding

    tokenizer = Tokenizer.from_file(os.path.join(tiny_model_path, "tokenizer.json"))
    model = SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=16)],
                                device="cpu").train()
    enc = SentenceEncoder(model, backend="torch")
    first = enc.transform(["hello", "world"])
    np.testing.assert_array_equal(enc.transform(["hello", "world"]), first)


def test_hub_models_exports_are_never_pruned(cache_dir, monkeypatch):
    # only a model object in memory exports into onnx/in-memory, pruned to the newest few
    from embetter.text._backends import _export

    def fake_export(model, folder, precision):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"model-{precision}.onnx").write_text("graph")
        (folder / "meta.json").write_text("{}")

    monkeypatch.setattr(_export, "export_onnx", fake_export)
    monkeypatch.setattr(_export, "model_fingerprint", str)
    for i in range(_export.MEMORY_EXPORTS + 2):
        _export.onnx_model_folder(f"some-org/model-{i}", "float32", lambda i=i: f"weights{i}")
    assert len(list((cache_dir / "onnx").glob("some-org-model-*"))) == _export.MEMORY_EXPORTS + 2
    assert not (cache_dir / "onnx" / "in-memory").exists()


class Named(TransformerMixin, BaseEstimator):
    """An estimator with a `name` parameter that is no model."""

    def __init__(self, name=""):
        self.name = name

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.array([[len(x), 1.0] for x in X])


def test_a_cached_estimator_with_an_empty_name_parameter_works(tmp_path):
    # the cache key read name="" as a model folder: now refused as a model name
    from embetter.utils import cached

    assert cached(tmp_path / "c", Named()).transform(["a", "bb"]).shape == (2, 2)


def test_a_pipelined_engine_of_a_half_model_on_the_cpu_is_not_rebuilt(tiny_model_path):
    # it runs the model itself there: a weight change needs no new engine
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu").to(torch.bfloat16).eval()
    enc = SentenceEncoder(model, backend="pipelined", device="cpu")
    enc.transform(TEXTS)
    engine = enc.__dict__["_engine"][1]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.01)
    enc.transform(TEXTS)
    assert enc.__dict__["_engine"][1] is engine


@pytest.mark.parametrize("mode, backend", [("train", None), ("eval", "pipelined")])
def test_a_token_or_module_added_to_a_callers_model_is_encoded_as_it_is(
        tiny_model_path, mode, backend):
    """A copy (of a model in training mode) or a fast engine kept the modules and tokenizer
    of the model as it was at the first transform: a token added (embeddings resized) or a
    module appended was left out, and `transform` silently differed from `model.encode`."""
    import copy

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize

    from embetter.text import SentenceEncoder

    texts = ["zzqxword is here", "the cat likes pizza"]
    model = SentenceTransformer(tiny_model_path, device="cpu").train(mode == "train")
    enc = SentenceEncoder(model, backend=backend, device="cpu")
    enc.transform(texts)
    model.tokenizer.add_tokens(["zzqxword"])
    model[0].auto_model.resize_token_embeddings(len(model.tokenizer))
    expected = copy.deepcopy(model).eval().encode(texts)
    np.testing.assert_allclose(enc.transform(texts), expected, atol=1e-5)
    model.append(Normalize())
    np.testing.assert_allclose(np.linalg.norm(enc.transform(texts), axis=1), 1.0, atol=1e-5)
    assert model.training == (mode == "train")
