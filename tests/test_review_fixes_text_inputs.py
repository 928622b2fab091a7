"""Fixes from a review of `embetter.text` as a sentence-transformers user (session 36): each
test failed on the code before its fix, except the cache's, a guard of the same fix (the
cache's state signature sampled the weights as the exports' did), and the strided sample's,
a speed fix whose guard keeps every signature as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embetter.text import SentenceEncoder

TEXTS = ["the cat likes the ball", "a dog hates pizza", "our team predicts the weather"]


def first_token(st) -> int:
    """The id of the first word piece of TEXTS[0] (after the [CLS] token)."""
    return int(st.tokenizer(TEXTS[0])["input_ids"][1])


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_an_export_follows_an_edit_of_one_tokens_row(tiny_model_path, backend):
    # the signature sampled every 1009th weight: the edited row was missed, the old export ran
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(tiny_model_path, device="cpu").eval()
    enc = SentenceEncoder(st, backend=backend, precision="float32")
    enc.transform(TEXTS)
    row = first_token(st)
    with torch.no_grad():
        weight = st[0].auto_model.embeddings.word_embeddings.weight
        weight[row] = torch.randn(weight.shape[1], generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(enc.transform(TEXTS), st.encode(TEXTS), atol=1e-5)


def test_a_cached_encoder_of_a_callers_model_follows_an_edit_of_one_row(tiny_model_path,
                                                                         tmp_path):
    import torch
    from sentence_transformers import SentenceTransformer

    from embetter.utils import cached

    st = SentenceTransformer(tiny_model_path, device="cpu").eval()
    enc = cached(tmp_path, SentenceEncoder(st))
    before = enc.transform(TEXTS)
    with torch.no_grad():  # (not a shift of the row: the embeddings' LayerNorm undoes it)
        weight = st[0].auto_model.embeddings.word_embeddings.weight
        weight[first_token(st)] = torch.randn(weight.shape[1],
                                              generator=torch.Generator().manual_seed(0))
    after = enc.transform(TEXTS)
    np.testing.assert_allclose(after, st.encode(TEXTS), atol=1e-5)
    assert np.abs(after[0] - before[0]).max() > 1e-2


def test_float32_on_the_torch_backend_refuses_a_half_model(tiny_model_path, tmp_path):
    # it was accepted and the model ran in float16 all the same
    from sentence_transformers import SentenceTransformer

    half = str(tmp_path / "half")
    SentenceTransformer(tiny_model_path, device="cpu").half().save(half)
    with pytest.raises(ValueError, match="precision='float32' with backend='torch'.*float16"):
        SentenceEncoder(half, backend="torch", precision="float32").transform(TEXTS)
    full = SentenceEncoder(tiny_model_path, backend="torch", precision="float32")
    assert full.transform(TEXTS).dtype == np.float32  # a float32 model runs as before


def test_a_lone_surrogate_is_named_with_its_row(tiny_model_path):
    # the tokenizer failed with "TextEncodeInput must be Union[...]", naming no row
    broken = json.loads('"broken emoji \\ud83d"')
    enc = SentenceEncoder(tiny_model_path)
    named = r"X\[3\] is not valid Unicode text: it holds the lone surrogate"
    with pytest.raises(ValueError, match=named):
        enc.transform([*TEXTS, broken])
    assert enc.transform(["caf\u00e9 na\u00efve \U0001F600"]).shape[0] == 1  # (valid non-ASCII)


def test_a_pyarrow_column_is_read_as_texts(tiny_model_path):
    # its to_numpy takes no dtype: "to_numpy() got an unexpected keyword argument 'dtype'"
    pa = pytest.importorskip("pyarrow")
    enc = SentenceEncoder(tiny_model_path)
    expected = enc.transform(TEXTS)
    np.testing.assert_array_equal(enc.transform(pa.array(TEXTS)), expected)
    column = pa.table({"text": TEXTS})["text"]
    np.testing.assert_array_equal(enc.transform(column), expected)
    with pytest.raises(ValueError, match=r"X\[1\] is missing"):
        enc.transform(pa.array(["a", None]))


def test_through_the_cache_the_bad_text_is_named_at_its_own_row(tiny_model_path, tmp_path):
    # the encoder saw only the texts not cached: "X[0] is not valid Unicode text" for X[2]
    from embetter.utils import cached

    broken = json.loads('"broken emoji \\ud83d"')
    enc = cached(tmp_path, SentenceEncoder(tiny_model_path))
    enc.transform(TEXTS[:2])
    with pytest.raises(ValueError, match=r"X\[2\] is not valid Unicode text"):
        enc.transform([*TEXTS[:2], broken])


def test_a_model_loaded_under_inference_mode_is_cached(tiny_model_path, tmp_path):
    # its tensors count no in-place changes: reading the counter raised a RuntimeError
    import torch
    from sentence_transformers import SentenceTransformer

    from embetter.utils import cached

    with torch.inference_mode():
        st = SentenceTransformer(tiny_model_path, device="cpu")
    got = cached(tmp_path, SentenceEncoder(st)).transform(TEXTS)
    np.testing.assert_allclose(got, SentenceEncoder(st).transform(TEXTS), atol=1e-6)


def test_a_cached_pipeline_starting_with_the_tfidf_encoder_takes_any_str(tmp_path):
    import os

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    from embetter.text import LiteTextEncoder
    from embetter.utils import cached

    text = os.fsdecode(b"caf\xe9 menu")  # (a file name read with surrogateescape)
    pipe = make_pipeline(LiteTextEncoder(n_components=2, random_state=0), Normalizer())
    pipe.fit([text, *TEXTS])
    np.testing.assert_allclose(cached(tmp_path, pipe).transform([text]), pipe.transform([text]),
                               atol=1e-6)


def test_weights_signature_samples_a_strided_view_as_its_flat_copy():
    """A non-contiguous parameter (a transposed matrix, a slice) is sampled by position, not
    copied whole first (87 ms for a transposed 12 M-value one, now 1.6 ms): the values read,
    and so every cache key, are those of the C-order flattening as before."""
    import hashlib
    import itertools

    import torch

    from embetter.text._model_copies import weights_signature

    def flattened(model):  # the signature as it was computed before (reshape, then stride)
        h = hashlib.blake2b(digest_size=16)
        for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
            marks = (t.data_ptr(), getattr(t, "_version", 0))
            h.update(f"{name}{tuple(t.shape)}{t.dtype}{marks};".encode())
            sample = t.detach().reshape(-1)[::1009].clone(memory_format=torch.contiguous_format)
            h.update(sample.view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.randn(300, 4000).t())
    model.v = torch.nn.Parameter(torch.randn(5, 7)[:, ::2])
    model.s = torch.nn.Parameter(torch.tensor(3.0))
    model.register_buffer("b", torch.arange(12.0).reshape(3, 4).t())
    assert weights_signature(model) == flattened(model)
