import multiprocessing as mp

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from embetter.model import DifferenceClassifier
from embetter.text import LiteTextEncoder, SentenceEncoder
from embetter.utils import CachedEncoder, batched, cached, calc_distances


class CountingEncoder(SentenceEncoder):
    """Counts how many texts reach the real encoder."""

    calls: list = []

    def transform(self, X):
        X = list(X)
        CountingEncoder.calls.append(len(X))
        return super().transform(X)


def test_cache_encodes_only_misses(tiny_model_path, corpus, tmp_path):
    CountingEncoder.calls = []
    enc = cached(tmp_path / "c", CountingEncoder(tiny_model_path, device="cpu"))
    assert isinstance(enc, CachedEncoder)
    first = enc.transform(corpus[:10])
    again = enc.transform(corpus[5:15] + corpus[5:15])
    assert CountingEncoder.calls == [10, 5]  # one call, for the 5 new texts, each once
    np.testing.assert_array_equal(again[:5], first[5:])
    np.testing.assert_allclose(again, SentenceEncoder(tiny_model_path).transform(
        corpus[5:15] + corpus[5:15]), atol=1e-6)
    assert enc.transform([]).shape == (0, 32)


def test_cache_survives_restart_and_separates_encoders(tiny_model_path, corpus, tmp_path):
    path = tmp_path / "c"
    a = cached(path, SentenceEncoder(tiny_model_path, device="cpu")).transform(corpus[:4])
    reopened = cached(path, SentenceEncoder(tiny_model_path, device="cpu"))
    CountingEncoder.calls = []
    np.testing.assert_array_equal(reopened.transform(corpus[:4]), a)
    cut = cached(path, SentenceEncoder(tiny_model_path, device="cpu", truncate_dim=4))
    assert cut.transform(corpus[:4]).shape == (4, 4)  # a different encoder, different keys
    assert clone(reopened).path == path


def test_cache_path_must_be_a_folder(corpus, tmp_path):
    enc = LiteTextEncoder(n_components=4, random_state=0).fit(corpus)
    with pytest.raises(TypeError, match="path must be the cache's folder"):
        cached(None, enc).transform(corpus[:2])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="path must be a folder for the cache, got the file"):
        cached(tmp_path / "file", enc).transform(corpus[:2])


def test_a_model_saved_again_in_place_is_a_new_model(corpus, tmp_path):
    import shutil

    from conftest import build_tiny_model

    folder = tmp_path / "model"
    a = build_tiny_model(tmp_path / "a", seed=0)
    b = build_tiny_model(tmp_path / "b", seed=1)
    shutil.copytree(a, folder)
    first = SentenceEncoder(str(folder), device="cpu")  # held: its model stays loaded
    old = cached(tmp_path / "c", first).transform(corpus[:3])
    np.testing.assert_array_equal(old, first.transform(corpus[:3]))
    shutil.rmtree(folder)
    shutil.copytree(b, folder)  # fine-tuned and saved over the same folder
    fresh = SentenceEncoder(str(folder), device="cpu").transform(corpus[:3])
    assert not np.allclose(fresh, old)  # not the old model, still loaded for `first`
    # the encoder that had loaded the old model loads the new one: its cache never mixes them
    np.testing.assert_array_equal(cached(tmp_path / "c", first).transform(corpus[3:5]),
                                  SentenceEncoder(str(folder), device="cpu").transform(
                                      corpus[3:5]))
    np.testing.assert_array_equal(first.transform(corpus[:3]), fresh)
    np.testing.assert_array_equal(
        cached(tmp_path / "c", SentenceEncoder(str(folder), device="cpu")).transform(
            corpus[:3]), fresh)  # not the old model's cached rows


def test_cache_key_is_hashed_once_per_state_of_the_encoder(corpus, tmp_path, monkeypatch):
    import joblib

    from embetter.finetune import FeedForwardTuner

    hashed = []
    real_hash = joblib.hash
    monkeypatch.setattr(joblib, "hash", lambda obj, *a, **k: hashed.append(1) or real_hash(obj))
    enc = cached(tmp_path / "c", LiteTextEncoder(n_components=8, random_state=0).fit(corpus))
    first = enc.transform(corpus[:5])
    enc.transform(corpus[:5])
    enc.transform(corpus[5:9])
    assert len(hashed) == 1  # three calls, one fitted state: one hash
    enc.encoder.set_params(n_components=6).fit(corpus)  # set_params + refit: a new key
    moved = enc.transform(corpus[:5])
    assert len(hashed) == 2 and moved.shape == (5, 6) and first.shape == (5, 8)
    enc.fit(corpus[:100])  # a refit through the wrapper, same parameters: new fitted state
    enc.transform(corpus[:5])
    assert len(hashed) == 3

    # a stream: partial_fit moves counters (n_iter_, loss_curve_), so the key follows it
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 6)).astype(np.float32), np.arange(40) % 2
    tuner = FeedForwardTuner(n_epochs=1, random_state=0).partial_fit(X, y, classes=[0, 1])
    from embetter._cache_key import _state_signature

    before, held = _state_signature(tuner)
    assert _state_signature(tuner)[0] == before
    tuner.partial_fit(X, y)
    assert _state_signature(tuner)[0] != before


def _write(args):
    path, model, texts = args
    return cached(path, SentenceEncoder(model, device="cpu")).transform(texts)


def test_cache_two_processes(tiny_model_path, corpus, tmp_path, monkeypatch):
    path = str(tmp_path / "c")
    with mp.get_context("spawn").Pool(2) as pool:
        outs = pool.map(_write, [(path, tiny_model_path, corpus[:30]),
                                 (path, tiny_model_path, corpus[10:40])])
    np.testing.assert_allclose(outs[0][10:], outs[1][:20], atol=1e-6)
    # both processes' entries are on disk: reading all 40 texts encodes nothing
    def refuse(self, X):
        raise AssertionError(f"encoded {len(list(X))} texts that should have been cached")

    monkeypatch.setattr(SentenceEncoder, "transform", refuse)
    out = cached(path, SentenceEncoder(tiny_model_path, device="cpu")).transform(corpus[:40])
    np.testing.assert_array_equal(out[:30], outs[0])


def test_batched():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []
    with pytest.raises(ValueError, match="positive"):
        list(batched([1], 0))


def test_calc_distances(corpus):
    enc = LiteTextEncoder(n_components=8, random_state=0).fit(corpus)
    d = calc_distances(["the cat likes pizza", "a pilot fixes old cars"], ["the cat likes pizza"],
                       enc, aggregate=np.min)
    assert d.shape == (2,) and d[0] < 1e-5 < d[1]


def test_difference_classifier(corpus):
    enc = LiteTextEncoder(n_components=16, random_state=0).fit(corpus)
    X1 = corpus[:40]
    X2 = [t if i % 2 else corpus[-1 - i] for i, t in enumerate(X1)]
    y = [i % 2 for i in range(40)]
    clf = DifferenceClassifier(enc)
    assert clf.get_params()["clf_head"] is None
    clf.fit(X1, X2, y)
    assert (clf.predict(X1, X2) == y).mean() > 0.9
    assert clf.predict_proba(X1, X2).shape == (40, 2)
    with pytest.raises(ValueError, match="same number"):
        clf.predict(X1, X2[:3])
    # a fitted encoder: used as it is, as a copy (a refit of `enc` leaves the classifier)
    assert clf.enc_ is not enc and clf.score(X1, X2, y) > 0.9
    np.testing.assert_array_equal(clf.enc_.transform(X1), enc.transform(X1))
    with pytest.raises(NotFittedError):
        DifferenceClassifier(enc).predict(X1, X2)
    twin = clone(clf).fit(X1, X2, y)  # the clone's encoder is unfitted: fitted as a copy
    assert twin.enc_ is not twin.enc and not hasattr(twin.enc, "svd_")
    assert twin.score(X1, X2, y) > 0.9
    # a refit refused half-way (its encoder fitted, y then refused) keeps the previous fit
    before, encoder = twin.predict_proba(X1, X2), twin.enc_
    with pytest.raises(ValueError, match="y"):
        twin.fit(X1, X2, y[:-1])
    assert twin.enc_ is encoder
    np.testing.assert_array_equal(twin.predict_proba(X1, X2), before)
    lite = LiteTextEncoder(n_components=8, random_state=0).fit(corpus)
    before = lite.transform(corpus[:3])
    with pytest.raises(ValueError, match="no characters to learn from"):
        lite.fit(["", " "])  # refused after the vectorizer was recorded
    np.testing.assert_array_equal(lite.transform(corpus[:3]), before)
