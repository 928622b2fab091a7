"""Fixes from a review of the fine-tuning estimators (session 36): each test failed on the
code before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from embetter.finetune import SbertTuner
from tests._sbert_helpers import learner


@pytest.mark.parametrize("multi", [False, True])
def test_bool_class_labels_train_as_codes_0_and_1(tiny_model_path, corpus, multi):
    # "OverflowError: Python int too large to convert to C long" (bool vs int64's range)
    X1, X2, even = corpus[:16], corpus[16:32], np.arange(16) % 2 == 0
    y = np.c_[even, np.arange(16) % 3 == 0] if multi else even
    got = learner(tiny_model_path, loss="supcon").fit(X1, X2, y).transform(corpus[:4])
    codes = learner(tiny_model_path, loss="supcon").fit(X1, X2, y.astype(int))
    np.testing.assert_array_equal(got, codes.transform(corpus[:4]))


def test_a_step_that_fails_leaves_no_gradients_for_the_next_call(tiny_model_path, pairs,
                                                                  monkeypatch):
    import embetter.finetune._trainer as trainer

    X1, X2, y = pairs
    clean = learner(tiny_model_path).fit(X1[:16], X2[:16], y[:16])
    broken = learner(tiny_model_path).fit(X1[:16], X2[:16], y[:16])
    real = trainer.torch.nn.utils.clip_grad_norm_

    def fail(*args, **kwargs):  # (after backward: the gradients are there)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.torch.nn.utils, "clip_grad_norm_", fail)
    with pytest.raises(KeyboardInterrupt):
        broken.partial_fit(X1[16:32], X2[16:32], y[16:32])
    monkeypatch.setattr(trainer.torch.nn.utils, "clip_grad_norm_", real)
    assert all(p.grad is None for p in broken.model_.parameters())
    clean.partial_fit(X1[16:32], X2[16:32], y[16:32])
    broken.partial_fit(X1[16:32], X2[16:32], y[16:32])
    np.testing.assert_array_equal(clean.transform(X1[:4]), broken.transform(X1[:4]))


def tuner(path):
    return SbertTuner(path, random_state=0, label_texts=None, epochs=1)


def test_classes_named_after_fit_must_hold_the_labels_seen(tiny_model_path, labelled):
    # they were ignored: labels outside them joined the stream
    texts, y = labelled
    fitted = tuner(tiny_model_path).fit(texts[:20], y[:20])
    known = np.unique(y[:20]).tolist()
    with pytest.raises(ValueError, match="leaves out labels this stream has been given"):
        fitted.partial_fit(texts[20:22], [known[0], "zzz"], classes=known)
    with pytest.raises(ValueError, match="leaves out labels"):
        fitted.partial_fit(texts[20:22], y[20:22], classes=known[:1])
    fitted.partial_fit(texts[20:22], [known[0], known[-1]], classes=known)  # (they do)


def test_an_empty_partial_fit_batch_is_refused(tiny_model_path, labelled):
    # the first one left an untrained tuner that counted as fitted
    with pytest.raises(ValueError, match="X is empty: a partial_fit batch needs"):
        tuner(tiny_model_path).partial_fit([], [], classes=["a", "b"])
    texts, y = labelled
    fitted = tuner(tiny_model_path).partial_fit(texts[:20], y[:20])
    with pytest.raises(ValueError, match="X is empty"):
        fitted.partial_fit([], [])


