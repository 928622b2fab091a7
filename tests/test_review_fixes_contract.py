"""Fixes from a review of the estimator contract and the guest rules (session 28): each test
failed on the code before its fix."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from tests._sbert_helpers import learner, tuner

TEXTS = [f"some text number {i} about {w}" for i, w in
         enumerate(["cats", "dogs", "stocks", "rain", "pizza", "trains"] * 7)]


@pytest.fixture(scope="module")
def static_folder(tiny_model_path):
    from embetter.text import _distill

    return _distill.distill(tiny_model_path, pca_dims=8)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_text_encoder_trains_on_fit_under_the_callers_no_grad(static_folder, tiny_model_path,
                                                              mode):
    from embetter.text import TextEncoder

    def fitted():
        return TextEncoder(static_folder, train_on_fit=True, teacher=tiny_model_path,
                           random_state=0).fit(TEXTS)

    outside = fitted().transform(TEXTS)
    with mode():  # "element 0 of tensors does not require grad" before
        inside = fitted()
        assert not torch.is_grad_enabled()  # the caller's mode is back
    assert np.array_equal(inside.transform(TEXTS), outside)


def test_text_encoder_training_keeps_model2vecs_config_note_off_stderr(static_folder,
                                                                       tiny_model_path,
                                                                       tmp_path, caplog):
    import json

    from embetter.text import TextEncoder

    static_folder.save_pretrained(str(tmp_path))  # a model saved without normalisation
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "normalize": False}))
    with caplog.at_level(logging.INFO):
        TextEncoder(str(tmp_path), train_on_fit=True, teacher=tiny_model_path,
                    random_state=0).fit(TEXTS)
    assert not [r for r in caplog.records if "Updating config" in r.getMessage()]


def test_sbert_learner_and_tuner_train_under_inference_mode(tiny_model_path):
    y = np.array([0, 1] * 21)
    outside = tuner(tiny_model_path, batch_size=8).fit(TEXTS, y).transform(TEXTS[:4])
    with torch.inference_mode():  # "element 0 of tensors does not require grad" before
        t = tuner(tiny_model_path, batch_size=8).fit(TEXTS, y)
        lrn = learner(tiny_model_path, loss="contrastive", batch_size=8).fit(
            TEXTS[:10], TEXTS[10:20], [1, 0] * 5)
        assert torch.is_inference_mode_enabled()
    np.testing.assert_allclose(t.transform(TEXTS[:4]), outside, atol=1e-6)
    assert lrn.n_iter_ == 1


def test_a_stream_uses_parameters_set_between_its_calls(tiny_model_path):
    y = np.array([0, 1] * 21)
    t = tuner(tiny_model_path, batch_size=8)
    t.partial_fit(TEXTS[:12], y[:12], classes=[0, 1])
    t.set_params(epochs=3, learning_rate=5e-3, refit_growth=None)
    t.partial_fit(TEXTS[12:20], y[12:20])
    assert t.learner_.epochs == 3 and t.learner_.learning_rate == 5e-3
    assert t.learner_.n_iter_ == 1 + 3  # one epoch, then three (it was 1 + 1)


def test_sbert_learner_names_its_output_columns(tiny_model_path):
    lrn = learner(tiny_model_path, loss="contrastive", batch_size=8).fit(
        TEXTS[:10], TEXTS[10:20], [1, 0] * 5)
    names = lrn.get_feature_names_out()
    assert names[0] == "sbertlearner0" and len(names) == lrn.transform(TEXTS[:2]).shape[1]
    frame = lrn.set_output(transform="pandas").transform(TEXTS[:3])
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(names)


def test_difference_classifier_keeps_its_own_copy_of_a_fitted_encoder():
    from sklearn.frozen import FrozenEstimator

    from embetter.model import DifferenceClassifier
    from embetter.text import LiteTextEncoder

    X1, X2 = TEXTS[:20], TEXTS[20:40]
    y = [1, 0] * 10
    enc = LiteTextEncoder(n_components=4, random_state=0).fit(TEXTS)
    clf = DifferenceClassifier(enc=enc).fit(X1, X2, y)
    before = clf.predict_proba(X1, X2)
    assert clf.enc_ is not enc
    enc.fit(["other words entirely", "nothing like the rest", "more of them here"] * 3)
    np.testing.assert_array_equal(clf.predict_proba(X1, X2), before)  # it changed before
    # FrozenEstimator keeps a fitted encoder across clone (a grid search)
    frozen = DifferenceClassifier(enc=FrozenEstimator(
        LiteTextEncoder(n_components=4, random_state=0).fit(TEXTS))).fit(X1, X2, y)
    np.testing.assert_allclose(clone(frozen).fit(X1, X2, y).predict_proba(X1, X2),
                               frozen.predict_proba(X1, X2))


def test_difference_classifier_uses_a_stateless_pipeline_as_it_is(tiny_model_path):
    from sentence_transformers import SentenceTransformer
    from sklearn.pipeline import make_pipeline

    from embetter.grab import ColumnGrabber
    from embetter.model import DifferenceClassifier
    from embetter.text import SentenceEncoder

    model = SentenceTransformer(tiny_model_path, device="cpu")
    enc = make_pipeline(ColumnGrabber("text"), SentenceEncoder(model))
    frame = pd.DataFrame({"text": TEXTS[:20]})
    clf = DifferenceClassifier(enc=enc).fit(frame, frame.iloc[::-1], [1, 0] * 10)
    assert clf.enc_ is enc  # no second copy of the caller's model


def test_an_auto_learning_rate_holds_through_a_stream_that_meets_a_new_class(tiny_model_path):
    t = tuner(tiny_model_path, batch_size=8, learning_rate="auto")
    t.partial_fit(TEXTS[:10], np.array([0, 1] * 5))  # no classes=: two so far
    first = t.learning_rate_
    t.partial_fit(TEXTS[10:14], np.array([2, 0, 1, 2]))  # a third class, before a retrain
    assert t.learning_rate_ == first and t.learner_.learning_rate == first


@pytest.fixture(scope="module")
def static_dir(tiny_model_path, tmp_path_factory):
    from embetter.text import _distill

    folder = tmp_path_factory.mktemp("static") / "m2v"
    _distill.distill(tiny_model_path, pca_dims=16).save_pretrained(str(folder))
    return str(folder)


def test_trained_static_encoder_names_no_columns_before_fit(static_dir):
    """get_feature_names_out loaded the base model and named its columns, though transform
    (the trained model's output) refuses before fit."""
    from sklearn.exceptions import NotFittedError

    from embetter.text import TextEncoder

    with pytest.raises(NotFittedError):
        TextEncoder(static_dir, train_on_fit=True).get_feature_names_out()
    assert TextEncoder(static_dir).get_feature_names_out().size == 16  # (pretrained: fine)


def test_cache_passes_on_that_its_encoder_needs_y(tiny_model_path, tmp_path):
    from sklearn.utils import get_tags

    from embetter.utils import cached

    assert get_tags(cached(tmp_path, tuner(tiny_model_path))).target_tags.required


def test_skops_names_a_static_model_object(static_dir, tmp_path):
    from model2vec import StaticModel

    from embetter.text import TextEncoder
    from embetter.utils import save_skops

    enc = TextEncoder(StaticModel.from_pretrained(static_dir))
    with pytest.raises(TypeError, match=r"model.save_pretrained\(folder\)"):
        save_skops(enc, tmp_path / "enc.skops")


def test_skops_names_a_teacher_model_object(static_dir, tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    from embetter.text import TextEncoder
    from embetter.utils import save_skops

    enc = TextEncoder(static_dir, train_on_fit=True,
                      teacher=SentenceTransformer(tiny_model_path, device="cpu"))
    with pytest.raises(TypeError, match=r"as teacher.*model.save\(folder\)"):
        save_skops(enc, tmp_path / "enc.skops")
