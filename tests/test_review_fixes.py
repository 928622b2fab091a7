"""Contract fixes found in review: streams check every call, training ignores the caller's
no_grad, fit feeds a later stream's replay memory, and a failed labelling round is not
recorded."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import IncrementalPCA
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from embetter.finetune import ContrastiveTuner, FeedForwardTuner
from embetter.label import LabellingLoop

rng = np.random.RandomState(0)
X = np.vstack([rng.normal(0, 1, (30, 8)), rng.normal(3, 1, (30, 8))])
Y = np.array([0] * 30 + [1] * 30)


@pytest.mark.parametrize("tuner", [FeedForwardTuner, ContrastiveTuner])
def test_partial_fit_checks_parameters_on_every_call(tuner):
    t = tuner(random_state=0).partial_fit(X[:20], np.arange(20) % 2)
    t.set_params(learning_rate=-5.0)
    with pytest.raises(InvalidParameterError, match="learning_rate"):
        t.partial_fit(X[20:30], Y[20:30])


def test_contrastive_stream_checks_its_labels_like_feedforward():
    with pytest.raises(ValueError, match=r"partial_fit needs at least two classes, got \[0\]"):
        ContrastiveTuner().partial_fit(X[:10], Y[:10])
    t = ContrastiveTuner(random_state=0).partial_fit(X[:10], Y[:10], classes=[0, 1])
    t.partial_fit(X[30:40], Y[30:40])
    with pytest.raises(ValueError, match="y is 2-D but the first partial_fit call's was 1-D"):
        t.partial_fit(X[10:20], np.eye(2)[Y[10:20]])
    with pytest.raises(ValueError, match=r"classes=\[0, 1, 2\] differs"):
        t.partial_fit(X[10:20], Y[10:20], classes=[0, 1, 2])


@pytest.mark.parametrize("tuner", [FeedForwardTuner, ContrastiveTuner])
def test_training_ignores_the_callers_no_grad_and_leaves_it(tuner):
    with torch.no_grad():
        t = tuner(random_state=0).fit(X, Y)
        assert not torch.is_grad_enabled()
    assert t.n_iter_ > 0 and torch.is_grad_enabled()
    np.testing.assert_array_equal(t.transform(X), tuner(random_state=0).fit(X, Y).transform(X))


@pytest.mark.parametrize("tuner", [FeedForwardTuner, ContrastiveTuner])
def test_a_stream_after_fit_replays_the_fitted_rows(tuner):
    t = tuner(random_state=0, refit_growth=None).fit(X, Y)
    steps = t.n_iter_
    # one class per batch: only the fitted rows, remembered, give the pairs and the contrast
    for start in range(0, 30, 10):
        t.partial_fit(X[start:start + 10], Y[start:start + 10])
    assert t.n_iter_ > steps
    assert t._replay["seen"] == 60 + 30


@pytest.mark.parametrize("first", [StandardScaler(), IncrementalPCA(2)])
def test_loop_updates_transformers_without_classes(first):
    loop = LabellingLoop(make_pipeline(first, SGDClassifier(loss="log_loss", random_state=0)),
                         X, classes=[0, 1], random_state=0)
    for _ in range(3):
        picks = loop.suggest(4)
        loop.update(picks, Y[picks])
    assert loop.labelled_.size == 12 and loop.model_.score(X, Y) > 0.9


def test_a_failed_round_is_not_recorded_and_can_be_retried():
    loop = LabellingLoop(make_pipeline(FeedForwardTuner(random_state=0), LogisticRegression()),
                         X, classes=[0, 1], random_state=0)
    picks = loop.suggest(6)
    head = loop.model_.steps[-1][1]

    def broken(*args, **kwargs):
        raise RuntimeError("the classifier failed")

    head.fit = broken
    with pytest.raises(RuntimeError, match="the classifier failed"):
        loop.update(picks, Y[picks])
    assert loop.labelled_.size == 0 and loop.labels_.size == 0 and not loop.fitted_
    del head.fit
    loop.update(picks, Y[picks])
    assert loop.labelled_.tolist() == picks.tolist() and loop.fitted_
