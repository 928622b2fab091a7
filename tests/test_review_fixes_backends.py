"""Findings of a review of the encoding speed paths (backend="auto" and its cache, the ONNX
export, the pipelined engine); each test failed before its fix."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest

from embetter.text import MatryoshkaEncoder, SentenceEncoder
from embetter.text._backends import auto
from embetter.text._backends.auto import Plan
from tests._threads import ForeignWarningsBlock

TEXTS = ["a dog runs in the park", "the cat sleeps", "refund my order please"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBETTER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def two_paths(monkeypatch):
    """The probe times torch and the pipelined float32 path only (no exports: quick)."""
    monkeypatch.setattr(auto, "candidates",
                        lambda *a, **k: [Plan("torch"), Plan("pipelined", "float32")])
    monkeypatch.setattr(auto, "BUDGET_S", 30.0)


def test_auto_takes_a_numpy_batch_size_as_grid_search_hands_it(tiny_model_path, cache_dir,
                                                               two_paths):
    key = auto.cache_key("cpu", np.int64(16), "model-abc")
    assert key["batch_size"] == 16 and json.dumps(key)  # ("int64 is not JSON serializable")
    enc = SentenceEncoder(tiny_model_path, device="cpu", backend="auto",
                          batch_size=np.int64(16))
    assert enc.transform(TEXTS).shape == (3, 32)


@pytest.mark.parametrize("make", [
    lambda p: SentenceEncoder(p, backend="auto", truncate_dim=0),
    lambda p: SentenceEncoder(p, backend="onnx", truncate_dim=-3),
    lambda p: MatryoshkaEncoder(p, backend="auto", dim=0),
])
def test_a_bad_width_is_refused_before_any_probe_or_export(tiny_model_path, cache_dir,
                                                           monkeypatch, make):
    def never(*a, **k):
        raise AssertionError("probed or exported before the width was checked")

    monkeypatch.setattr(auto, "resolve", never)
    monkeypatch.setattr("embetter.text._backends._export.export_onnx", never)
    with pytest.raises(ValueError, match=r"(truncate_dim|dim) must be .*an int between 1"):
        make(tiny_model_path).transform(TEXTS)
    assert not cache_dir.exists() or not list(cache_dir.rglob("*.json"))


def test_the_probe_runs_without_the_encoders_prompt_and_at_the_full_width(
        tiny_model_path, cache_dir, two_paths, monkeypatch):
    """The choice is cached for the model: a probe with one encoder's prompt (a prompt the
    pooling leaves out made every fast path fail) or width (at width 1 int8 lost its cosine)
    decided for every other encoder of that model."""
    from sentence_transformers import SentenceTransformer

    seen = {}
    real = auto.resolve

    def spy(name, kind, batch_size, build, **kw):
        seen["torch"] = build(Plan("torch"))(TEXTS)
        seen["pipelined"] = build(Plan("pipelined", "float32"))(TEXTS)
        return real(name, kind, batch_size, build, **kw)

    monkeypatch.setattr(auto, "resolve", spy)
    enc = SentenceEncoder(tiny_model_path, device="cpu", backend="auto", prompt="query: ",
                          truncate_dim=2)
    assert enc.transform(TEXTS).shape == (3, 2)
    plain = SentenceTransformer(tiny_model_path, device="cpu").encode(TEXTS)
    for name in ("torch", "pipelined"):
        assert seen[name].shape == (3, 32)
        np.testing.assert_allclose(seen[name], plain, atol=1e-5)


def test_the_onnx_export_leaves_other_warnings_alone(tiny_model_path, tmp_path, monkeypatch):
    """Another thread's catch_warnings that begins inside the export and ends after it puts
    the export's filters back for good: they were "ignore everything"."""
    import torch
    from sentence_transformers import SentenceTransformer

    from embetter.text._backends import _export
    from embetter.text._backends._tokenize import TextTokenizer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    other = ForeignWarningsBlock()
    real = torch.onnx.export

    def export(*args, **kwargs):
        other.begin()
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
    with warnings.catch_warnings():  # (this test's own: the process's filters come back)
        _export._export_graph(model, TextTokenizer.from_sentence_transformer(model),
                              tmp_path / "model.onnx")
        other.end()
        with warnings.catch_warnings(record=True) as shown:
            warnings.warn("a warning of the user's own", UserWarning, stacklevel=1)
        assert [str(w.message) for w in shown] == ["a warning of the user's own"]


@pytest.mark.parametrize("saved, asked", [("float16", "bfloat16"), ("bfloat16", "float16")])
def test_pipelined_runs_a_model_saved_in_the_other_half(tiny_model_path, tmp_path, saved,
                                                        asked):
    import torch
    from sentence_transformers import SentenceTransformer

    folder = str(tmp_path / saved)
    SentenceTransformer(tiny_model_path, device="cpu").to(getattr(torch, saved)).save(folder)
    got = SentenceEncoder(folder, device="cpu", backend="pipelined",
                          precision=asked).transform(TEXTS)  # ("mixed dtype (CPU)")
    full = SentenceEncoder(tiny_model_path, device="cpu", backend="torch").transform(TEXTS)
    assert got.shape == full.shape and (np.sum(got * full, axis=1) > 0.98).all()


def test_unusable_choice_files_are_ignored_and_unwritable_ones_warn(cache_dir, caplog):
    key = auto.cache_key("cpu", None, "model-abc")
    path = auto.cache_file(key)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"key": key, "choice": {"backend": ["onnx"], "precision": None,
                                                       "max_tokens": None}, "probe": {}}))
    assert auto.read_choice(path, key, [Plan("torch")]) is None  # (unhashable type: 'list')
    path.unlink()
    path.mkdir()  # (a folder where the file goes)
    with caplog.at_level(logging.WARNING, logger="embetter"):
        assert auto.write_choice(path, key, Plan("torch"), {}) is False
    assert "could not save its choice" in caplog.text


def test_the_choice_is_keyed_on_embetters_version_too():
    import embetter

    assert auto.cache_key("cpu", None, "model-abc")["embetter"] == embetter.__version__


def test_a_relative_xdg_cache_home_is_ignored(monkeypatch, tmp_path):
    from embetter.text._models import cache_root

    monkeypatch.delenv("EMBETTER_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache_root() == tmp_path / ".cache" / "embetter"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "embetter"
