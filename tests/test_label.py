"""embetter.label: suggest() strategies, their errors, and the LabellingLoop."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC

from embetter.base import EmbetterBase
from embetter.label import STRATEGIES, LabellingLoop, suggest


@pytest.fixture(scope="module")
def blobs():
    """Four well-separated blobs in 5-D, two classes (blobs 0 and 1 are class a)."""
    X, blob = make_blobs(n_samples=400, centers=4, n_features=5, cluster_std=1.0,
                         center_box=(-20, 20), random_state=3)
    y = np.where(blob < 2, "a", "b")
    return X, y, blob


def fitted(X, y, n=8, seed=0):
    rng = np.random.RandomState(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), n // 2, replace=False)
                          for c in np.unique(y)])
    return LogisticRegression().fit(X[idx], y[idx]), idx


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_suggest_returns_k_distinct_unlabelled_positions(blobs, strategy):
    X, y, _ = blobs
    clf, idx = fitted(X, y)
    picks = suggest(clf, X, k=15, strategy=strategy, random_state=0, labelled=idx)
    assert picks.dtype.kind == "i" and picks.shape == (15,)
    assert np.unique(picks).size == 15 and picks.min() >= 0 and picks.max() < len(X)
    assert not np.isin(picks, idx).any()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_suggest_is_deterministic_with_random_state(blobs, strategy):
    X, y, _ = blobs
    clf, idx = fitted(X, y)
    a = suggest(clf, X, k=10, strategy=strategy, random_state=7, labelled=idx)
    b = suggest(clf, X, k=10, strategy=strategy, random_state=7, labelled=idx)
    np.testing.assert_array_equal(a, b)


def test_random_depends_on_the_seed(blobs):
    X, y, _ = blobs
    clf, _ = fitted(X, y)
    a = suggest(clf, X, k=10, strategy="random", random_state=0)
    b = suggest(clf, X, k=10, strategy="random", random_state=1)
    assert set(a) != set(b)


def test_margin_and_entropy_pick_the_least_certain_rows():
    X = np.array([[0.0], [0.1], [4.9], [5.0], [2.5], [2.4], [2.6], [10.0]])
    clf = LogisticRegression().fit([[0.0], [5.0]], ["a", "b"])
    proba = clf.predict_proba(X)
    most_torn = set(np.argsort(np.abs(proba[:, 0] - proba[:, 1]))[:3])
    for strategy in ("margin", "entropy"):
        assert set(suggest(clf, X, k=3, strategy=strategy, random_state=0)) == most_torn


def test_kcenter_spreads_over_the_space(blobs):
    X, y, blob = blobs
    clf, _ = fitted(X, y)
    picks = suggest(clf, X, k=4, strategy="kcenter", random_state=0)
    assert sorted(blob[picks]) == [0, 1, 2, 3]  # one per blob
    # with blob 0 and 1 labelled, the next two come from the other blobs
    labelled = np.concatenate([np.flatnonzero(blob == 0)[:3], np.flatnonzero(blob == 1)[:3]])
    picks = suggest(clf, X, k=2, strategy="kcenter", random_state=0, labelled=labelled)
    assert sorted(blob[picks]) == [2, 3]


def test_auto_is_uncertain_like_margin_and_spread_unlike_it():
    """Auto picks rows the classifier is unsure of (unlike random) from more of the space
    than margin, whose picks bunch up where many rows crowd the boundary."""
    rng = np.random.RandomState(0)
    spread = rng.uniform(-1, 1, size=(1700, 2)) * [1.0, 8.0]  # a long boundary along x = 0
    crowd = rng.normal(0, 0.05, size=(300, 2))  # and a crowd of near-duplicates on it
    X = np.vstack([spread, crowd])
    in_crowd = np.arange(len(X)) >= 1700
    clf = LogisticRegression().fit([[-1, 0], [1, 0]], ["a", "b"])
    auto = suggest(clf, X, k=10, strategy="auto", random_state=0, labelled=[])
    rand = suggest(clf, X, k=10, strategy="random", random_state=0)
    margin = suggest(clf, X, k=10, strategy="margin", random_state=0)
    torn = 1 - np.abs(np.diff(clf.predict_proba(X), axis=1)[:, 0])
    assert torn[auto].mean() > torn[rand].mean()
    assert np.abs(X[auto, 0]).mean() < np.abs(X[rand, 0]).mean()
    assert in_crowd[margin].sum() >= 5 and in_crowd[auto].sum() <= 2
    # a classifier sure of itself away from the boundary: auto's picks stay near it
    sharp = LogisticRegression(C=1e4).fit([[-0.3, 0], [0.3, 0]], ["a", "b"])
    near = suggest(sharp, X, k=10, strategy="auto", random_state=0, labelled=[])
    assert np.abs(X[near, 0]).mean() < 0.1 * np.abs(X[rand, 0]).mean()
    assert in_crowd[near].sum() <= 2


def test_auto_first_rounds_ask_for_dense_rows_no_label_covers(blobs):
    """With fewer labels known than 3 rounds of k, auto ignores the young classifier's doubts
    and asks for rows whose neighbourhoods hold the most rows no label's does (near a blob's
    centre, never an outlier), from the blobs no label covers yet."""
    X, y, blob = blobs
    clf, idx = fitted(X, y, n=2)
    picks = suggest(clf, X, k=4, strategy="auto", random_state=0, labelled=idx)
    uncovered = np.setdiff1d(np.unique(blob), blob[idx])
    assert np.isin(uncovered, blob[picks]).all()
    for p in picks:
        rows = X[blob == blob[p]]
        to_centre = np.linalg.norm(rows - rows.mean(axis=0), axis=1)
        assert np.linalg.norm(X[p] - rows.mean(axis=0)) < np.quantile(to_centre, 0.25)
    # the classifier's doubts play no part yet: another one on the same labels, predicting
    # alike but far less sure, picks the same rows
    other = LogisticRegression(C=1e-3).fit(X[idx], y[idx])
    np.testing.assert_array_equal(
        picks, suggest(other, X, k=4, strategy="auto", random_state=0, labelled=idx))
    # from 3 rounds of k on, the classifier's doubts count
    many = np.arange(0, 400, 33)  # 13 labels >= 3 * 4
    clf_many = LogisticRegression().fit(X[many], y[many])
    torn = 1 - np.abs(np.diff(clf_many.predict_proba(X), axis=1)[:, 0])
    warm = suggest(clf_many, X, k=4, strategy="auto", random_state=0, labelled=many)
    assert torn[warm].mean() > torn[picks].mean()


def test_auto_first_rounds_keep_the_predicted_classes_balanced():
    """A wide class of many rows beside a tight one of few: the coverage picks alone all go
    to the wide class (its neighbourhoods hold the most uncovered rows); auto alternates
    between the classes the classifier predicts, as the labelled rows hold each equally."""
    from embetter.label._coverage import coverage_pick

    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(0, 3.0, (300, 5)), rng.normal(0, 0.5, (60, 5)) + 12])
    y = np.array(["a"] * 300 + ["b"] * 60)
    idx = np.array([0, 1, 300, 301])
    clf = LogisticRegression().fit(X[idx], y[idx])
    picks = suggest(clf, X, k=6, strategy="auto", random_state=0, labelled=idx)
    assert list(y[picks]) == ["a", "b"] * 3
    alone = coverage_pick(X, np.setdiff1d(np.arange(len(X)), idx), idx, 6,
                          np.random.RandomState(0))
    assert (y[alone] == "a").all()
    # one class already held more often: the other one's rows first
    more_a = np.array([0, 1, 2, 3, 300, 301])
    clf = LogisticRegression().fit(X[more_a], y[more_a])
    picks = suggest(clf, X, k=4, strategy="auto", random_state=0, labelled=more_a)
    assert list(y[picks[:2]]) == ["b", "b"] and sorted(y[picks[2:]]) == ["a", "b"]


def test_pipeline_diversity_uses_the_space_the_classifier_sees(blobs):
    X, y, blob = blobs
    # the classifier sees only the first coordinate: kcenter spreads along it alone
    first = FunctionTransformer(lambda Z: Z[:, :1])
    pipe = make_pipeline(first, LogisticRegression()).fit(X, y)
    picks = suggest(pipe, X, k=3, strategy="kcenter", random_state=0)
    assert X[picks, 0].min() == X[:, 0].min() or X[picks, 0].max() == X[:, 0].max()
    scaled = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    assert suggest(scaled, X, k=5, random_state=0).shape == (5,)


def test_suggest_errors(blobs):
    X, y, _ = blobs
    clf, _ = fitted(X, y)
    with pytest.raises(ValueError, match="empty"):
        suggest(clf, np.zeros((0, 5)), k=1)
    with pytest.raises(ValueError, match="k=401 is larger than the pool"):
        suggest(clf, X, k=401)
    with pytest.raises(ValueError, match="k=400 is larger.*399 not labelled"):
        suggest(clf, X, k=400, labelled=[3])
    with pytest.raises(ValueError, match="k must be a positive int"):
        suggest(clf, X, k=0)
    for bad in (2.5, True, "3", None):
        with pytest.raises(TypeError, match="k must be a positive int"):
            suggest(clf, X, k=bad)
    with pytest.raises(TypeError, match="predict_proba.*LinearRegression"):
        suggest(LinearRegression().fit(X, y == "a"), X)
    with pytest.raises(TypeError, match="predict_proba.*SVC"):
        suggest(SVC().fit(X, y), X)
    with pytest.raises(NotFittedError, match="not fitted"):
        suggest(LogisticRegression(), X)
    with pytest.raises(NotFittedError, match="not fitted"):
        suggest(make_pipeline(StandardScaler(), LogisticRegression()), X)
    with pytest.raises(ValueError, match="strategy must be one of.*'uncertain'"):
        suggest(clf, X, strategy="uncertain")
    with pytest.raises(TypeError, match="strategy must be one of"):
        suggest(clf, X, strategy=None)
    with pytest.raises(ValueError, match="labelled must be positions into X"):
        suggest(clf, X, labelled=[0, 400])
    with pytest.raises(ValueError, match="more than once"):
        suggest(clf, X, labelled=[1, 1])
    with pytest.raises(TypeError, match="labelled must be a 1-D collection of int"):
        suggest(clf, X, labelled=[0.5])
    with pytest.raises(TypeError, match="single str"):
        suggest(clf, "a text", k=1)


class CountingEncoder(EmbetterBase):
    """A stateless step that counts the rows it transforms (it passes numbers through)."""

    def __init__(self):
        self.rows = []

    def transform(self, X):
        self.rows.append(len(X))
        return np.asarray(X, dtype=np.float32)


def test_loop_learns_in_rounds_and_encodes_the_pool_once(blobs):
    from embetter.finetune import FeedForwardTuner

    X, y, _ = blobs
    counting = CountingEncoder()
    pipe = make_pipeline(counting, FeedForwardTuner(random_state=0),
                         SGDClassifier(loss="log_loss", random_state=0))
    loop = LabellingLoop(pipe, X, classes=["a", "b"], random_state=0)
    assert loop.model_.steps[0][1].rows == [len(X)]  # the pool, once
    assert counting.rows == [] and not hasattr(pipe[-1], "classes_")  # the original untouched
    first = loop.suggest(k=10)
    for _ in range(3):
        picks = loop.suggest(k=10)
        assert not np.isin(picks, loop.labelled_).any()
        loop.update(picks, y[picks])
    assert loop.model_.steps[0][1].rows == [len(X)]
    assert len(loop.labelled_) == 30 and (loop.labels_ == y[loop.labelled_]).all()
    assert (loop.model_[1:].predict(X) == y).mean() > 0.9
    again = LabellingLoop(pipe, X, classes=["a", "b"], random_state=0)
    np.testing.assert_array_equal(again.suggest(k=10), first)


def test_loop_refits_a_classifier_without_partial_fit(blobs):
    X, y, _ = blobs
    loop = LabellingLoop(LogisticRegression(), X, classes=["a", "b"], strategy="margin",
                         random_state=0)
    a_rows = np.flatnonzero(y == "a")[:2]
    loop.update(a_rows, y[a_rows])  # one class only: nothing to fit yet
    assert not loop.fitted_ and loop.suggest(k=3).shape == (3,)
    b_rows = np.flatnonzero(y == "b")[:2]
    loop.update(b_rows, y[b_rows])
    assert loop.fitted_ and list(loop.model_.classes_) == ["a", "b"]
    picks = loop.suggest(k=5)
    loop.update(picks, y[picks])
    assert loop.model_.n_features_in_ == 5 and len(loop.labels_) == 9


def test_loop_errors(blobs):
    X, y, _ = blobs
    loop = LabellingLoop(SGDClassifier(loss="log_loss"), X, classes=["a", "b"])
    with pytest.raises(ValueError, match="labels outside classes: 'c'; "):
        loop.update([0, 1], ["a", "c"])
    with pytest.raises(ValueError, match="one label per position"):
        loop.update([0, 1], ["a"])
    loop.update([0, 1], y[[0, 1]])
    with pytest.raises(ValueError, match=r"1 of the positions are labelled already: \[1\]"):
        loop.update([1, 2], y[[1, 2]])
    with pytest.raises(ValueError, match="positions must be positions into X"):
        loop.update([400], ["a"])
    with pytest.raises(ValueError, match="k=399 is larger than the rest of the pool"):
        loop.suggest(k=399)
    with pytest.raises(ValueError, match="at least two"):
        LabellingLoop(SGDClassifier(loss="log_loss"), X, classes=["a"])
    with pytest.raises(ValueError, match="more than once"):
        LabellingLoop(SGDClassifier(loss="log_loss"), X, classes=["a", "a", "b"])
    with pytest.raises(ValueError, match="empty"):
        LabellingLoop(SGDClassifier(loss="log_loss"), np.zeros((0, 5)), classes=["a", "b"])
    with pytest.raises(TypeError, match="predict_proba"):
        LabellingLoop(LinearRegression(), X, classes=["a", "b"])
    with pytest.raises(TypeError, match="last step of model must have predict_proba"):
        LabellingLoop(make_pipeline(StandardScaler(), SGDClassifier(loss="hinge")), X,
                      classes=["a", "b"])
    with pytest.raises(ValueError, match="strategy must be one of"):
        LabellingLoop(SGDClassifier(loss="log_loss"), X, classes=["a", "b"], strategy="x")


def test_loop_on_texts_with_a_real_encoder(tiny_model_path, corpus):
    """Texts in: the encoder runs once over the pool; every strategy suggests from it."""
    from embetter.text import SentenceEncoder

    y = np.array(["animal" if t.startswith(("the cat", "a dog")) else "other" for t in corpus])
    pipe = make_pipeline(SentenceEncoder(tiny_model_path),
                         SGDClassifier(loss="log_loss", random_state=0))
    loop = LabellingLoop(pipe, corpus, classes=["animal", "other"], random_state=0)
    assert loop.embeddings_.shape == (len(corpus), 32)
    picks = loop.suggest(k=6)
    loop.update(picks, y[picks])
    more = loop.suggest(k=6)
    assert not np.isin(more, picks).any()
    fitted_pipe = loop.model_
    for strategy in STRATEGIES:
        got = suggest(fitted_pipe, corpus[:40], k=4, strategy=strategy, random_state=0)
        assert got.shape == (4,) and got.max() < 40


def test_a_pool_with_nan_is_refused_before_any_pick():
    from embetter.label import LabellingLoop

    X = np.random.RandomState(0).normal(size=(20, 4))
    X[5, 2] = np.nan
    for strategy in ("kcenter", "auto"):
        loop = LabellingLoop(LogisticRegression(), X, classes=[0, 1], strategy=strategy)
        with pytest.raises(ValueError, match="contains NaN or infinity, first at row 5"):
            loop.suggest(3)


def test_auto_on_a_pool_larger_than_its_sample():
    """Past COVERAGE_ROWS rows, auto measures coverage on a seeded sample: its picks are still
    k distinct unlabelled rows, repeatable, the first rounds' spread over the blobs, and the
    later rounds' doubtful."""
    from embetter.label import _coverage

    X, blob = make_blobs(n_samples=_coverage.COVERAGE_ROWS + 3000, centers=6, n_features=5,
                         cluster_std=1.0, center_box=(-20, 20), random_state=4)
    y = np.where(blob < 3, "a", "b")
    idx = np.array([np.flatnonzero(blob == 0)[0], np.flatnonzero(blob == 3)[0]])
    clf = LogisticRegression().fit(X[idx], y[idx])
    cold = suggest(clf, X, k=4, random_state=0, labelled=idx)
    assert len(set(cold.tolist())) == 4 and not np.isin(cold, idx).any()
    assert np.unique(blob[cold]).size == 4  # (four blobs: dense regions no label covers)
    np.testing.assert_array_equal(cold, suggest(clf, X, k=4, random_state=0, labelled=idx))
    many = np.arange(0, len(X), 97)
    clf = LogisticRegression(C=0.01).fit(X[many], y[many])
    warm = suggest(clf, X, k=10, random_state=0, labelled=many)
    assert len(set(warm.tolist())) == 10 and not np.isin(warm, many).any()
    torn = 1 - np.abs(np.diff(clf.predict_proba(X), axis=1)[:, 0])
    assert torn[warm].mean() > np.median(torn)
    np.testing.assert_array_equal(warm, suggest(clf, X, k=10, random_state=0, labelled=many))
