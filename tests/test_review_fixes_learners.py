"""Fixes from a review of the pair learners: each test failed on the code before its fix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests._sbert_helpers import learner


def test_the_warm_up_is_a_share_of_the_steps_taken(tiny_model_path, corpus, monkeypatch):
    """With in-batch negatives a batch skips a text it already holds, so a repeated anchor
    takes more steps than rows / batch size: the warm-up was a share of the smaller count
    (1 step of 12 at warmup_ratio=0.25)."""
    import embetter.finetune._trainer as trainer

    seen, real = [], trainer._schedule
    monkeypatch.setattr(trainer, "_schedule",
                        lambda opt, warmup, n: seen.append((warmup, n)) or real(opt, warmup, n))
    learner(tiny_model_path, loss="mnrl", batch_size=4, warmup_ratio=0.25).fit(
        ["the cat"] * 12, corpus[:12])
    (warmup, n_steps), = seen
    assert n_steps == 12 and warmup == math.ceil(0.25 * 12)


def test_the_eval_score_is_the_fitted_models(tiny_model_path, pairs, corpus):
    """With a training length (max_seq_length), the eval set was encoded cut to it, not as
    the fitted model encodes it: the recorded score was another model's."""
    from scipy.stats import spearmanr

    X1, X2, y = pairs
    long = [" ".join(corpus[i:i + 6]) for i in range(8)]
    other = [" ".join(corpus[i + 3:i + 9]) for i in range(8)]
    scores = np.linspace(0, 1, 8)
    fitted = learner(tiny_model_path, max_seq_length=8, epochs=1).fit(
        X1[:16], X2[:16], y[:16], eval_set=(long, other, scores))
    expected = spearmanr(fitted.predict(long, other), scores).statistic
    assert fitted.history_[-1]["eval_spearman"] == pytest.approx(expected, abs=1e-6)


def test_an_eval_set_error_names_the_eval_set(tiny_model_path, pairs):
    X1, X2, y = pairs
    with pytest.raises(ValueError, match=r"eval_set \(X1, X2, y\): X1 and X2 must hold"):
        learner(tiny_model_path).fit(X1[:4], X2[:4], y[:4], eval_set=(X1[:4], X2[:2], y[:4]))


def test_infonce_refuses_labels_other_than_0_and_1():
    # before: pairs with y == 2 were dropped without a word (nothing trained)
    from embetter.finetune import ContrastiveLearner

    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(2, 30, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="0/1 labels"):
        ContrastiveLearner(loss="infonce", epochs=2, random_state=0).fit(A, B, [2] * 29 + [1])


def test_a_failed_call_leaves_the_model_in_eval_mode(tiny_model_path, pairs, monkeypatch):
    import embetter.finetune._trainer as trainer

    X1, X2, y = pairs
    fitted = learner(tiny_model_path).fit(X1[:16], X2[:16], y[:16])
    real, calls = trainer.torch.nn.utils.clip_grad_norm_, []

    def clip_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer.torch.nn.utils, "clip_grad_norm_", clip_then_fail)
    with pytest.raises(KeyboardInterrupt):
        fitted.partial_fit(X1[16:48], X2[16:48], y[16:48])
    assert not fitted.model_.training


def test_a_deprecated_loss_name_and_its_successor_continue_one_stream():
    # before: loss="contrastive" then set_params(loss="cosine_margin") (what its warning
    # asks for) was refused in mid-stream, and after a pickle the other way round
    import pickle
    import warnings

    from embetter.finetune import ContrastiveLearner

    rng = np.random.default_rng(0)
    X1, X2 = rng.normal(size=(2, 200, 12)).astype(np.float32)
    s = (rng.random(200) > 0.5).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        old = ContrastiveLearner(random_state=0, loss="contrastive").partial_fit(
            X1[:100], X2[:100], s[:100])
        copy = pickle.loads(pickle.dumps(old))
        old.set_params(loss="cosine_margin").partial_fit(X1[100:], X2[100:], s[100:])
        copy.set_params(loss="contrastive").partial_fit(X1[100:], X2[100:], s[100:])
    np.testing.assert_array_equal(old.transform(X1[:5]), copy.transform(X1[:5]))
    with pytest.raises(ValueError, match="loss was set to 'infonce'"):
        old.set_params(loss="infonce").partial_fit(X1[:10], X2[:10], s[:10])


def test_a_batch_of_one_never_trains_an_in_batch_loss(tiny_model_path, labelled):
    """batch_size=1: "auto" chose supcon for any two classes, whose single-pair batches hold
    nothing to contrast (loss 0 at every step: the model served untrained)."""
    from embetter.finetune import SbertTuner

    texts, y = labelled
    tuner = SbertTuner(tiny_model_path, batch_size=1, label_texts=None, random_state=0,
                       device="cpu", epochs=1).fit(texts[:20], y[:20])
    assert tuner.loss_ == "cosine" and any(v > 0 for v in tuner.loss_curve_)
    for loss in ("supcon", "mnrl"):
        with pytest.raises(ValueError, match="batch_size must be at least 2"):
            learner(tiny_model_path, loss=loss, batch_size=1).fit(
                texts[:4], texts[4:8], None if loss == "mnrl" else [0, 1, 0, 1])


def test_labels_mixing_str_and_bytes_are_named():
    # before: "'<' not supported between instances of 'bytes' and 'str'" from numpy's sort
    from embetter._labels import as_labels

    with pytest.raises(TypeError, match="y mixes kinds of labels"):
        as_labels(np.array(["a", b"b", "a"], dtype=object), "y")


def test_a_batch_of_one_trains_with_hard_negatives_or_class_texts(tiny_model_path, corpus):
    # the refusal above is for a batch with nothing to contrast: negatives= (mnrl) and
    # class_texts= (supcon) give a one-pair batch its contrast
    a, p, n = corpus[:4], corpus[4:8], corpus[8:12]
    mnrl = learner(tiny_model_path, loss="mnrl", batch_size=1).fit(a, p, negatives=n)
    supcon = learner(tiny_model_path, loss="supcon", batch_size=1).fit(
        a, p, [0, 1, 0, 1], class_texts=["alpha", "beta"])
    assert mnrl.loss_curve_[0] > 0 and supcon.loss_curve_[0] > 0


def test_a_nan_label_in_a_plain_list_is_refused():
    # before: numpy wrote it as the string "nan", a third class (a Series or None refused)
    from embetter._labels import as_labels

    with pytest.raises(ValueError, match="missing values"):
        as_labels(["pos", "pos", np.nan], "y")
    with pytest.raises(TypeError, match="mixes kinds of labels"):
        as_labels(["pos", 1], "y")
    assert as_labels(["pos", "neg"], "y").tolist() == ["pos", "neg"]


def test_save_skops_of_a_tuner_on_a_model_object_names_sent_tfm(tiny_model_path, labelled,
                                                                  tmp_path):
    # before: "RecursionError: maximum recursion depth exceeded" as the reason
    from sentence_transformers import SentenceTransformer

    from embetter.finetune import SbertTuner
    from embetter.utils import save_skops

    texts, y = labelled
    model = SentenceTransformer(tiny_model_path, device="cpu")
    tuner = SbertTuner(model, random_state=0, epochs=1, label_texts=None).fit(texts[:12], y[:12])
    with pytest.raises(TypeError, match="object as sent_tfm.*model.save"):
        save_skops(tuner, tmp_path / "t.skops")
    assert not (tmp_path / "t.skops").exists()
