"""Fixes from a review of the local encoders and the cache (session 27): each test failed on
the code before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from embetter.text import SentenceEncoder
from embetter.text._backends.auto import Plan

TEXTS = ["the cat likes the ball " * 10, "a dog"]


def assert_same(backend, got, expected):
    """Equal within float32 rounding; int8 ONNX within its quantisation (row cosine)."""
    assert got.shape == expected.shape
    if backend != "onnx":
        np.testing.assert_allclose(got, expected, atol=1e-4)
        return
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() > 0.99, cos


@pytest.fixture(scope="module")
def saved_with_truncate_dim(tiny_model_path, tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    path = str(tmp_path_factory.mktemp("trunc") / "model")
    SentenceTransformer(tiny_model_path, device="cpu", truncate_dim=16).save(path)
    return path


@pytest.mark.parametrize("backend", ["torch", "pipelined", "onnx"])
def test_a_model_saved_with_truncate_dim_is_cut_on_every_path(saved_with_truncate_dim, backend):
    from sentence_transformers import SentenceTransformer

    pytest.importorskip("onnxruntime")
    reference = SentenceTransformer(saved_with_truncate_dim, device="cpu").encode(TEXTS)
    enc = SentenceEncoder(saved_with_truncate_dim, backend=backend)
    got = enc.transform(TEXTS)
    # fast paths gave 32 columns; torch gave 16 but transform([]) and the names said 32
    assert got.shape == reference.shape == (2, 16)
    assert_same(backend, got, reference)
    assert enc.transform([]).shape == (0, 16) and len(enc.get_feature_names_out()) == 16
    assert enc.set_output(transform="pandas").transform(TEXTS).shape == (2, 16)


@pytest.mark.parametrize("backend", ["pipelined", "onnx", "openvino"])
def test_a_callers_model_given_a_shorter_max_seq_length_is_followed(tiny_model_path, backend):
    from sentence_transformers import SentenceTransformer

    pytest.importorskip("openvino" if backend == "openvino" else "onnxruntime")
    model = SentenceTransformer(tiny_model_path, device="cpu")
    enc = SentenceEncoder(model, backend=backend)
    full = enc.transform(TEXTS)
    assert_same(backend, full, model.encode(TEXTS))
    model.max_seq_length = 8
    short = model.encode(TEXTS)
    assert_same(backend, enc.transform(TEXTS), short)
    assert np.abs(short[0] - full[0]).max() > 0.1  # the long text's vector did move
    assert model.max_seq_length == 8
    # another model object with the same weights and the shorter length: the export cached on
    # disk for the full length was reused (its key left the length out; |diff| 0.5)
    other = SentenceTransformer(tiny_model_path, device="cpu")
    other.max_seq_length = 8
    assert_same(backend, SentenceEncoder(other, backend=backend).transform(TEXTS), short)


def test_auto_falls_back_to_torch_for_a_prompt_the_fast_path_cannot_add(tiny_model_path,
                                                                         monkeypatch):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    model[1].include_prompt = False  # pooling without the prompt's tokens
    # as if this machine's measurement had picked the fast path (measured without a prompt)
    monkeypatch.setattr(SentenceEncoder, "_auto_plan", lambda self: Plan("pipelined"))
    enc = SentenceEncoder(model, backend="auto", prompt="query: ")
    ref = SentenceEncoder(model, backend="torch", prompt="query: ").transform(TEXTS)
    np.testing.assert_allclose(enc.transform(TEXTS), ref, atol=1e-6)  # ValueError before
    assert enc.set_params(prompt=None)._plan() == Plan("pipelined")


def test_cpu_zero_is_a_cpu_for_the_exported_backends(tiny_model_path):
    pytest.importorskip("onnxruntime")
    # "backend='onnx' runs on the CPU, got device='cpu:0'"
    assert SentenceEncoder(tiny_model_path, backend="onnx", device="cpu:0").transform(
        ["a"]).shape[0] == 1


@pytest.mark.parametrize("damage", [b"not a database at all" * 50, b"SQLite format 3\x00"])
def test_a_damaged_cache_names_its_folder(tmp_path, damage):
    from embetter.utils import cached

    folder = tmp_path / "cache"
    enc = cached(folder, SentenceEncoder(backend="torch"))
    folder.mkdir()
    (folder / "cache.db").write_bytes(damage)
    with pytest.raises(ValueError, match="cache at .* is damaged .*delete that folder"):
        enc.transform(["hello"])  # sqlite3.DatabaseError: file is not a database


def test_the_auto_probe_builds_each_engine_once(tiny_model_path, monkeypatch, tmp_path):
    import embetter.text._backends as backends

    monkeypatch.setenv("EMBETTER_CACHE_DIR", str(tmp_path))  # measured here, not read back
    built = []
    original = backends.make_engine

    def counted(backend, precision, *args, **kwargs):
        built.append((backend, precision))
        return original(backend, precision, *args, **kwargs)

    monkeypatch.setattr(backends, "make_engine", counted)
    enc = SentenceEncoder(tiny_model_path, backend="auto")
    enc.transform(["a dog likes pizza"] * 4)
    # the probe's timed runs rebuilt an engine each (an ONNX session, an OpenVINO compile)
    # and picked the slowest-looking path by it
    assert len(built) == len(set(built)), built


def test_backend_says_torch_when_auto_falls_back_for_a_prompt(tiny_model_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    model[1].include_prompt = False
    monkeypatch.setattr(SentenceEncoder, "_auto_plan", lambda self: Plan("pipelined"))
    enc = SentenceEncoder(model, backend="auto", prompt="query: ")
    enc.transform(["a dog"])
    assert enc.backend_ == "torch"  # the measured path, which does not run, before
    enc.set_params(prompt=None).transform(["a dog"])
    assert enc.backend_ == "pipelined"
