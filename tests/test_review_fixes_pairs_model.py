"""Fixes from a review of DifferenceClassifier's encoder fitting: each test failed on the code
before its fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from embetter.grab import ColumnGrabber
from embetter.model import DifferenceClassifier

LEFT = ["a cat sits", "stocks fell", "I love pizza", "rain is coming"]
RIGHT = ["a kitten sits", "markets dropped", "the train is late", "my phone broke"]
Y = [1, 1, 0, 0]


def test_frames_with_the_same_columns_in_another_order_are_matched_by_name():
    # before: X2's columns renamed as X1's by position: the vectorizer learned X2's ids
    X1 = pd.DataFrame({"text": LEFT, "id": ["id1", "id2", "id3", "id4"]})
    X2 = pd.DataFrame({"id": ["zz1", "zz2", "zz3", "zz4"], "text": RIGHT})
    clf = DifferenceClassifier(enc=make_pipeline(ColumnGrabber("text"), TfidfVectorizer()))
    vocabulary = clf.fit(X1, X2, Y).enc_[-1].vocabulary_
    assert "kitten" in vocabulary and "zz1" not in vocabulary


def test_frames_with_other_columns_fit_the_encoder_on_their_shared_one():
    # before: numpy's "all the input array dimensions ... must match exactly"
    X1 = pd.DataFrame({"text": LEFT, "id": ["id1", "id2", "id3", "id4"]})
    X2 = pd.DataFrame({"text": RIGHT})
    clf = DifferenceClassifier(enc=make_pipeline(ColumnGrabber("text"), TfidfVectorizer()))
    assert clf.fit(X1, X2, Y).predict(X1, X2).shape == (4,)
    assert "kitten" in clf.enc_[-1].vocabulary_


def test_sparse_sides_fit_the_encoder():
    # before: "zero-dimensional arrays cannot be concatenated"
    counts = CountVectorizer().fit(LEFT + RIGHT)
    S1, S2 = counts.transform(LEFT), counts.transform(RIGHT)
    clf = DifferenceClassifier(enc=TfidfTransformer()).fit(S1, S2, Y)
    assert clf.enc_.idf_.shape == (S1.shape[1],)
    assert clf.predict(S1, S2).shape == (4,)


def test_a_pipeline_whose_last_step_is_stateless_is_fitted_when_it_is_not():
    # before: scikit-learn's check looked at the Normalizer only: "not fitted" at fit
    enc = make_pipeline(TfidfVectorizer(), Normalizer())
    clf = DifferenceClassifier(enc=enc).fit(LEFT, RIGHT, Y)
    assert np.array_equal(clf.predict(LEFT, RIGHT), clf.predict(LEFT, RIGHT))
    assert not hasattr(enc[0], "vocabulary_")  # the caller's pipeline is left unfitted
    fitted = make_pipeline(TfidfVectorizer(), Normalizer()).fit(["one two", "three"])
    again = DifferenceClassifier(enc=fitted).fit(LEFT, RIGHT, Y)
    assert again.enc_ is not fitted and sorted(again.enc_[0].vocabulary_) == ["one", "three",
                                                                                "two"]


def test_the_head_decides_which_methods_exist():
    from sklearn.svm import LinearSVC

    clf = DifferenceClassifier(enc=TfidfVectorizer(), clf_head=LinearSVC()).fit(LEFT, RIGHT, Y)
    assert not hasattr(clf, "predict_proba")  # was True, and calling it raised
    assert clf.decision_function(LEFT, RIGHT).shape == (4,)
    assert hasattr(DifferenceClassifier(), "predict_proba")


def test_a_vectorizers_differences_stay_sparse():
    from scipy import sparse

    clf = DifferenceClassifier(enc=TfidfVectorizer()).fit(LEFT, RIGHT, Y)
    assert sparse.issparse(clf._features(clf.enc_, LEFT, RIGHT, clf.clf_))
    assert clf.predict_proba(LEFT, RIGHT).shape == (4, 2)


def test_a_head_that_needs_dense_input_gets_it():
    from sklearn.naive_bayes import GaussianNB

    clf = DifferenceClassifier(enc=TfidfVectorizer(), clf_head=GaussianNB()).fit(LEFT, RIGHT, Y)
    assert clf.predict(LEFT, RIGHT).shape == (4,)
