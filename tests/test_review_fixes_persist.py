"""Fixes from a review of saving, loading and the disk cache: each test failed on the code
before its fix."""

from __future__ import annotations

import gc
import os
import pickle
import sqlite3
import weakref
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin

from embetter.finetune import ContrastiveLearner
from embetter.utils import cached, load_skops
from tests._sbert_helpers import tuner


class LengthScaler(TransformerMixin, BaseEstimator):
    """Text lengths over their mean in `fit`: a fitted array that each fit replaces."""

    def fit(self, X, y=None):
        self.mean_ = np.full(2, float(np.mean([len(t) for t in X])))
        return self

    def transform(self, X):
        return np.array([[len(t), len(t.split())] for t in X], dtype=np.float32) / self.mean_


def test_a_refit_array_at_the_old_ones_address_is_a_new_cache_key(tmp_path):
    """The cache compared a fitted array by its id: a refit's new array, put where the freed
    old one was, kept the stale key and served the earlier fit's vectors (32 refits in 40)."""
    enc = cached(tmp_path / "c", LengthScaler())
    for k in range(1, 41):
        enc.fit(["y" * 99])  # two fits: the second array may take the first one's place
        enc.fit(["x" * k])
        np.testing.assert_allclose(enc.transform(["hello world"]), [[11 / k, 2 / k]],
                                   rtol=1e-6)
    kept = weakref.ref(enc.encoder.mean_)
    enc.fit(["y" * 50])  # the old array is replaced, but held while the key naming it is
    gc.collect()
    assert kept() is not None


def test_a_cache_the_process_cannot_write_is_not_called_damaged(tmp_path, monkeypatch):
    """A read-only cache raised "damaged; delete that folder": its files are sound."""
    import diskcache

    def readonly(*args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(diskcache, "Cache", readonly)
    with pytest.raises(PermissionError, match="cannot be written") as info:
        cached(tmp_path / "c", LengthScaler().fit(["ab"])).transform(["a"])
    assert "damaged" not in str(info.value) and "delete" not in str(info.value)


def test_load_skops_names_a_file_that_is_not_one(tmp_path):
    """A truncated file, a zip without the schema, a schema of another shape: BadZipFile,
    KeyError and AttributeError from inside skops."""
    from sklearn.linear_model import LogisticRegression

    from embetter.utils import save_skops

    good = tmp_path / "ok.skops"
    save_skops(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), good)
    data = good.read_bytes()
    (tmp_path / "half.skops").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.skops").write_text("hello")
    with zipfile.ZipFile(tmp_path / "noschema.skops", "w") as z:
        z.writestr("a.txt", "x")
    with zipfile.ZipFile(tmp_path / "list.skops", "w") as z:
        z.writestr("schema.json", "[1, 2]")
    for name in ("half", "text", "noschema", "list"):
        with pytest.raises(ValueError, match="not a complete file written by save_skops"):
            load_skops(tmp_path / f"{name}.skops")
    with pytest.raises(FileNotFoundError):
        load_skops(tmp_path / "missing.skops")
    assert load_skops(good).predict([[1.0]])[0] == 1


def _stream(learner, X1, X2, y, start, stop, size=30):
    for i in range(start, stop, size):
        learner.partial_fit(X1[i:i + size], X2[i:i + size], y[i:i + size])
    return learner


def test_a_saved_learner_streams_on_as_the_pickled_one(tmp_path):
    """`save` left out the stream's step credit: the loaded learner's next calls trained
    other step counts than the pickled one's (max difference 0.007)."""
    rng = np.random.default_rng(0)
    X1, X2 = rng.normal(size=(2, 200, 8)).astype(np.float32)
    y = (rng.random(200) > 0.5).astype(float)
    learner = ContrastiveLearner(random_state=0, batch_size=16, epochs=3, device="cpu")
    learner.partial_fit(X1[:10], X2[:10], y[:10])
    learner.save(tmp_path / "l.pt")
    loaded = ContrastiveLearner.load(tmp_path / "l.pt")
    copied = pickle.loads(pickle.dumps(learner))
    a = _stream(copied, X1, X2, y, 10, 200).transform(X1)
    b = _stream(loaded, X1, X2, y, 10, 200).transform(X1)
    np.testing.assert_array_equal(a, b)


def test_contrastive_learner_load_names_a_file_missing_a_part(tmp_path):
    import torch

    torch.save({"format": "embetter.ContrastiveLearner/1"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a complete file.*params"):
        ContrastiveLearner.load(tmp_path / "x.pt")


def test_sbert_tuner_streams_on_after_its_device_is_set(tiny_model_path, labelled):
    """A tuner streamed on a GPU could not go on on a CPU-only machine: its `device` was
    fixed for the stream, so `set_params(device="cpu")` was refused."""
    texts, y = labelled
    stream = tuner(tiny_model_path, n_neg=2, n_pos=0, refit_growth=None, device=None)
    stream.partial_fit(texts[:12], y[:12], classes=np.unique(y))
    stream._stream_params["device"] = "cuda"  # what a tuner started on a GPU holds
    stream.set_params(device="cpu")
    model = stream.model_
    stream.partial_fit(texts[12:], y[12:])
    assert stream.model_ is model and stream.learner_.device == "cpu"
    assert stream.n_iter_ == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill is simulated in a forked child")
def test_a_folder_resave_killed_midway_leaves_a_folder_at_the_target(tmp_path):
    """A re-save moved the old folder aside, then the new one in: a process killed between
    the two left no folder at the target. Where Linux swaps two folders in one step, the
    target holds the old folder or the new one."""
    import ctypes

    from embetter._atomic import atomic_path

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    renameat2 = getattr(ctypes.CDLL(None), "renameat2", None)
    if renameat2 is None or renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:
        pytest.skip("no atomic swap of two folders here (renameat2 RENAME_EXCHANGE): the "
                    "two-rename fallback has the window this test kills in")
    target = tmp_path / "model"
    with atomic_path(target, folder=True) as tmp:
        Path(tmp, "weights").write_text("old")
    pid = os.fork()
    if pid == 0:  # the child: killed after the save's first rename, before any other
        real, calls = os.replace, []

        def killed(*args, **kwargs):
            if calls:
                os._exit(0)
            calls.append(args)
            return real(*args, **kwargs)

        os.replace = killed
        try:
            with atomic_path(target, folder=True) as tmp:
                Path(tmp, "weights").write_text("new")
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    assert (target / "weights").read_text() == "new"  # (swapped in one step: no rename)
    with atomic_path(target, folder=True) as tmp:  # and a later save replaces it
        Path(tmp, "weights").write_text("newer")
    assert (target / "weights").read_text() == "newer"


def test_a_round_tripped_encoder_keeps_its_cache_key(tmp_path):
    """A fitted LiteTextEncoder's SVD holds a strided view, which a pickle gives back
    contiguous, and a skops file gives a RandomState another unused seed sequence: the key
    moved, and the whole cache missed after a save and load."""
    from embetter._cache_key import _content_hash
    from embetter.text import LiteTextEncoder
    from embetter.utils import save_skops

    texts = [f"text number {i} about cats and dogs {i % 7}" for i in range(300)]
    for seed in (0, np.random.RandomState(0)):
        enc = LiteTextEncoder(n_components=20, random_state=seed).fit(texts)
        save_skops(enc, tmp_path / "e.skops")
        for back in (pickle.loads(pickle.dumps(enc)), load_skops(tmp_path / "e.skops")):
            assert _content_hash(back) == _content_hash(enc)
    other = LiteTextEncoder(n_components=20, random_state=1).fit(texts)
    assert _content_hash(other) != _content_hash(enc)



def test_a_learners_first_call_copies_no_weights_to_put_back(tiny_model_path, pairs):
    """Each call kept a CPU copy of every trained weight, to put back after a failure; a
    first call's model is a copy the failure drops whole (a model's size in memory, spent
    for nothing). A later call still keeps one, and a failure there puts it back."""
    import torch

    from tests._sbert_helpers import learner

    X1, X2, y = pairs
    fitted = learner(tiny_model_path)
    calls, original = [], fitted._trained_parameters
    fitted._trained_parameters = lambda: calls.append(1) or original()
    fitted.partial_fit(X1[:16], X2[:16], y[:16])
    assert calls == []
    before = fitted.transform(X1[:3])

    def fail(*args, **kwargs):
        with torch.no_grad():
            for p in fitted.model_.parameters():
                p.fill_(0.5)
        raise KeyboardInterrupt

    import embetter.finetune._trainer as trainer

    real, trainer.train = trainer.train, fail
    try:
        with pytest.raises(KeyboardInterrupt):
            fitted.partial_fit(X1[16:32], X2[16:32], y[16:32])
    finally:
        trainer.train = real
    assert calls  # the later call kept the weights, and put them back
    np.testing.assert_array_equal(fitted.transform(X1[:3]), before)


def test_a_cached_callers_model_is_not_hashed_at_every_call(tiny_model_path, tmp_path,
                                                            monkeypatch):
    """The encoder's record of what it loaded is a tuple made again at each access: named by
    its id (and held by the key's memo), it was a new state at every call, and a cache miss
    hashed all the model's weights again (0.5 s a call for MiniLM)."""
    from sentence_transformers import SentenceTransformer

    import embetter._cache as cache
    from embetter.text import SentenceEncoder

    hashed = []
    real = cache._content_hash
    monkeypatch.setattr(cache, "_content_hash", lambda enc: hashed.append(1) or real(enc))
    model = SentenceTransformer(tiny_model_path, device="cpu").eval()
    enc = cached(tmp_path / "c", SentenceEncoder(model, device="cpu"))
    counts = []
    for i in range(6):
        enc.transform([f"text number {i}", "the same text"])
        counts.append(len(hashed))
    # (hashed before the model is loaded, and once with it: then never again)
    assert counts[1:] == [counts[1]] * 5


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_sbert_tuner_streams_on_across_a_device_change(tiny_model_path, labelled):
    """A stream's weight average stayed on the old device when set_params moved the model:
    the call's end mixed tensors of two devices (RuntimeError)."""
    texts, y = labelled
    stream = tuner(tiny_model_path, n_neg=2, n_pos=0, refit_growth=None, device="cpu")
    stream.partial_fit(texts[:8], y[:8], classes=np.unique(y))
    stream.set_params(device="cuda").partial_fit(texts[8:16], y[8:16])
    stream.set_params(device="cpu").partial_fit(texts[16:], y[16:])
    assert stream.n_iter_ == 3 and stream.transform(texts[:2]).shape[0] == 2


def test_a_callers_model_trained_in_place_is_a_new_cache_key(tiny_model_path, tmp_path):
    """With the key's signature stable (above), a caller's model whose weights changed in
    place kept its key and the cache served its old vectors: the model's weights are in the
    signature."""
    import torch
    from sentence_transformers import SentenceTransformer

    from embetter.text import SentenceEncoder

    model = SentenceTransformer(tiny_model_path, device="cpu").eval()
    enc = cached(tmp_path / "c", SentenceEncoder(model, device="cpu"))
    enc.transform(["a dog hates the rain"])  # (the key is settled once the model is loaded)
    before = enc.transform(["the cat likes pizza"])
    np.testing.assert_array_equal(enc.transform(["the cat likes pizza"]), before)  # a hit
    model.train()  # a training step's way: train mode, weights moved in place, eval mode
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    after = enc.transform(["the cat likes pizza"])
    np.testing.assert_allclose(after, SentenceEncoder(model).transform(["the cat likes pizza"]),
                               atol=1e-5)
    assert not np.allclose(after, before, atol=1e-3)


def test_an_unstorable_recursion_is_reported_without_its_traceback(tmp_path):
    """skops recursing too deep (an SbertTuner built on a SentenceTransformer object, or any
    deep structure) raised our clear TypeError chained to a RecursionError whose traceback
    ran to thousands of lines; the message names it, the chain is dropped."""
    from embetter.utils import save_skops

    deep = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(TypeError, match="RecursionError") as caught:
        save_skops(deep, tmp_path / "deep.skops")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not (tmp_path / "deep.skops").exists()
