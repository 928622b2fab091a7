"""ContrastiveLearner: a projection trained on embedding pairs (losses, identity start,
partial_fit, saving, pickling)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from embetter.finetune import ContrastiveLearner, ContrastiveTuner
from tests._clustered import clustered


@pytest.fixture(scope="module")
def data():
    return clustered(120, 0)


@pytest.fixture(scope="module")
def pairs():
    X, y = clustered(200, 2)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(X), (2, 400))
    return X[i], X[j], (y[i] == y[j]).astype(np.float32)


@pytest.mark.parametrize("loss", ["cosine_margin", "cosine", "infonce"])
def test_learner_losses_train_and_predict(pairs, loss):
    X1, X2, y = pairs
    learner = ContrastiveLearner(epochs=5, loss=loss, random_state=0).fit(X1, X2, y)
    sim = learner.predict(X1, X2)
    assert isinstance(sim, np.ndarray) and sim.shape == (len(y),) and sim.dtype == np.float32
    assert np.all(np.abs(sim) <= 1 + 1e-5)
    assert learner.loss_curve_[-1] < learner.loss_curve_[0]
    if loss != "infonce":
        assert sim[y == 1].mean() > sim[y == 0].mean()


def test_learner_starts_from_the_identity(pairs):
    X1, X2, y = pairs
    learner = ContrastiveLearner(epochs=1, learning_rate=1e-9, random_state=0).fit(X1, X2, y)
    expected = X1 / np.linalg.norm(X1, axis=1, keepdims=True)
    assert np.allclose(learner.transform(X1), expected, atol=1e-5)
    assert ContrastiveLearner(shape_out=5, epochs=1).fit(X1, X2, y).transform(X1).shape[1] == 5


def test_learner_partial_fit_and_errors(pairs):
    X1, X2, y = pairs
    learner = ContrastiveLearner(batch_size=50, epochs=2, random_state=0)
    learner.partial_fit(X1[:200], X2[:200], y[:200]).partial_fit(X1[200:], X2[200:], y[200:])
    # 2 epochs' worth of steps per pair: 2 x 400 / 50, as fit on all 400 pairs would take
    assert learner.history_[-1]["step"] == 16 and learner.n_iter_ == len(learner.history_)
    with pytest.raises(ValueError, match="same number of items"):
        learner.fit(X1, X2[:-1], y)
    with pytest.raises(ValueError, match="y has 399 entries"):
        learner.fit(X1, X2, y[:-1])
    with pytest.raises(ValueError, match="0/1 labels"):
        learner.fit(X1, X2, y * 0.5)
    with pytest.raises(ValueError, match="requires y"):
        ContrastiveLearner().fit(X1, X2)
    with pytest.raises(ValueError, match="NaN"):
        learner.predict(np.full_like(X1, np.nan), X2)
    with pytest.raises(ValueError, match="X1 has 3 features, but this estimator .* 16"):
        learner.partial_fit(X1[:, :3], X2[:, :3], y)


def test_learner_save_load_is_exact_and_atomic(pairs, tmp_path, monkeypatch):
    X1, X2, y = pairs
    learner = ContrastiveLearner(epochs=3, random_state=0).fit(X1, X2, y)
    path = tmp_path / "learner.pt"
    learner.save(path)
    loaded = ContrastiveLearner.load(path)
    assert np.array_equal(loaded.transform(X1), learner.transform(X1))
    assert np.array_equal(loaded.predict(X1, X2), learner.predict(X1, X2))
    assert loaded.get_params() == {**learner.get_params(), "device": None}
    # a stream saved halfway keeps its replay memory and its carried fraction of a step
    stream = ContrastiveLearner(epochs=3, batch_size=64, random_state=0)
    stream.partial_fit(X1[:200], X2[:200], y[:200]).save(tmp_path / "stream.pt")
    resumed = ContrastiveLearner.load(tmp_path / "stream.pt")
    assert resumed._replay["seen"] == 200 and len(resumed._replay["rows"][0]) == 200
    assert resumed._step_credit == stream._step_credit
    (tmp_path / "stream.pt").unlink()

    def broken_save(obj, f):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        learner.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learner.pt"]  # no temp file left
    monkeypatch.undo()
    assert np.array_equal(ContrastiveLearner.load(path).transform(X1), learner.transform(X1))
    (tmp_path / "other.pt").write_bytes(b"not a learner")
    with pytest.raises(Exception):  # noqa: B017 - torch's unpickling error type varies
        ContrastiveLearner.load(tmp_path / "other.pt")
    # a torch file of someone else's: a clear error, not a KeyError from inside
    torch.save({"a": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a file written by ContrastiveLearner.save"):
        ContrastiveLearner.load(tmp_path / "foreign.pt")


_RAN = []


def _mark_ran():
    _RAN.append("ran")


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (_mark_ran, ())


def test_load_never_runs_code_from_the_file(tmp_path):
    """Weights only: a `.pt` that would run code when unpickled is refused before it can."""
    path = tmp_path / "evil.pt"
    torch.save({"format": "x", "payload": _RunsCodeWhenUnpickled()}, path)
    with pytest.raises(Exception):  # noqa: B017 - torch's UnpicklingError
        ContrastiveLearner.load(path)
    assert _RAN == []
    torch.load(path, weights_only=False)  # the file does run code when trusted: the test bites
    assert _RAN == ["ran"]


def test_learner_pickles_and_sets_output(pairs):
    X1, X2, y = pairs
    learner = ContrastiveLearner(epochs=2, random_state=0).fit(X1, X2, y)
    again = pickle.loads(pickle.dumps(learner))
    assert np.array_equal(again.transform(X1), learner.transform(X1))
    out = learner.set_output(transform="pandas").transform(X1)
    assert isinstance(out, pd.DataFrame) and out.columns[0] == "contrastivelearner0"


# -- the calls from the fine-tuning guide users learned from --------------------------------------


def test_contrastive_loss_name_is_deprecated_for_cosine_margin(pairs, data):
    """`loss="contrastive"` was our cosine-margin loss, not sentence-transformers'
    ContrastiveLoss: it warns, names the new value, and trains exactly as "cosine_margin"."""
    X1, X2, y = pairs
    new = ContrastiveLearner(epochs=3, loss="cosine_margin", random_state=0).fit(X1, X2, y)
    old = ContrastiveLearner(epochs=3, loss="contrastive", random_state=0)
    with pytest.warns(FutureWarning, match="loss='cosine_margin' for the same training") as w:
        old.fit(X1, X2, y)
    assert w[0].filename == __file__  # the warning points at the caller's line
    assert np.array_equal(old.transform(X1), new.transform(X1))
    assert ContrastiveLearner().loss == "cosine_margin"  # the default never warns
    Xt, yt = data
    tuner = ContrastiveTuner(epochs=2, loss="contrastive", random_state=0)
    with pytest.warns(FutureWarning, match="ContrastiveTuner.*cosine_margin") as w:
        tuner.fit(Xt, yt)
    assert w[0].filename == __file__
    same = ContrastiveTuner(epochs=2, loss="cosine_margin", random_state=0).fit(Xt, yt)
    assert np.array_equal(tuner.transform(Xt), same.transform(Xt))
    with pytest.raises(ValueError, match="loss"):
        ContrastiveLearner(loss="margin").fit(X1, X2, y)


def test_cosine_margin_pushes_dissimilar_pairs_only_above_the_margin():
    """The maths of "cosine_margin": similar pairs pulled to cos 1, dissimilar ones pushed only
    while their cosine similarity is above `margin` (sentence-transformers' ContrastiveLoss
    with distance 1 - cos and margin m is half of it with margin 1 - m)."""
    import torch

    from embetter.finetune._contrastive import _cosine_margin_loss

    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), dim=1)
    b = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]]), dim=1)
    cos = float((a[0] * b[0]).sum())  # 0.7071
    similar = torch.tensor([1.0, 0.0, 0.0])
    loss = float(_cosine_margin_loss(a, b, similar, margin=0.1))
    expected = ((1 - cos) ** 2 + (cos - 0.1) ** 2 + 0.0) / 3  # cos 0 is below the margin
    assert abs(loss - expected) < 1e-6
    # sentence-transformers' ContrastiveLoss (losses/contrastive.py), written out: its default
    # margin 0.5 on the distance would be a cosine margin of 0.5 here, not our default 0.1
    d = 1 - (a * b).sum(dim=1)
    st = 0.5 * (similar * d**2 + (1 - similar) * torch.relu(0.9 - d) ** 2)
    assert abs(2 * float(st.mean()) - loss) < 1e-6


def test_learner_save_returns_a_path_load_reads_and_keeps_a_numpy_seed(pairs, tmp_path,
                                                                         monkeypatch):
    """`~` is expanded on save and on load (what save returns loads back), and a numpy
    integer random_state survives the file (it was dropped to None)."""
    X1, X2, y = pairs
    monkeypatch.setenv("HOME", str(tmp_path))
    learner = ContrastiveLearner(epochs=2, random_state=np.int64(7)).fit(X1, X2, y)
    written = learner.save("~/learner.pt")
    assert written == str(tmp_path / "learner.pt") and (tmp_path / "learner.pt").is_file()
    for path in (written, "~/learner.pt"):
        back = ContrastiveLearner.load(path)
        assert back.random_state == 7
        assert np.array_equal(back.transform(X1), learner.transform(X1))
