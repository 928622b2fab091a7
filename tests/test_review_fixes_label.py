"""Fixes from a review of the labelling loop, the map, `project` and the CLI: each test failed
on the code before its fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from embetter.label import LabellingLoop, suggest
from embetter.plot import project

RNG = np.random.default_rng(0)
POOL = np.vstack([RNG.normal(0, 1, (20, 4)), RNG.normal(4, 1, (20, 4))])
TRUTH = np.array(["a"] * 20 + ["b"] * 20)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_project_of_identical_rows_is_one_point(method):
    # t-SNE with a PCA start divided by a zero spread and crashed the process (segfault)
    np.testing.assert_array_equal(project(np.zeros((5, 8)), method=method), np.zeros((5, 2)))


def test_loop_refits_a_naive_bayes_head_instead_of_counting_labels_again():
    loop = LabellingLoop(GaussianNB(), POOL, classes=["a", "b"], random_state=0)
    for rows in ([0, 1, 2, 3, 4], [20, 21, 22, 23, 24], [25, 26, 27, 28, 29]):
        loop.update(rows, TRUTH[rows])
    fresh = GaussianNB().fit(POOL[loop.labelled_], loop.labels_)
    np.testing.assert_array_equal(loop.model_.class_count_, [5, 10])
    np.testing.assert_allclose(loop.model_.theta_, fresh.theta_)


def test_loop_skips_passthrough_steps_after_the_first_learned_one():
    pipe = Pipeline([("scale", StandardScaler()), ("nothing", "passthrough"),
                     ("clf", SGDClassifier(loss="log_loss", random_state=0))])
    loop = LabellingLoop(pipe, POOL, classes=["a", "b"], random_state=0)
    for _ in range(2):
        picks = loop.suggest(4)
        loop.update(picks, TRUTH[picks])
    assert loop.fitted_ and len(loop.suggest(4)) == 4


def test_loop_whose_learned_steps_embed_texts_starts_with_random_picks():
    from embetter.text import LiteTextEncoder

    texts = [f"refund my order {i}" for i in range(10)] + [f"hello there {i}" for i in range(10)]
    labels = np.array(["money"] * 10 + ["hi"] * 10)
    pipe = make_pipeline(LiteTextEncoder(n_components=2, random_state=0), LogisticRegression())
    for strategy in ("auto", "kcenter"):  # measured distances between texts before: TypeError
        loop = LabellingLoop(pipe, texts, classes=["hi", "money"], strategy=strategy,
                             random_state=0)
        first = loop.suggest(4)
        assert len(set(first.tolist())) == 4
        loop.update([0, 1, 10, 11], labels[[0, 1, 10, 11]])
        assert loop.fitted_ and len(loop.suggest(4)) == 4


@pytest.fixture
def widget_cls():
    pytest.importorskip("anywidget", reason="LabellingMap needs the notebook extra (anywidget)")
    from embetter.label import LabellingMap

    return LabellingMap


def test_map_matches_labels_to_texts_by_index(widget_cls):
    texts = pd.Series(["hi", "refund", "where"], index=[10, 11, 12])
    known = pd.Series({12: "shipping", 10: "greeting", 11: None})
    coords = np.arange(6.0).reshape(3, 2)
    widget = widget_cls(coords=coords, texts=texts, labels=known, predictions=known)
    assert widget.labels.to_dict() == {10: "greeting", 11: None, 12: "shipping"}
    assert widget.predicted == ["greeting", None, "shipping"]
    with pytest.raises(ValueError, match="labels is a pandas Series whose index differs"):
        widget_cls(coords=coords, texts=texts, labels=pd.Series(["x", "y", "z"]))
    # without an index on the map's side, labels go by position as before
    assert widget_cls(coords=coords, labels=known).labels.tolist() == [
        "shipping", "greeting", None]


def test_map_labels_follow_the_rules_of_assign(widget_cls):
    coords = np.arange(8.0).reshape(4, 2)
    with pytest.raises(TypeError, match=r"labels\[0\] must be a label"):
        widget_cls(coords=coords, labels=[True, False, None, None])
    widget = widget_cls(coords=coords, labels=["  spam ", "", "   ", None])
    assert widget.labels.tolist() == ["spam", None, None, None]


def test_project_writes_integer_labels_of_jsonl_with_gaps_as_integers(tmp_path, tiny_model_path):
    from embetter.cli import main

    rows = pd.DataFrame({"text": ["hello there", "where is my parcel", "refund please",
                                  "refund now"], "label": [1, None, 2, 2]})
    rows.to_json(tmp_path / "a.jsonl", orient="records", lines=True)
    out = tmp_path / "m.csv"
    assert main(["project", str(tmp_path / "a.jsonl"), "--text-col", "text", "--label-col",
                 "label", "--model", tiny_model_path, "--method", "pca", "--out", str(out)]) == 0
    back = pd.read_csv(out, dtype={"label": str}, keep_default_na=False)
    assert back["label"].tolist() == ["1", "", "2", "2"]


def test_loop_checks_a_strategy_set_after_it_was_made():
    loop = LabellingLoop(SGDClassifier(loss="log_loss"), POOL, classes=["a", "b"])
    loop.strategy = "margn"
    with pytest.raises(ValueError, match="strategy"):
        loop.suggest(2)  # fell through to "auto" before


def test_umap_failing_midway_leaves_numba_threads_as_they_were(monkeypatch):
    numba = pytest.importorskip("numba", reason="umap-learn brings numba (the umap extra, in dev)")
    umap = pytest.importorskip("umap", reason="the umap extra (in dev)")

    def fails(self, X, *args, **kwargs):
        numba.set_num_threads(1)  # what UMAP does with a seed, undone only on success
        raise RuntimeError("failed midway")

    monkeypatch.setattr(umap.UMAP, "fit_transform", fails)
    before = numba.get_num_threads()
    with pytest.raises(RuntimeError, match="failed midway"):
        project(POOL, method="umap")
    assert numba.get_num_threads() == before


def test_an_encoder_that_learns_from_texts_alone_is_fitted_on_the_whole_pool():
    """LiteTextEncoder was refitted on the ten labelled texts of a round: 9 dimensions
    instead of 32, and the pool never reached its vocabulary."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from embetter.label import LabellingLoop
    from embetter.text import LiteTextEncoder

    rng = np.random.default_rng(0)
    words = ["parcel", "refund", "invoice", "password", "delivery", "login", "charge", "box"]
    pool = [" ".join(rng.choice(words, 4)) + f" note {i}" for i in range(120)]
    labels = np.array(["ship" if ("parcel" in t or "box" in t) else "other" for t in pool])
    loop = LabellingLoop(make_pipeline(LiteTextEncoder(n_components=16, random_state=0),
                                       LogisticRegression()), pool, classes=["other", "ship"],
                         random_state=0)
    assert loop.embeddings_.shape == (120, 16)  # the pool, encoded once
    picks = loop.suggest(k=10)
    loop.update(picks, labels[picks])
    assert loop.model_[0].transform(pool[:3]).shape == (3, 16)
    assert loop.model_[0].n_components_ == 16  # fitted on all 120 texts, not on 10


def test_steps_that_may_need_labels_are_still_refitted_each_round():
    """Only steps known to learn from X alone are fitted on the pool: a selector, a custom
    transformer or a nested pipeline holding a tuner need the labels."""
    from sklearn.feature_selection import SelectKBest
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from embetter.finetune import FeedForwardTuner
    from embetter.label import LabellingLoop
    from tests._clustered import clustered

    X, y = clustered(120, 0)
    for model in (make_pipeline(SelectKBest(k=4), SGDClassifier(loss="log_loss")),
                  make_pipeline(make_pipeline(StandardScaler(), FeedForwardTuner(n_epochs=2)),
                                SGDClassifier(loss="log_loss"))):
        loop = LabellingLoop(model, X, classes=np.unique(y), random_state=0)
        for _ in range(2):
            picks = loop.suggest(k=10)
            loop.update(picks, y[picks])
        assert len(loop.labelled_) == 20


# -- a review of the labelling module (session 29) ----------------------------------------------
def _imbalanced_blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (6, 2))
    X = np.vstack([rng.normal(centres[i], 0.5, (19 if i < 5 else 5, 2)) for i in range(6)])
    return X, np.array(["a"] * 95 + ["b"] * 5)


def test_loop_before_its_head_fits_asks_for_clusters_its_labels_miss():
    # with every label of one class the head cannot fit; the picks re-clustered the pool
    # ignoring the labels and came back to the same clusters round after round
    X, y = _imbalanced_blobs()
    loop = LabellingLoop(LogisticRegression(), X, classes=["a", "b"], random_state=0)
    first = loop.suggest(5)
    loop.update(first, y[first])
    assert not loop.fitted_
    second = loop.suggest(5)
    assert "b" not in y[first] and "b" in y[second]  # the rare cluster, found in round two


def test_suggest_measures_a_searched_pipeline_in_its_best_pipelines_space():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.model_selection import GridSearchCV

    from embetter.label import suggest

    texts = [f"refund my order {i}" for i in range(10)] + [f"hello there {i}" for i in range(10)]
    labels = ["money"] * 10 + ["greeting"] * 10
    search = GridSearchCV(make_pipeline(TfidfVectorizer(), LogisticRegression()),
                          {"logisticregression__C": [0.1, 1.0]}, cv=2).fit(texts, labels)
    picks = suggest(search, texts, k=4, random_state=0)
    assert len(set(picks.tolist())) == 4


def test_suggest_on_texts_names_the_strategies_that_need_no_space():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer

    from embetter.label import suggest

    texts = [f"refund my order {i}" for i in range(10)] + [f"hello there {i}" for i in range(10)]
    labels = ["money"] * 10 + ["greeting"] * 10
    model = CalibratedClassifierCV(make_pipeline(TfidfVectorizer(), LogisticRegression()),
                                   cv=2).fit(texts, labels)
    with pytest.raises(TypeError, match="strategy='margin'"):
        suggest(model, texts, k=3)
    assert len(suggest(model, texts, k=3, strategy="margin", random_state=0)) == 3


def test_map_matches_a_series_by_index_when_set_later_and_when_labels_give_the_index():
    from embetter.label import LabellingMap

    coords = np.arange(6.0).reshape(3, 2)
    texts = pd.Series(["hi", "refund", "where"], index=[10, 11, 12])
    shuffled = pd.Series({12: "shipping", 10: "greeting", 11: "money"})
    widget = LabellingMap(coords=coords, texts=texts)
    widget.predicted = shuffled
    assert widget.predicted == ["greeting", "money", "shipping"]
    widget.assigned = shuffled
    assert widget.labels.to_dict() == {10: "greeting", 11: "money", 12: "shipping"}
    labels = pd.Series(["a", None, "b"], index=[10, 11, 12])
    other = LabellingMap(coords=coords, texts=["hi", "refund", "where"], labels=labels,
                         predictions=pd.Series({12: "b", 10: "a", 11: "c"}))
    assert other.predicted == ["a", "c", "b"]
    with pytest.raises(ValueError, match="index differs"):  # texts gave the index
        widget.predicted = pd.Series(["a", "b", "c"], index=[0, 1, 2])


@pytest.mark.parametrize("height", [5, 0, True])
def test_map_height_set_later_is_checked_as_at_construction(height):
    from embetter.label import LabellingMap

    widget = LabellingMap(coords=np.arange(6.0).reshape(3, 2))
    with pytest.raises(ValueError, match="height must be an int of at least 100"):
        widget.height = height
    widget.height = 300
    assert widget.height == 300


def test_loop_takes_a_set_of_classes_and_names_a_missing_or_mixed_one():
    loop = LabellingLoop(LogisticRegression(), POOL, classes={"b", "a"}, random_state=0)
    assert loop.classes_.tolist() == ["a", "b"]
    with pytest.raises(ValueError, match="missing value, got None"):
        LabellingLoop(LogisticRegression(), POOL, classes=["a", None])
    with pytest.raises(ValueError, match="all strings or all numbers"):
        LabellingLoop(LogisticRegression(), POOL, classes=np.array(["a", 1], dtype=object))


def test_map_takes_predictions_in_order_where_only_labels_gave_the_index():
    from embetter.label import LabellingMap

    labels = pd.Series(["a", None, None, "b"], index=[10, 11, 12, 13])
    widget = LabellingMap(coords=np.arange(8.0).reshape(4, 2), labels=labels,
                          predictions=pd.Series(["x", "x", "y", "y"]))
    assert widget.predicted == ["x", "x", "y", "y"]


def test_loop_fits_a_cached_lite_encoder_once_on_the_pool(tmp_path):
    # a LiteTextEncoder inside `cached` was refitted on the labelled rows every round, and
    # the whole pool written to the cache again each time
    from embetter.datasets import load_support_inbox
    from embetter.text import LiteTextEncoder
    from embetter.utils import cached

    texts, labels = load_support_inbox()
    texts, labels = texts[:200], np.asarray(labels[:200])
    loop = LabellingLoop(make_pipeline(cached(tmp_path / "c", LiteTextEncoder(random_state=0)),
                                       LogisticRegression()),
                         texts, classes=sorted(set(labels)), random_state=0)
    assert [type(step).__name__ for step in loop._learned] == ["LogisticRegression"]
    for _ in range(3):
        rows = loop.suggest(10)
        loop.update(rows, labels[rows])
    plain = LiteTextEncoder(random_state=0).fit(texts)
    np.testing.assert_allclose(loop.model_[0].transform(texts[:5]), plain.transform(texts[:5]),
                               atol=1e-5)


def test_loop_fits_a_balanced_head_instead_of_streaming_it():
    # scikit-learn refuses class_weight="balanced" in partial_fit: every update failed
    head = SGDClassifier(loss="log_loss", class_weight="balanced", random_state=0)
    loop = LabellingLoop(head, POOL, classes=["a", "b"], random_state=0)
    loop.update([0, 1, 20, 21], ["a", "a", "b", "b"])
    assert loop.fitted_ and loop.suggest(5).shape == (5,)


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA], ids=["None", "nan", "NA"])
def test_a_missing_label_is_called_missing(missing):
    # NaN among strings became 'nan' ("outside classes"), pd.NA broke the class check
    loop = LabellingLoop(LogisticRegression(), POOL, classes=["a", "b"], random_state=0)
    with pytest.raises(ValueError, match=r"labels\[1\] is missing"):
        loop.update([0, 1], ["a", missing])
    with pytest.raises(ValueError, match=r"labels\[1\] is missing"):
        loop.update([0, 1], pd.Series(["a", missing], dtype=object))


def test_random_suggestions_do_not_ask_the_model(monkeypatch):
    loop = LabellingLoop(LogisticRegression(), POOL, classes=["a", "b"], strategy="random",
                         random_state=0)
    loop.update([0, 1, 20, 21], ["a", "a", "b", "b"])
    monkeypatch.setattr(loop.model_, "predict_proba", None)  # would raise if called
    monkeypatch.setattr(type(loop), "_head", lambda self, Z: pytest.fail("pool encoded"))
    assert loop.suggest(5).shape == (5,)


def test_distances_to_many_centres_go_in_blocks_the_pool_bounds(monkeypatch):
    # blocks of 512 centres whatever the pool: 100,000 rows made arrays of 400 MB each
    from embetter.label import _strategies

    Z = RNG.normal(size=(50, 3))
    centres = RNG.normal(size=(40, 3))
    expected = _strategies._sq_dist_to(Z, centres)
    shapes = []
    real = _strategies._cross
    monkeypatch.setattr(_strategies, "_cross",
                        lambda A, B: shapes.append(B.shape) or real(A, B))
    monkeypatch.setattr(_strategies, "_BLOCK_CELLS", 500)  # 10 centres per block of 50 rows
    np.testing.assert_allclose(_strategies._sq_dist_to(Z, centres), expected)
    assert max(shape[0] for shape in shapes) == 10 and len(shapes) == 4


def test_a_sparse_pool_is_never_densified_by_its_vocabulary():
    """TypiClust's reference rows and k-center's centres were made dense: up to 1,000 rows
    times the whole vocabulary (1.5 GB on a 10,000 x 100,000 TF-IDF pool) for one query."""
    import tracemalloc

    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    from embetter.label import suggest

    rng = np.random.default_rng(0)
    n, vocab = 3000, 100_000
    topic = rng.integers(0, 5, n)
    cols = (topic[:, None] * 1000 + rng.integers(0, 1000, (n, 20))).ravel()
    X = sp.csr_matrix((np.ones(n * 20), (np.repeat(np.arange(n), 20), cols)), shape=(n, vocab))
    X = X.multiply(1 / np.sqrt(X.multiply(X).sum(axis=1))).tocsr()
    clf = LogisticRegression().fit(X[:600], topic[:600])
    for strategy, labelled in (("auto", np.arange(2)), ("kcenter", np.arange(600))):
        tracemalloc.start()
        picks = suggest(clf, X, 10, strategy=strategy, random_state=0, labelled=labelled)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(set(picks.tolist())) == 10 and not set(picks.tolist()) & set(labelled)
        assert peak < 150e6, (strategy, peak / 1e6)


@pytest.mark.parametrize("cold", [True, False])
def test_a_float32_pool_is_not_copied_to_float64(cold):
    """A float32 pool (embeddings) was copied to float64 before its distances were measured,
    and k-means copied that again: a call's peak memory grew by 2 to 4 times the pool's own
    (899 MB at a cold start on 100,000 rows of 384 floats). What a call needs beyond the pool
    is now the same for a large pool as for a small one."""
    import tracemalloc

    from sklearn.linear_model import LogisticRegression

    from embetter.label import suggest
    from embetter.label._suggest import as_space

    rng = np.random.default_rng(0)
    peaks, sizes = [], []
    for n in (20_000, 60_000):
        y = rng.integers(0, 4, n)
        X = (rng.normal(size=(4, 64))[y] + rng.normal(scale=2.0, size=(n, 64))).astype(
            np.float32)
        assert np.shares_memory(as_space(X, "auto"), X)
        labelled = np.unique(y, return_index=True)[1] if cold else np.arange(200)
        clf = LogisticRegression().fit(X[labelled], y[labelled])
        tracemalloc.start()
        try:
            suggest(clf, X, k=2, random_state=0, labelled=labelled)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        sizes.append(X.nbytes)
    assert peaks[1] - peaks[0] < 0.5 * (sizes[1] - sizes[0]), (peaks, sizes)


def test_a_float32_pool_far_from_the_origin_keeps_its_distances():
    """Kept in float32, rows of raw features (about 1,000, spread by 0.05) lost their
    distances in the expansion z2 - 2zc + c2: kcenter stopped picking the farthest rows, and
    a row equal to a labelled one came out at a distance over 0. The rows are shifted by
    their mean first (distances unchanged): the picks are farthest-first, exactly."""
    from sklearn.linear_model import LogisticRegression

    from embetter.label import suggest

    rng = np.random.default_rng(0)
    X = (1000.0 + rng.normal(scale=0.05, size=(400, 16))).astype(np.float32)
    X[:5] = X[5]  # rows 0-4 copy labelled row 5
    labelled = np.array([5, 6, 7, 8])
    clf = LogisticRegression().fit(X[labelled], [0, 1, 0, 1])
    picks = suggest(clf, X, k=5, strategy="kcenter", random_state=0, labelled=labelled)
    Z = X.astype(np.float64)

    def nearest(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).min(1)

    dist, exact = nearest(Z, Z[labelled]), []
    dist[labelled] = -1
    for _ in range(5):
        exact.append(int(np.argmax(dist)))
        dist = np.minimum(dist, nearest(Z, Z[exact[-1]:exact[-1] + 1]))
        dist[exact] = -1
    assert picks.tolist() == exact


def test_first_picks_of_a_float32_pool_far_from_the_origin_are_float64s():
    """auto's first rounds measure distances between the pool's rows (its neighbourhoods, each
    row's typicality): in float32 around an offset of 1,000 they were rounding noise."""
    from sklearn.linear_model import LogisticRegression

    from embetter.label import suggest

    rng = np.random.default_rng(1)
    centres = rng.normal(scale=0.05, size=(4, 8))
    y = np.repeat(np.arange(4), 100)
    X = (1000.0 + centres[y] + rng.normal(scale=0.01, size=(400, 8))).astype(np.float32)
    labelled = np.array([0, 100, 200, 300])
    clf = LogisticRegression().fit(X[labelled], y[labelled])
    picks = [suggest(clf, X.astype(dtype), k=6, random_state=0, labelled=labelled)
             for dtype in (np.float32, np.float64)]
    assert sorted(picks[0].tolist()) == sorted(picks[1].tolist())


def test_coverage_balls_keep_rows_exactly_at_their_radius():
    """On binary features many distances equal the radius exactly; shifted by their mean,
    they came out a few ULPs apart and rows on a ball's edge dropped out by rounding (picks
    that were not the best next ones on the exact balls: 192 rows covered, not 195)."""
    from sklearn.utils import check_random_state

    from embetter.label._coverage import coverage_pick

    Z = (np.random.RandomState(0).rand(300, 12) < 0.3).astype(np.float64)
    d = np.sqrt(((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1))  # exact: small integers
    radius = np.median(np.sort(d, axis=1)[:, 10])
    balls = d <= radius
    picks = coverage_pick(Z, np.arange(300), np.zeros(0, dtype=np.intp), 10,
                          check_random_state(0))
    covered = np.zeros(300, dtype=bool)
    for j, p in enumerate(picks):  # each pick the best next one on the exact balls
        gain = balls[:, ~covered].sum(axis=1)
        gain[picks[:j]] = -1
        assert gain[p] == gain.max(), (j, gain[p], gain.max())
        covered |= balls[p]


def test_coverage_of_a_sample_short_of_rows_adds_only_k_others(monkeypatch):
    """When k passed the unlabelled rows of a large pool's sample, every row of the pool
    became a candidate: distance matrices of sample x pool (3.2 GB each for k=2,000 on
    200,000 rows). Only the missing picks' worth of other rows join now."""
    import tracemalloc

    from sklearn.utils import check_random_state

    from embetter.label import _coverage

    monkeypatch.setattr(_coverage, "COVERAGE_ROWS", 200)
    Z = np.random.RandomState(0).randn(40_000, 8).astype(np.float32)
    tracemalloc.start()
    try:
        picks = _coverage.coverage_pick(Z, np.arange(40_000), np.zeros(0, dtype=np.intp), 201,
                                        check_random_state(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(set(picks.tolist())) == 201
    assert peak < 20e6, peak / 1e6


class _Rescaled(ClassifierMixin, BaseEstimator):
    """A fitted classifier of rows `scale` times larger (then moved by `offset`) than those
    `clf` was fitted on."""

    def __init__(self, clf=None, scale=1.0, offset=0.0):
        self.clf, self.scale, self.offset = clf, scale, offset

    def fit(self, X, y):
        return self

    def __sklearn_is_fitted__(self):
        return True

    @property
    def classes_(self):
        return self.clf.classes_

    def predict_proba(self, X):
        X = X.toarray() if sp.issparse(X) else np.asarray(X)
        return self.clf.predict_proba((X.astype(np.float64) - self.offset) / self.scale)


@pytest.mark.parametrize("scale, offset, dtype", [(1e200, 0.0, np.float64),
                                                  (1e147, 1e155, np.float64),
                                                  (1e30, 0.0, np.float32),
                                                  (1e18, 0.0, np.float32)])
def test_huge_rows_pick_as_their_scaled_down_copy(scale, offset, dtype):
    """Finite rows around 1e154 (float64) or 1e17 (float32) made squared distances overflow:
    numpy warnings and picks in index order. The pool is measured scaled down now, just
    enough (rows far from the origin but close together keep their spread): the same picks
    as on the rows before scaling up, no warning; sparse pools alike."""
    import warnings

    X, blob = make_blobs(n_samples=300, centers=4, n_features=5, random_state=0)
    y = np.where(blob < 2, "a", "b")
    clf = LogisticRegression().fit(X[:6], y[:6])
    big = (X * scale + offset).astype(dtype)
    shown = _Rescaled(clf, scale, offset)
    pools = [(big, X.astype(dtype))]
    if not offset:
        pools.append((sp.csr_matrix(big), sp.csr_matrix(X.astype(dtype))))
    for huge, plain in pools:
        for strategy in ("auto", "kcenter"):
            for labelled in (np.arange(6), np.arange(40)):
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    picks = suggest(shown, huge, k=5, strategy=strategy, random_state=0,
                                    labelled=labelled)
                np.testing.assert_array_equal(picks, suggest(
                    clf, plain, k=5, strategy=strategy, random_state=0, labelled=labelled))
