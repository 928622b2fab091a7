"""FeedForwardTuner and ContrastiveTuner: the sklearn contract, the training engine (seeding,
warm state, stopping), persistence and clear errors."""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from embetter.finetune import ContrastiveTuner, FeedForwardTuner
from tests._clustered import TUNERS, clustered, fast


@pytest.fixture(scope="module")
def data():
    return clustered(120, 0)


# -- the sklearn contract ----------------------------------------------------------------------
# Default parameters: the checks must pass for the estimators users actually get. sklearn
# itself skips check_array_api_input unless SCIPY_ARRAY_API=1 is set (torch-backed
# estimators do not claim array-API support); no check is skipped or expected to fail by us.


@parametrize_with_checks([FeedForwardTuner(), ContrastiveTuner()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("cls", TUNERS)
def test_same_seed_is_bit_identical_and_global_rng_untouched(cls, data):
    X, y = data
    torch.manual_seed(123)
    np.random.seed(123)
    expected_torch, expected_np = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    a = fast(cls).fit(X, y).transform(X)
    b = fast(cls).fit(X, y).transform(X)
    assert np.array_equal(a, b)
    assert torch.equal(torch.rand(3), expected_torch) and np.array_equal(np.random.rand(3),
                                                                          expected_np)
    c = fast(cls, random_state=1).fit(X, y).transform(X)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("cls", TUNERS)
def test_fit_resets_and_partial_fit_continues(cls, data):
    X, y = data
    tuner = fast(cls).fit(X, y)
    first = tuner.transform(X)
    assert np.array_equal(tuner.fit(X, y).transform(X), first)  # fit starts from scratch

    # (max_steps=None: ContrastiveTuner's stream then earns exactly fit's steps per row)
    # (refit_growth=None: the stream never retrains from the start, see test_tuner_refit.py)
    stream = fast(cls, batch_size=16, refit_growth=None,
                  **({"max_steps": None} if cls is ContrastiveTuner else {}))
    stream.partial_fit(X[:60], y[:60], classes=np.unique(y))
    module, optimizer = stream.module_, stream.optimizer_
    steps = [float(s["step"]) for s in optimizer.state.values()]
    # the budget follows the rows: fit's steps per row (epochs x items per row / batch_size),
    # the fraction carried to the next call
    per_row = 10 / 16 if cls is FeedForwardTuner else 3 * 4 / 16
    assert stream.history_[-1]["step"] == int(60 * per_row) == steps[0]
    stream.partial_fit(X[60:], y[60:])
    assert stream.module_ is module and stream.optimizer_ is optimizer
    assert all(float(s["step"]) > old for s, old in zip(optimizer.state.values(), steps))
    # the second call replays 60 remembered rows with its 60 new ones: FeedForwardTuner
    # shares the new rows' steps with them, ContrastiveTuner trains the new rows' full share
    # and rehearses the remembered ones on top (as many as new ones, at most)
    on_top = 60 if cls is ContrastiveTuner else 0
    assert stream.history_[-1]["step"] == int(60 * per_row + (60 + on_top) * per_row)
    assert stream.n_iter_ == len(stream.loss_curve_) == len(stream.history_) > 2


@pytest.mark.parametrize("cls", TUNERS)
def test_pickle_and_joblib_round_trip(cls, data, tmp_path):
    X, y = data
    tuner = fast(cls).partial_fit(X[:60], y[:60], classes=np.unique(y))
    again = pickle.loads(pickle.dumps(tuner))
    assert np.array_equal(again.transform(X), tuner.transform(X))
    joblib.dump(tuner, tmp_path / "t.joblib")
    loaded = joblib.load(tmp_path / "t.joblib")
    assert np.array_equal(loaded.transform(X), tuner.transform(X))
    # the optimizer state travels too: training on after loading matches training on in place
    tuner.partial_fit(X[60:], y[60:])
    loaded.partial_fit(X[60:], y[60:])
    assert np.array_equal(loaded.transform(X), tuner.transform(X))


def test_pickle_holds_no_live_module(data):
    X, y = data
    tuner = fast(FeedForwardTuner).fit(X, y)
    state = tuner.__getstate__()
    assert "module_" not in state and "optimizer_" not in state
    assert isinstance(state["_module_state"], bytes)  # data, for pickle and skops alike
    from embetter._state_bytes import torch_state_from_bytes

    weights = torch_state_from_bytes(state["_module_state"])
    assert all(t.device.type == "cpu" for t in weights.values())
    assert "module_" in vars(tuner)  # pickling leaves the live estimator alone


@pytest.mark.parametrize("cls", TUNERS)
def test_clone_and_set_params_reach_the_network(cls, data):
    X, y = data
    tuner = fast(cls).fit(X, y)
    fresh = clone(tuner)
    assert not hasattr(fresh, "n_features_in_")
    dim_param = "hidden_dim"
    fresh.set_params(**{dim_param: 6})
    assert fresh.fit(X, y).transform(X).shape == (len(X), 6)
    fresh.set_params(learning_rate=0.05)
    assert fresh.fit(X, y).optimizer_.param_groups[0]["lr"] == 0.05
    if cls is ContrastiveTuner:
        fresh.set_params(loss="cosine_margin", margin=0.5)
        wide = fresh.fit(X, y).transform(X)
        assert not np.array_equal(fresh.set_params(margin=-0.5).fit(X, y).transform(X), wide)


@pytest.mark.parametrize("cls", TUNERS)
def test_grid_search_searches(cls, data):
    X, y = data
    pipe = make_pipeline(fast(cls), LogisticRegression())
    step = pipe.steps[0][0]
    grid = GridSearchCV(pipe, {f"{step}__hidden_dim": [2, 8]}, cv=2,
                        scoring=lambda est, X, y: est[-1].n_features_in_).fit(X, y)
    assert grid.cv_results_["mean_test_score"].tolist() == [2, 8]  # each reached the tuner
    assert grid.best_estimator_.named_steps[step].transform(X).shape[1] == 8


@pytest.mark.parametrize("cls", TUNERS)
def test_inputs_sparse_dataframe_and_pandas_output(cls, data):
    X, y = data
    dense = fast(cls).fit(X, y).transform(X)
    assert np.array_equal(fast(cls).fit(sp.csr_matrix(X), y).transform(sp.csr_matrix(X)), dense)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    tuner = fast(cls).fit(df, pd.Series(y))
    assert list(tuner.feature_names_in_) == list(df.columns)
    tuner.set_output(transform="pandas")
    out = tuner.transform(df)
    assert isinstance(out, pd.DataFrame)
    prefix = cls.__name__.lower()
    assert list(out.columns) == [f"{prefix}{i}" for i in range(out.shape[1])]
    assert list(tuner.get_feature_names_out()) == list(out.columns)
    assert out.dtypes.iloc[0] == np.float32


@pytest.mark.parametrize("cls", TUNERS)
def test_clear_errors(cls, data):
    X, y = data
    with pytest.raises(NotFittedError):
        cls().transform(X)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity.*row 3, column 2"):
        fast(cls).fit(bad, y)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        fast(cls).fit(bad, y)
    with pytest.raises(ValueError, match="y has 119 entries but X has 120 rows"):
        fast(cls).fit(X, y[:-1])
    with pytest.raises(ValueError, match="2-D array.*Reshape your data"):
        fast(cls).fit(X[:, 0], y)
    with pytest.raises(ValueError, match="0 samples"):
        fast(cls).fit(X[:0], y[:0])
    with pytest.raises(ValueError, match="one class"):
        fast(cls).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="requires y"):
        fast(cls).fit(X, None)
    tuner = fast(cls).fit(X, y)
    with pytest.raises(ValueError, match="X has 15 features, but .* expecting 16"):
        tuner.transform(X[:, :15])
    with pytest.raises(ValueError, match="NaN or infinity"):
        tuner.transform(bad)
    stream = fast(cls).partial_fit(X[:60], y[:60], classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="labels not seen before: \\[7\\].*classes="):
        stream.partial_fit(X[:4], np.array([0, 1, 7, 2]))
    with pytest.raises(ValueError, match="hidden_dim"):
        cls(hidden_dim=0).fit(X, y)
    assert tuner.transform(X[:0]).shape == (0, tuner.transform(X[:1]).shape[1])


def test_partial_fit_learns_classes_from_the_first_batch_when_not_given(data):
    X, y = data
    tuner = fast(FeedForwardTuner).partial_fit(X, y)
    assert list(tuner.classes_) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="differs from the classes"):
        tuner.partial_fit(X, y, classes=[0, 1])


@pytest.mark.parametrize("cls", TUNERS)
@pytest.mark.parametrize("n_batches", [10, 40])
@pytest.mark.parametrize("refit_growth", [None, 1.5])
def test_stream_seen_once_matches_one_fit(cls, n_batches, refit_growth):
    """Batches of 200 or 50 rows, each seen once by partial_fit, get within 2 points of one fit
    on all: the training follows the rows (the steps one fit takes), not the calls; and so
    does a stream that retrains from the start as it grows (the default)."""
    shape = {"n_classes": 6, "dim": 64, "informative": 4, "spread": 1.5}
    X, y = clustered(2000, 0, **shape)
    X_test, y_test = clustered(1000, 10, **shape)

    def knn(tuner):
        return KNeighborsClassifier(5, metric="cosine").fit(tuner.transform(X), y).score(
            tuner.transform(X_test), y_test)

    full = cls(random_state=0).fit(X, y)
    stream = cls(random_state=0, refit_growth=refit_growth)
    for batch in np.array_split(np.arange(len(y)), n_batches):
        stream.partial_fit(X[batch], y[batch], classes=np.arange(6))
    raw = KNeighborsClassifier(5, metric="cosine").fit(X, y).score(X_test, y_test)
    assert knn(full) > raw  # the tuner helps on this problem ...
    assert knn(stream) >= knn(full) - 0.02  # ... and a stream seen once keeps up
    assert stream._replay["seen"] == 2000 and len(stream._replay["rows"][0]) == 2000
    if cls is FeedForwardTuner and refit_growth is None:  # fit rounds each epoch's last step up
        assert 0.95 * full.history_[-1]["step"] <= stream.history_[-1]["step"]
        assert stream.history_[-1]["step"] <= full.history_[-1]["step"]


def test_feed_forward_auto_epochs_follow_rows_per_class():
    """n_epochs="auto": 15 passes with 50+ rows per class, sqrt(50 / rows per class) times as
    many below (at most 1.5x: 22 epochs); a stream's budget is that of one fit on the rows seen
    so far."""
    X, y = clustered(240, 0, n_classes=4)
    assert FeedForwardTuner(random_state=0).fit(X, y).n_iter_ == 15  # 60 rows per class
    X6, y6 = clustered(240, 0, n_classes=6)
    assert FeedForwardTuner(random_state=0).fit(X6, y6).n_iter_ == 17  # 40: 15 * sqrt(1.25)
    X_few, y_few = clustered(48, 0, n_classes=4)
    few = FeedForwardTuner(random_state=0, batch_size=16).fit(X_few, y_few)
    # 12 per class: capped at 1.5x (22.5 epochs, rounded to 22 by fit)
    assert few.n_iter_ == 22 and few.history_[-1]["step"] == 66
    assert FeedForwardTuner(n_epochs=7, random_state=0).fit(X_few, y_few).n_iter_ == 7
    stream = FeedForwardTuner(random_state=0, batch_size=16, refit_growth=None)
    for batch in np.array_split(np.arange(48), 6):  # the first batches hold 2 rows per class
        stream.partial_fit(X_few[batch], y_few[batch], classes=np.arange(4))
    assert stream.history_[-1]["step"] == 67  # 48 rows x 22.5 epochs / 16, as one fit


def test_replay_memory_is_a_uniform_bounded_sample():
    from embetter._torch import new_replay, replay_add

    memory, rng = new_replay(), np.random.RandomState(0)
    for start in range(0, 10_000, 100):
        rows = np.arange(start, start + 100)
        replay_add(memory, [rows, rows * 2], 500, rng)
    kept = memory["rows"][0]
    assert memory["seen"] == 10_000 and kept.shape == (500,)
    assert (memory["rows"][1] == kept * 2).all()  # rows stay aligned
    assert 3500 < kept.mean() < 6500  # early and late rows alike, not just the latest
    replay_add(memory, [np.arange(5), np.arange(5)], 0, rng)  # replay_size=0: nothing kept
    assert memory["seen"] == 10_005
    # replay_size lowered between calls: the memory shrinks to a subsample of itself
    rows = np.arange(10_005, 10_105)
    replay_add(memory, [rows, rows * 2], 50, rng)
    small = memory["rows"][0]
    assert small.shape == (50,) and (memory["rows"][1] == small * 2).all()
    assert np.isin(small[small < 10_000], kept).all() and 2000 < small.mean() < 8000


def test_contrastive_tuner_reports_training_and_stops_early(data):
    X, y = data
    tuner = ContrastiveTuner(epochs=40, max_steps=None, early_stopping=True, n_iter_no_change=2,
                             tol=0.0, random_state=0).fit(X, y)
    assert tuner.n_iter_ == len(tuner.loss_curve_) == len(tuner.history_) < 40
    assert all({"epoch", "step", "train_loss", "valid_loss"} <= set(h) for h in tuner.history_)
    valid = [h["valid_loss"] for h in tuner.history_]
    assert tuner.n_iter_ - 1 - int(np.argmin(valid)) == 2  # two epochs without a new best
    plain = fast(ContrastiveTuner).fit(X, y)
    assert [h["epoch"] for h in plain.history_] == [1, 2, 3]
    assert "valid_loss" not in plain.history_[0]
    with pytest.raises(ValueError, match="1 of 3 here, and needs at least 2 held out and 2 left"):
        ContrastiveTuner(early_stopping=True).fit(X[:3], y[:3])
