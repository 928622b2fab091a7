"""Fixes from a review of the scikit-learn contract across the estimators: each test failed on
the code before its fix."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from embetter.finetune import ContrastiveLearner, ContrastiveTuner, FeedForwardTuner
from embetter.utils import load_skops, save_skops

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 8)).astype(np.float32)
y = np.arange(60) % 3


@pytest.mark.parametrize("make, change", [
    (lambda: FeedForwardTuner(hidden_dim=8, n_epochs=3, random_state=0),
     {"activation": "tanh", "hidden_dim": 16}),
    (lambda: ContrastiveTuner(hidden_dim=4, epochs=2, random_state=0), {"hidden_dim": 3}),
])
def test_a_saved_head_is_the_network_it_trained_whatever_set_params_did(make, change, tmp_path):
    head = make().fit(X, y)
    before = head.transform(X)
    head.set_params(**change)  # no refit: the network in memory stays the trained one
    np.testing.assert_array_equal(head.transform(X), before)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(head)).transform(X), before, atol=1e-6)
    path = save_skops(head, tmp_path / "head.skops")
    np.testing.assert_allclose(load_skops(path).transform(X), before, atol=1e-6)
    assert make().fit(X, y).set_params(**change).fit(X, y).transform(X).shape[1] == \
        change.get("hidden_dim")  # a refit builds the new network


def test_a_saved_learner_is_the_network_it_trained_whatever_set_params_did(tmp_path):
    learner = ContrastiveLearner(epochs=2, shape_out=4, random_state=0)
    learner.fit(X[:30], X[30:], (np.arange(30) % 2).astype(float))
    before = learner.transform(X)
    path = learner.set_params(shape_out=3).save(tmp_path / "learner.pt")
    back = ContrastiveLearner.load(path)
    np.testing.assert_allclose(back.transform(X), before, atol=1e-6)
    assert back.shape_out == 4  # the loaded learner states what it is


def test_cached_pipelines_load_from_skops(tmp_path):
    from sklearn.pipeline import make_pipeline

    from embetter.grab import ColumnGrabber
    from embetter.text import LiteTextEncoder
    from embetter.utils import cached

    texts = ["hello there", "refund please", "where is my parcel", "great stuff"]
    frame = pd.DataFrame({"text": texts})
    enc = cached(tmp_path / "cache", LiteTextEncoder(n_components=2, random_state=0))
    pipe = make_pipeline(ColumnGrabber("text"), enc.fit(texts))
    back = load_skops(save_skops(pipe, tmp_path / "p.skops"))  # UntrustedTypesError before
    np.testing.assert_allclose(back.transform(frame), pipe.transform(frame))


@pytest.mark.parametrize("make", [FeedForwardTuner, ContrastiveTuner])
def test_tuners_refuse_continuous_targets(make):
    with pytest.raises(ValueError, match="y holds continuous values"):
        make().fit(X, RNG.normal(size=60))  # every row became a class of its own
    assert make(random_state=0).fit(X, (np.arange(60) % 2).astype(float)).classes_.size == 2


@pytest.mark.parametrize("make", [lambda: FeedForwardTuner(hidden_dim=3),
                                  lambda: ContrastiveTuner(hidden_dim=3),
                                  lambda: ContrastiveLearner(shape_out=3)])
def test_feature_names_need_a_fit(make):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        make().get_feature_names_out()


def test_difference_classifier_checks_its_parts_and_takes_no_pairs():
    from sklearn.svm import LinearSVC

    from embetter.model import DifferenceClassifier
    from embetter.text import LiteTextEncoder

    texts = ["a b", "c d", "e f", "g h", "i j", "k l"]
    lite = LiteTextEncoder(n_components=2, random_state=0).fit(texts)
    with pytest.raises(TypeError, match="enc must be None or a transformer"):
        DifferenceClassifier("all-MiniLM-L6-v2").fit(texts[:3], texts[3:], [0, 1, 0])
    fitted = DifferenceClassifier(lite).fit(texts[:3], texts[3:], [0, 1, 0])
    assert fitted.predict([], []).shape == (0,)
    assert fitted.predict_proba([], []).shape == (0, 2)
    svc = DifferenceClassifier(lite, clf_head=LinearSVC()).fit(texts[:3], texts[3:], [0, 1, 0])
    with pytest.raises(AttributeError, match="has no predict_proba"):
        svc.predict_proba(texts[:3], texts[3:])


def test_texts_must_come_in_an_order():
    from embetter._validation import as_texts

    with pytest.raises(TypeError, match="ordered collection of texts.*got a set"):
        as_texts({"apple", "banana"})


def test_numeric_input_refuses_dates_and_reports_missing_values_once():
    from embetter._validation import as_matrix

    with pytest.raises(TypeError, match="holding dates or durations"):
        as_matrix(np.array([[np.datetime64("2020-01-01")] * 4]))
    with pytest.raises(TypeError, match="holding dates or durations"):
        as_matrix(pd.DataFrame({"when": pd.to_datetime(["2020-01-01", "2020-01-02"])}))
    with pytest.raises(TypeError) as e:
        as_matrix(np.array([["a"] * 6]))
    assert str(e.value).count("must be a 2-D array") == 1
    frame = pd.DataFrame(np.ones((2, 3))).astype("Float32")
    frame.iloc[0, 0] = pd.NA
    with pytest.raises(ValueError, match="contains NaN or infinity"):
        as_matrix(frame)


def test_lite_encoder_checks_its_parameters():
    from embetter.text import LiteTextEncoder

    texts = ["a b c", "d e f", "g h i", "j k l"]
    for params, name in ((dict(normalize="no"), "normalize"), (dict(max_features=-3),
                                                             "max_features")):
        with pytest.raises(ValueError, match=f"'{name}' parameter of LiteTextEncoder"):
            LiteTextEncoder(n_components=2, **params).fit(texts)


def test_contrastive_learner_checks_the_column_names_of_x1_in_predict():
    cols = [f"c{i}" for i in range(8)]
    left, right = pd.DataFrame(X[:30], columns=cols), pd.DataFrame(X[30:], columns=cols)
    other = pd.DataFrame(X[30:], columns=list("abcdefgh"))
    target = (np.arange(30) % 2).astype(float)
    fitted = ContrastiveLearner(epochs=1, random_state=0).fit(left, right, target)
    with pytest.raises(ValueError, match="feature names should match"):
        fitted.predict(other, right)  # as transform(other) does
    # the second side may name its columns apart (left_0 / right_0), in fit and predict
    assert ContrastiveLearner(epochs=1).fit(left, other, target).predict(left, other).shape \
        == (30,)


def test_frames_of_strings_or_complex_numbers_are_still_refused():
    from embetter._validation import as_matrix

    with pytest.raises(TypeError, match="holding strings"):
        as_matrix(pd.DataFrame({"a": ["1.5", "2"], "b": ["3", "4"]}))
    with pytest.raises(TypeError, match="holding strings"):
        as_matrix(pd.DataFrame({"a": ["1", "2"]}, dtype="string"))
    with pytest.raises(ValueError, match="Complex data not supported"):
        as_matrix(pd.DataFrame({"a": [1 + 1j, 3 + 2j]}))


def test_difference_classifier_fits_its_encoder_on_sides_named_apart():
    from embetter.model import DifferenceClassifier
    from embetter.text import LiteTextEncoder

    texts = [f"refund order {i}" for i in range(10)] + [f"where parcel {i}" for i in range(10)]
    frame = pd.DataFrame({"q1": texts[::2], "q2": texts[1::2]})
    model = DifferenceClassifier(LiteTextEncoder(n_components=3, random_state=0))
    model.fit(frame[["q1"]], frame[["q2"]], np.arange(10) % 2)
    assert model.predict(frame[["q1"]], frame[["q2"]]).shape == (10,)
