"""Fixes from a review of SentenceEncoder against `SentenceTransformer.encode` (session 28):
each test failed on the code before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embetter.text import SentenceEncoder
from embetter.text._backends import row_cosines

TEXTS = ["the cat likes the ball", "a dog", "rain is coming to the station today", ""]


@pytest.fixture(scope="module", params=["float16", "bfloat16"])
def saved_in_half(request, tiny_model_path, tmp_path_factory):
    """The tiny model saved in a half precision (transformers 5 loads it in that dtype)."""
    import torch
    from sentence_transformers import SentenceTransformer

    path = str(tmp_path_factory.mktemp(request.param) / "model")
    SentenceTransformer(tiny_model_path, device="cpu").to(getattr(torch, request.param)).save(path)
    return path


@pytest.mark.parametrize("backend, precision", [("onnx", None), ("onnx", "float32"),
                                                ("openvino", None)])
def test_a_model_saved_in_half_precision_exports(saved_in_half, backend, precision):
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(saved_in_half, device="cpu").encode(TEXTS)
    # before: onnxruntime's NOT_IMPLEMENTED / InvalidGraph from inside the export's check
    got = SentenceEncoder(saved_in_half, device="cpu", backend=backend,
                          precision=precision).transform(TEXTS)
    assert row_cosines(got, ref).min() > 0.99


def test_float32_named_on_pipelined_runs_a_half_precision_model_in_float32(saved_in_half):
    import torch
    from sentence_transformers import SentenceTransformer

    wide = SentenceTransformer(saved_in_half, device="cpu",
                               model_kwargs={"dtype": torch.float32}).encode(TEXTS)
    got = SentenceEncoder(saved_in_half, device="cpu", backend="pipelined",
                          precision="float32").transform(TEXTS)
    np.testing.assert_allclose(got, wide, atol=1e-5)  # before: the saved dtype's vectors
    # the default still runs the model as sentence-transformers does
    same = SentenceTransformer(saved_in_half, device="cpu").encode(TEXTS)
    np.testing.assert_allclose(SentenceEncoder(saved_in_half, device="cpu").transform(TEXTS),
                               same, atol=1e-5)


@pytest.fixture(scope="module")
def prompt_left_out(tiny_model_path, tmp_path_factory):
    """A model with a default prompt whose pooling leaves the prompt's tokens out."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    model.prompts = {"query": "query: "}
    model.default_prompt_name = "query"
    model[1].include_prompt = False
    path = str(tmp_path_factory.mktemp("prompt") / "model")
    model.save(path)
    return path


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_no_prompt_asked_for_is_not_refused_by_the_exports_check(prompt_left_out, backend):
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(prompt_left_out, device="cpu").encode(TEXTS, prompt="")
    # before: "backend='onnx' does not support a prompt with a model whose pooling excludes"
    got = SentenceEncoder(prompt_left_out, device="cpu", backend=backend, prompt="",
                          precision="float32").transform(TEXTS)
    assert row_cosines(got, ref).min() > 0.999


def test_a_left_padding_tokenizer_is_named(tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    path = tmp_path / "left"
    SentenceTransformer(tiny_model_path, device="cpu").save(str(path))
    config_file = next(Path(path).rglob("tokenizer_config.json"))
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "padding_side": "left"}))
    with pytest.raises(ValueError, match="padding_side='left'"):
        SentenceEncoder(str(path), device="cpu", backend="pipelined").transform(TEXTS)
