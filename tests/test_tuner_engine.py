"""The training engine under FeedForwardTuner and ContrastiveTuner: early stopping, progress,
devices, threads, multi-label rows, the guide's calls and ContrastiveTuner's defaults."""

from __future__ import annotations

import io
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline

from embetter.finetune import ContrastiveLearner, ContrastiveTuner, FeedForwardTuner
from tests._clustered import TUNERS, clustered, fast


@pytest.fixture(scope="module")
def data():
    return clustered(120, 0)


# -- the engine --------------------------------------------------------------------------------


def test_early_stopping_holds_out_data_and_keeps_the_best_epoch(data):
    X, y = data
    tuner = FeedForwardTuner(n_epochs=200, early_stopping=True, n_iter_no_change=3, tol=0.0,
                             random_state=0).fit(X, y)
    valid = [h["valid_loss"] for h in tuner.history_]
    assert len(valid) == tuner.n_iter_ < 200
    assert tuner.n_iter_ - 1 - int(np.argmin(valid)) == 3  # three epochs without a new best
    # with a tolerance, a new best by less than tol does not count as progress (sklearn MLP)
    tuner.set_params(tol=0.05).fit(X, y)
    valid = [h["valid_loss"] for h in tuner.history_]
    assert all(valid[k] > min(valid[:k]) - 0.05 for k in range(len(valid) - 3, len(valid)))


def test_training_loss_plateau_stops_like_sklearn_mlp(data):
    X, y = data
    tuner = FeedForwardTuner(n_epochs=100, tol=10.0, n_iter_no_change=4, random_state=0)
    assert tuner.fit(X, y).n_iter_ == 5  # the first epoch, then 4 without a gain of tol


def test_verbose_shows_progress(data, capsys):
    X, y = data
    FeedForwardTuner(n_epochs=3, verbose=True, random_state=0).fit(X, y)
    captured = capsys.readouterr()
    assert "FeedForwardTuner" in captured.err + captured.out
    # the bar stays on screen with the last loss (it was erased at the end: nothing left)
    last = (captured.err + captured.out).replace("\r", "\n").rstrip().splitlines()[-1]
    assert "3/3" in last and "train_loss=" in last
    FeedForwardTuner(n_epochs=3, random_state=0).fit(X, y)
    assert capsys.readouterr().err == ""
    ContrastiveTuner(epochs=2, verbose=1, random_state=0).fit(X, y)
    captured = capsys.readouterr()
    assert "ContrastiveTuner" in captured.err + captured.out


def test_device_choice(data):
    X, y = data
    tuner = fast(FeedForwardTuner, device="cpu").fit(X, y)
    assert tuner.device_.type == "cpu"
    with pytest.raises(ValueError, match="device"):
        fast(FeedForwardTuner, device="warp-drive").fit(X, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_and_pickle_to_cpu(data):
    X, y = data
    tuner = fast(FeedForwardTuner, device="cuda").fit(X, y)
    assert next(tuner.module_.parameters()).is_cuda
    again = pickle.loads(pickle.dumps(tuner))
    assert np.allclose(again.transform(X), tuner.transform(X), atol=1e-5)


def test_feed_forward_transform_is_the_unit_length_hidden_layer(data):
    X, y = data
    tuner = fast(FeedForwardTuner, hidden_dim=12).fit(X, y)
    Z = tuner.transform(X)
    assert Z.shape == (len(X), 12) and Z.dtype == np.float32
    assert np.allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-5)
    logits = tuner.module_(torch.tensor(X, device=tuner.device_))
    assert logits.shape == (len(X), 4)  # raw logits go into the cross-entropy, no squashing


def test_contrastive_tuner_multilabel(data):
    X, _ = data
    Y = np.zeros((len(X), 3), dtype=int)
    Y[np.arange(len(X)), np.arange(len(X)) % 3] = 1
    Y[::5, 0] = 1
    tuner = fast(ContrastiveTuner).fit(X, Y)
    assert tuner.transform(X).shape == X.shape
    assert list(tuner.classes_) == [0, 1, 2]


def test_guide_calls(tiny_model_path, corpus):
    from embetter.text import SentenceEncoder

    texts = corpus[::5][:60]
    labels = [int(any(v in t for v in ("likes", "hates", "watches"))) for t in texts]
    assert 0 < sum(labels) < 60
    X = SentenceEncoder(tiny_model_path).transform(texts)
    tuner = FeedForwardTuner(n_epochs=500, learning_rate=0.01, hidden_dim=200)
    assert tuner.fit(X, labels).transform(X).shape == (60, 200)
    assert FeedForwardTuner(n_epochs=500, learning_rate=0.01, hidden_dim=10).fit(
        X, labels).transform(X).shape == (60, 10)
    pipe = make_pipeline(SentenceEncoder(tiny_model_path),
                         FeedForwardTuner(n_epochs=50, learning_rate=0.01, hidden_dim=10), PCA())
    assert pipe.fit(texts, labels).transform(texts).shape == (60, 10)
    pipe = make_pipeline(SentenceEncoder(tiny_model_path), ContrastiveTuner())
    assert pipe.fit(texts, labels).transform(texts).shape == (60, 32)

    X1, X2 = X[:30], X[30:]
    similar = np.array([a == b for a, b in zip(labels[:30], labels[30:])], dtype=float)
    learner = ContrastiveLearner(epochs=50, batch_size=256, learning_rate=0.002, shape_out=32)
    learner.fit(X1, X2, similar)
    assert learner.transform(X).shape == (60, 32)
    buffer = io.BytesIO()
    joblib.dump(pipe, buffer)


def test_contrastive_tuner_auto_learning_rate_follows_the_classes(data):
    """learning_rate="auto": 1e-3 with two classes (the cosine loss would flatten the space
    towards two directions), 3e-3 with more classes or multi-label y; a number is used as is."""
    X, y = data
    lr = lambda tuner: tuner.optimizer_.param_groups[0]["lr"]  # noqa: E731
    assert lr(ContrastiveTuner(epochs=1, random_state=0).fit(X, y % 2)) == 1e-3
    assert lr(ContrastiveTuner(epochs=1, random_state=0).fit(X, y)) == 3e-3
    Y = np.stack([y % 2, (y // 2) % 2], axis=1)
    assert lr(ContrastiveTuner(epochs=1, random_state=0).fit(X, Y)) == 3e-3
    stream = ContrastiveTuner(random_state=0).partial_fit(X[:20], y[:20] % 2, classes=[0, 1])
    assert lr(stream) == 1e-3
    assert lr(ContrastiveTuner(epochs=1, learning_rate=0.02, random_state=0).fit(X, y % 2)) == 0.02
    with pytest.raises(ValueError, match="learning_rate.*'auto'"):
        ContrastiveTuner(learning_rate="fast").fit(X, y)


def test_contrastive_tuner_auto_anchors_balance_two_classes(data):
    """anchors="auto": each class anchors half the pairs when there are two (a small class is
    not drowned by a large one), every row with more classes or multi-label y."""
    X, y = data
    binary = ContrastiveTuner(epochs=1, random_state=0).fit(X, y % 2)
    assert binary._anchors() == "balanced"
    assert ContrastiveTuner(epochs=1, random_state=0).fit(X, y)._anchors() == "all"
    Y = np.stack([y % 2, (y // 2) % 2], axis=1)
    assert ContrastiveTuner(epochs=1, random_state=0).fit(X, Y)._anchors() == "all"
    forced = ContrastiveTuner(epochs=1, anchors="all", random_state=0).fit(X, y % 2)
    assert not np.array_equal(forced.transform(X), binary.transform(X))
    with pytest.raises(ValueError, match="anchors='balanced' needs single-label y"):
        ContrastiveTuner(anchors="balanced").fit(X, Y)
    with pytest.raises(ValueError, match="anchors"):
        ContrastiveTuner(anchors="equal").fit(X, y)
    old = ContrastiveTuner(epochs=1, random_state=0).fit(X, y % 2)
    del old.__dict__["anchors"]  # a head pickled before `anchors` existed: every row anchors
    assert old._anchors() == "all"


@pytest.mark.parametrize("cls", TUNERS + [ContrastiveLearner])
def test_training_threads_are_the_callers_again_afterwards(cls, data):
    """A head trains with one CPU thread (private, not a module global to poke) and puts
    torch's thread count back after fit and partial_fit, also when training fails."""
    import torch

    X, y = data
    before = torch.get_num_threads()
    seen = []
    head = fast(cls) if cls is not ContrastiveLearner else ContrastiveLearner(epochs=2)
    original = head._batch_loss

    def spy(*args):
        seen.append(torch.get_num_threads())
        return original(*args)

    head._batch_loss = spy
    torch.set_num_threads(2)
    try:
        if cls is ContrastiveLearner:
            head.fit(X[:60], X[60:], (y[:60] == y[60:]).astype(np.float32))
            head.partial_fit(X[:60], X[60:], (y[:60] == y[60:]).astype(np.float32))
        else:
            head.fit(X, y).partial_fit(X, y)
        assert torch.get_num_threads() == 2 and seen and set(seen) == {1}
        head._batch_loss = lambda *args: torch.tensor(float("nan"), requires_grad=True)
        with pytest.raises(FloatingPointError):
            head.fit(*((X[:60], X[60:], np.ones(60, np.float32)) if cls is ContrastiveLearner
                       else (X, y)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    import embetter._torch as plumbing

    assert not hasattr(plumbing, "CPU_TRAIN_THREADS")


def test_contrastive_tuner_identity_penalty_keeps_the_projection_near_the_identity(data):
    """identity_penalty adds `penalty * ||W - I||^2` to each step's loss (not to the recorded
    losses): a stronger penalty ends nearer the identity (the raw space); 0 trains as before
    the parameter existed; it does nothing to a projection that is not square."""
    import torch

    X, y = data

    def distance(tuner):
        weight = tuner.module_.linear.weight.detach()
        return float((weight - torch.eye(weight.shape[0])).pow(2).sum())

    free, default, strong = (ContrastiveTuner(epochs=5, identity_penalty=p, random_state=0)
                             .fit(X, y) for p in (0.0, 3e-4, 0.1))
    assert ContrastiveTuner().identity_penalty == 3e-4
    assert distance(strong) < distance(default) < distance(free)
    # the recorded loss is the pair loss alone: the identity term would add ~0.1 * distance
    assert strong.history_[-1]["train_loss"] < 1.0
    narrow = [ContrastiveTuner(hidden_dim=8, epochs=3, identity_penalty=p, random_state=0)
              .fit(X, y).transform(X) for p in (0.0, 0.1)]
    assert np.array_equal(*narrow)
    with pytest.raises(ValueError, match=r"identity_penalty.*\[0.0, inf\).*Got -1"):
        ContrastiveTuner(identity_penalty=-1).fit(X, y)


@pytest.mark.parametrize("cls", TUNERS)
def test_a_refused_call_leaves_the_head_as_it_was(cls, data):
    """Input refused after some checks have passed records nothing: an unfitted head stays
    unfitted (check_is_fitted says so), a fitted one keeps its width, classes and network."""
    from sklearn.exceptions import NotFittedError

    X, y = data
    head = fast(cls)
    with pytest.raises(ValueError, match="class"):
        head.fit(X, np.zeros(len(y), dtype=int))  # one class: refused after X was checked
    with pytest.raises(NotFittedError):
        head.transform(X)
    assert not [k for k in vars(head) if k.endswith("_") and not k.startswith("__")]
    stream = fast(cls)
    with pytest.raises(ValueError, match=r"labels not seen before: \[2, 3\]"):
        stream.partial_fit(X, y, classes=[0, 1])  # labels 2 and 3 are outside classes
    with pytest.raises(NotFittedError):
        stream.transform(X)
    expected = head.fit(X, y).transform(X)
    with pytest.raises(ValueError, match="class"):
        head.fit(X[:, :5], np.zeros(len(y), dtype=int))
    assert head.n_features_in_ == X.shape[1] and list(head.classes_) == [0, 1, 2, 3]
    np.testing.assert_array_equal(head.transform(X), expected)
    with pytest.raises(ValueError, match=r"labels not seen before: \[10, 11, 12, 13\]"):
        head.partial_fit(X, y + 10)  # a later batch with unknown labels
    np.testing.assert_array_equal(head.transform(X), expected)


def test_contrastive_learner_refused_pairs_and_params_record_nothing(data):
    """ContrastiveLearner: pairs refused after X1 was recorded leave it unfitted, and
    `set_params` between partial_fit calls is checked on every call."""
    from sklearn.exceptions import NotFittedError

    X, y = data
    X1, X2 = X[:60], X[60:]
    learner = ContrastiveLearner(epochs=2, loss="cosine_margin", random_state=0)
    with pytest.raises(ValueError, match="0/1 labels"):
        learner.fit(X1, X2, np.full(60, 0.5, dtype=np.float32))
    with pytest.raises(NotFittedError):
        learner.transform(X1)
    learner.partial_fit(X1, X2, (y[:60] == y[60:]).astype(np.float32))
    good = learner.get_params()
    for bad in ({"loss": "cosine_margni"}, {"learning_rate": -1.0}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            learner.set_params(**bad).partial_fit(X1, X2, (y[:60] == y[60:]).astype(np.float32))
        learner.set_params(**good)


def test_training_on_the_cpu_seeds_no_other_device(data, monkeypatch):
    """A CPU fit seeds a fork of the CPU generator only: torch.manual_seed would also seed
    every GPU (queued until CUDA starts, where it has not) and leave them seeded."""
    import torch

    calls = []
    for module, name in ((torch.cuda, "manual_seed_all"), (torch.cuda, "manual_seed"),
                         (torch.mps, "manual_seed")):
        monkeypatch.setattr(module, name, lambda *a, _n=name: calls.append(_n))
    X, y = data
    before = torch.get_rng_state()
    first = fast(FeedForwardTuner, device="cpu").fit(X, y).transform(X)
    assert calls == [] and torch.equal(torch.get_rng_state(), before)
    np.testing.assert_array_equal(fast(FeedForwardTuner, device="cpu").fit(X, y).transform(X),
                                  first)
