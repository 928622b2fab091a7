"""Fixes from a review of DifferenceClassifier, the grabbers and calc_distances (session 27):
each test failed on the code before its fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline

from embetter.grab import ColumnGrabber, KeyGrabber
from embetter.model import DifferenceClassifier
from embetter.utils import batched, calc_distances

TEXTS = ["the cat sat", "a dog ran", "the cat ran", "a bird sang", "the dog sat", "a cat sang"]
X1, X2 = TEXTS[:4], TEXTS[2:]
Y = [1, 0, 1, 0]


def test_calc_distances_takes_a_sparse_pipeline_and_names_a_string_argument():
    tfidf = TfidfVectorizer().fit(TEXTS)
    d = calc_distances(TEXTS, ["the cat"], tfidf)  # "sparse array length is ambiguous"
    assert d.shape == (6,) and d[0] < d[3]
    with pytest.raises(TypeError, match="anchors must be a list of texts"):
        calc_distances(TEXTS, "the cat", tfidf)  # "X must be a collection of texts"


def test_difference_classifier_uses_an_encoder_that_is_no_estimator_as_it_is():
    class Lengths:  # fit and transform, no scikit-learn base class
        def fit(self, X, y=None):
            return self

        def transform(self, X):
            return np.array([[len(t), t.count("a")] for t in X], dtype=float)

    # AttributeError: no attribute '__sklearn_tags__'
    assert DifferenceClassifier(Lengths()).fit(X1, X2, Y).predict(X1, X2).shape == (4,)


def test_difference_classifier_fits_its_encoder_on_dicts_of_columns():
    enc = make_pipeline(ColumnGrabber("text"), TfidfVectorizer())
    model = DifferenceClassifier(enc).fit({"text": X1}, {"text": X2}, Y)  # fitted on the keys
    assert model.predict({"text": X1}, {"text": X2}).shape == (4,)


def test_difference_classifier_refuses_a_class_and_a_regressor_up_front():
    with pytest.raises(TypeError, match="pass TfidfVectorizer()"):
        DifferenceClassifier(TfidfVectorizer).fit(X1, X2, Y)  # missing 'raw_documents'
    with pytest.raises(TypeError, match="clf_head must be None or a classifier"):
        DifferenceClassifier(TfidfVectorizer(), clf_head=LinearRegression()).fit(X1, X2, Y)


def test_grabbers_name_their_own_mistakes():
    frame = pd.DataFrame({"text": TEXTS, "y": range(6)})
    with pytest.raises(TypeError, match="colname must be one column's name"):
        ColumnGrabber(np.array(["text", "y"])).transform(frame)  # numpy's truth-value error
    with pytest.raises(TypeError, match="for a DataFrame use ColumnGrabber"):
        KeyGrabber("text").transform(frame)  # "X[0] must be a dict, got str"


def test_batched_checks_n_when_called():
    with pytest.raises(ValueError, match="n"):
        batched(range(5), 0)  # a generator: raised only when first iterated
    assert list(batched(range(5), 2)) == [[0, 1], [2, 3], [4]]


def test_projection_takes_a_generator_of_labels_every_row_labelled():
    # before: the generator was read for the missing-label check, then again (empty):
    # "y must be 1-D, got shape ()"
    pytest.importorskip("matplotlib")
    from embetter.plot import projection

    X = np.random.default_rng(0).normal(size=(6, 4))
    fig = projection(X, (label for label in "aabbcc"))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b", "c"]


def test_calc_distances_takes_an_encoder_that_returns_a_list_of_vectors():
    # before: AttributeError: 'list' object has no attribute 'shape'
    from sklearn.metrics import pairwise_distances
    from sklearn.preprocessing import FunctionTransformer

    from embetter.utils import calc_distances

    enc = FunctionTransformer(lambda X: [[float(len(t)), 1.0] for t in X])
    expected = pairwise_distances([[1.0, 1.0], [2.0, 1.0]], [[3.0, 1.0]], metric="cosine")
    np.testing.assert_allclose(calc_distances(["a", "bb"], ["ccc"], enc), expected.max(1))
