"""The heads' streams retrain from the start as they grow (`refit_growth`), as SbertTuner's do."""

import pickle

import numpy as np
import pytest

from embetter.finetune import ContrastiveLearner, ContrastiveTuner
from tests._clustered import TUNERS, clustered, fast


@pytest.mark.parametrize("cls", TUNERS)
def test_a_call_that_grows_the_stream_enough_retrains_as_fit_on_every_row_seen(cls):
    X, y = clustered(120, 0)
    stream = fast(cls, refit_growth=2.0)
    stream.partial_fit(X[:40], y[:40], classes=np.arange(4))
    assert stream.refit_rows_ == 40
    module = stream.module_
    stream.partial_fit(X[40:70], y[40:70])  # 70 rows < 2 x 40: the stream continues
    assert stream.module_ is module and stream.refit_rows_ == 40
    stream.partial_fit(X[70:80], y[70:80])  # 80 = 2 x 40: a fresh start on every row seen
    assert stream.module_ is not module and stream.refit_rows_ == 80
    # exactly what `fit` does with the same rows: the new ones, then the remembered ones
    order = np.r_[70:80, 0:70]
    fitted = fast(cls, refit_growth=2.0).fit(X[order], y[order])
    np.testing.assert_array_equal(stream.transform(X), fitted.transform(X))
    assert stream.n_iter_ == fitted.n_iter_ and stream._replay["seen"] == 80
    stream.partial_fit(X[80:100], y[80:100])  # and the stream goes on from there
    assert stream.refit_rows_ == 80 and stream._replay["seen"] == 100


@pytest.mark.parametrize("cls", TUNERS)
@pytest.mark.parametrize("params", [{"refit_growth": None}, {"replay_size": 50},
                                    {"replay_size": 0}])
def test_no_retraining_when_off_or_when_the_memory_holds_only_a_sample(cls, params):
    X, y = clustered(120, 0)
    stream = fast(cls, **params)
    stream.partial_fit(X[:60], y[:60], classes=np.arange(4))
    module = stream.module_
    stream.partial_fit(X[60:], y[60:])  # twice the rows: a retrain, were every row remembered
    assert stream.module_ is module and stream.refit_rows_ == 60


@pytest.mark.parametrize("multilabel", [False, True])
def test_contrastive_tuner_retrains_once_two_classes_have_come(multilabel):
    X, y = clustered(200, 0)
    ones, others = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
    if multilabel:  # 0/1 rows: a second label column set on class 3
        y = np.stack([y == 1, y == 3], axis=1).astype(int)
    first = {} if multilabel else {"classes": np.arange(4)}
    stream = fast(ContrastiveTuner)
    stream.partial_fit(X[ones[:10]], y[ones[:10]], **first)
    stream.partial_fit(X[ones[10:20]], y[ones[10:20]])  # one class: nothing `fit` could pair
    assert stream.refit_rows_ == 10
    stream.partial_fit(X[others[:20]], y[others[:20]])
    assert stream.refit_rows_ == 40


@pytest.mark.parametrize("cls", TUNERS)
def test_refit_growth_is_checked_and_old_pickles_stream_without_it(cls):
    X, y = clustered(120, 0)
    for bad in (1.0, 0.5, "2"):
        with pytest.raises(ValueError, match="refit_growth"):
            fast(cls, refit_growth=bad).partial_fit(X, y)
    old = fast(cls).partial_fit(X[:40], y[:40], classes=np.arange(4))
    # a head pickled before refit_growth existed streams on without retraining
    del old.__dict__["refit_growth"], old.__dict__["refit_rows_"]
    old = pickle.loads(pickle.dumps(old))
    module = old.module_
    old.partial_fit(X[40:], y[40:])
    assert old.refit_growth is None and old.module_ is module


@pytest.mark.parametrize("cls", TUNERS + [ContrastiveLearner])
def test_each_head_constrains_exactly_its_own_parameters(cls):
    # scikit-learn's check_param_validation asks for this; ContrastiveLearner has no
    # refit_growth, so the constraint lives with the tuners, not with the shared engine's
    assert set(cls._parameter_constraints) == set(cls().get_params())
