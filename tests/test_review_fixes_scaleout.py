"""Findings of a review of Dask scale-out, distances, DifferenceClassifier and the grabbers
(a scikit-learn user's session); each test failed before its fix."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline, make_union
from sklearn.preprocessing import FunctionTransformer, Normalizer

from embetter.grab import ColumnGrabber, KeyGrabber
from embetter.model import DifferenceClassifier
from embetter.text import LiteTextEncoder
from embetter.utils import cached, calc_distances
from tests._threads import ForeignWarningsBlock

TEXTS = ["a cat sits", "a dog runs", "the cat sleeps", "refund my order", "my order is late",
         "where is my parcel", "a dog barks", "send the money back"]


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed", reason="embetter.dask needs the dask extra (in dev)")
    pytest.importorskip("pyarrow", reason="dask.dataframe needs pyarrow (in dev)")
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                     dashboard_address=None, silence_logs=40) as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield c


def _frame():
    import dask.dataframe as dd

    return dd.from_pandas(pd.DataFrame({"text": TEXTS * 5}), npartitions=2)


class Lower(BaseEstimator, TransformerMixin):
    """A stateless step of the user's own (no fitted attribute to show)."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return [text.lower() for text in X]


def test_dask_refuses_a_pipeline_with_an_unfitted_step_before_it_runs(client, tmp_path):
    """scikit-learn's check looks at the last step only (a stateless Normalizer); the probe
    turned the NotFittedError into advice to pass dim=, and with dim= the job failed on the
    workers. Inside a disk cache too; a fitted pipeline with a stateless step of the user's
    own before the last is taken (the first fix refused it)."""
    from embetter.dask import transform

    unfitted = make_pipeline(LiteTextEncoder(n_components=4), Normalizer())
    for pipe in (unfitted, cached(tmp_path / "c", unfitted)):
        for dim in (None, 4):
            with pytest.raises(NotFittedError, match="LiteTextEncoder"):
                transform(pipe, _frame(), column="text", client=client, dim=dim)
    fitted = make_pipeline(Lower(), LiteTextEncoder(n_components=3, random_state=0)).fit(TEXTS)
    got = client.compute(transform(fitted, _frame(), column="text", client=client), sync=True)
    np.testing.assert_allclose(got[:8], fitted.transform(TEXTS), rtol=1e-5, atol=1e-6)


def test_dask_calls_from_threads_leave_the_warning_filters_as_they_were(client, monkeypatch):
    """catch_warnings is not thread-safe: another thread's block that began while a
    transform was sending its pipeline, and ended after, put back its filter (distributed's
    size advice silenced for good). A small pipeline no longer touches the filters."""
    from embetter.dask import transform

    pipe = make_pipeline(LiteTextEncoder(n_components=4, random_state=0)).fit(TEXTS)
    before = list(warnings.filters)
    other = ForeignWarningsBlock()
    real = client.submit

    def submit(*args, **kwargs):  # (the other thread's block begins inside the sending)
        other.begin()
        return real(*args, **kwargs)

    monkeypatch.setattr(client, "submit", submit)
    transform(pipe, _frame(), column="text", client=client, dim=4)
    other.end()
    assert list(warnings.filters) == before


def test_dask_silences_the_size_advice_just_under_its_threshold(client):
    """distributed measures the whole graph, a little more than the pipeline: a pipeline just
    under the threshold got the advice all the same."""
    import dask
    import dask.bag as db

    from embetter.dask import _pickled, transform

    weights = np.random.default_rng(0).standard_normal(4000).astype(np.float32)  # 16 kB
    pipe = make_pipeline(FunctionTransformer(_first_columns, kw_args={"weights": weights}))
    pipe.fit(np.ones((2, 3)))
    rows = db.from_sequence([[1.0, 2.0, 3.0]] * 4, npartitions=2)
    size = len(_pickled(pipe))
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": f"{size + 20}B"}), \
            warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        transform(pipe, rows, client=client, dim=2)
    assert not [w for w in shown if "Sending large graph" in str(w.message)]


def _first_columns(X, weights):
    return np.asarray(X)[:, :2]


def test_dask_width_probe_leaves_the_callers_cache_alone_and_compute_through_client(
        client, tmp_path):
    import diskcache

    from embetter.dask import transform

    encoder = cached(tmp_path / "cache", LiteTextEncoder(n_components=3, random_state=0)
                     .fit(TEXTS))
    X = transform(encoder, _frame(), column="text", client=client)
    assert X.shape[1] == 3
    with diskcache.Cache(str(tmp_path / "cache")) as stored:
        assert len(stored) == 0  # (the made-up probe texts were stored: 2 rows)
    union = make_union(cached(tmp_path / "u1", LiteTextEncoder(n_components=3, random_state=0)
                              .fit(TEXTS)), cached(tmp_path / "u2", LiteTextEncoder(
                                  n_components=2, random_state=0).fit(TEXTS)))
    assert transform(union, _frame(), column="text", client=client).shape[1] == 5
    for folder in ("u1", "u2"):  # (a feature union's caches stored the probe's texts)
        with diskcache.Cache(str(tmp_path / folder)) as stored:
            assert len(stored) == 0
    # the docs' way with a client that is not the default one
    got = X.compute(scheduler=client)
    np.testing.assert_allclose(got[:8], encoder.encoder.transform(TEXTS), rtol=1e-5,
                               atol=1e-6)


def test_difference_classifier_reads_pyarrow_arrays_as_texts():
    pa = pytest.importorskip("pyarrow")
    X1, X2 = TEXTS[:4] * 2, TEXTS[4:] * 2
    y = [0, 1] * 4
    for wrap in (pa.array, lambda v: pa.chunked_array([v[:3], v[3:]])):
        clf = DifferenceClassifier(enc=LiteTextEncoder(n_components=3, random_state=0))
        clf.fit(wrap(X1), wrap(X2), y)
        np.testing.assert_array_equal(clf.predict(wrap(X1), wrap(X2)), clf.predict(X1, X2))


def test_difference_classifier_score_names_the_pairs():
    clf = DifferenceClassifier(enc=LiteTextEncoder(n_components=3, random_state=0))
    clf.fit(TEXTS[:4], TEXTS[4:], [0, 1, 0, 1])
    with pytest.raises(ValueError, match="y has 2 entries but X1 and X2 hold 4 pairs"):
        clf.score(TEXTS[:4], TEXTS[4:], [1, 0])


def test_calc_distances_names_a_pipeline_without_2d_numbers():
    flat = FunctionTransformer(lambda X: np.ones(len(X)))
    with pytest.raises(ValueError, match=r"pipeline must return a 2-D array .* shape \(3,\)"):
        calc_distances(["a", "b", "c"], ["x"], flat)
    with pytest.raises(ValueError, match=r"anchor_pipeline must return a 2-D array"):
        calc_distances(["a", "b", "c"], ["x", "y", "z"],
                       FunctionTransformer(lambda X: np.ones((len(X), 3))), flat)
    nullable = FunctionTransformer(lambda X: pd.DataFrame(
        {"a": pd.array([1.0, None, 2.0][:len(X)], dtype="Float64"), "b": 1.0}))
    with pytest.raises(ValueError, match="pipeline gave values that are not numbers"):
        calc_distances(["a", "b", "c"], ["x"], nullable)
    missing = FunctionTransformer(lambda X: np.array([[None, 1.0]] * len(X), dtype=object))
    with pytest.raises(ValueError, match="pipeline gave vectors holding NaN"):
        calc_distances(["a", "b"], ["x"], missing)
    fine = FunctionTransformer(lambda X: np.array([[float(len(t)), 1.0] for t in X],
                                                  dtype=object))
    assert calc_distances(["a", "bb"], ["a"], fine).shape == (2,)


@pytest.mark.parametrize("grabber", [ColumnGrabber("text"), KeyGrabber("text")])
def test_grabbers_refuse_an_unknown_output_container(grabber):
    with pytest.raises(ValueError, match="output config must be in"):
        grabber.set_output(transform="pnadas")
    assert grabber.set_output(transform="polars") is grabber


class Learns(BaseEstimator, TransformerMixin):
    """A learner of the user's own (fitted state: `mean_`)."""

    def fit(self, X, y=None):
        self.mean_ = np.asarray(X, dtype=float).mean(axis=0)
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float) - self.mean_


def test_difference_classifier_fits_an_unfitted_learner_of_the_users_own_before_the_last():
    """The leniency for a user's stateless step is dask's alone: DifferenceClassifier fits a
    copy of an encoder it cannot tell fitted (the lenient check used it unfitted: an
    AttributeError)."""
    rows = np.random.default_rng(0).normal(size=(8, 5))
    clf = DifferenceClassifier(enc=make_pipeline(Learns(), Normalizer()))
    clf.fit(rows[:4], rows[4:], [0, 1, 0, 1])
    assert clf.predict(rows[:4], rows[4:]).shape == (4,)


def test_dask_lets_a_stateless_step_through_wherever_it_sits_and_skips_caches_in_columns(
        client, tmp_path):
    import diskcache
    from sklearn.compose import ColumnTransformer

    from embetter.dask import _check_pipeline, _probe_dim

    lite = LiteTextEncoder(n_components=3, random_state=0).fit(TEXTS)
    for wrapped in (cached(tmp_path / "a", Lower()), make_union(Lower())):
        _check_pipeline(make_pipeline(wrapped, FunctionTransformer(lambda t: lite.transform(
            [x[0] if isinstance(x, (list, np.ndarray)) else x for x in t])), Normalizer()))
    frame = pd.DataFrame({"text": TEXTS})
    columns = make_pipeline(ColumnTransformer([("t", cached(tmp_path / "b", lite), "text")]),
                            Normalizer()).fit(frame)
    import dask.dataframe as dd

    with diskcache.Cache(str(tmp_path / "b")) as stored:
        before = len(stored)
    assert _probe_dim(columns, dd.from_pandas(frame, npartitions=1), "frame") == 3
    with diskcache.Cache(str(tmp_path / "b")) as stored:
        assert len(stored) == before  # (the two made-up texts were stored)
