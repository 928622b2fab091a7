"""SbertLearner: fine-tuning a sentence model on text pairs (tiny BERT, and MiniLM)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.base import clone

from embetter.finetune import SbertLearner
from embetter.text import SentenceEncoder
from tests._sbert_helpers import cosine, learner, small, torch_equal


def test_batch_size_sets_optimizer_steps(tiny_model_path, pairs):
    fitted = learner(tiny_model_path, batch_size=64, epochs=2).fit(*pairs)
    assert fitted.n_steps_ == 8  # 256 pairs / 64 = 4 steps per epoch
    assert [h["step"] for h in fitted.history_] == [4, 8]
    assert [h["epoch"] for h in fitted.history_] == [1, 2]
    assert all(np.isfinite(h["train_loss"]) for h in fitted.history_)


def test_same_seed_same_embeddings(tiny_model_path, pairs, corpus):
    a = learner(tiny_model_path, random_state=3).fit(*small(pairs, 64)).transform(corpus)
    b = learner(tiny_model_path, random_state=3).fit(*small(pairs, 64)).transform(corpus)
    c = learner(tiny_model_path, random_state=4).fit(*small(pairs, 64)).transform(corpus)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    base = SentenceEncoder(tiny_model_path).transform(corpus)
    assert not np.allclose(a, base, atol=1e-4)  # training really changed the weights


def test_max_seq_length_applies_while_training_only(tiny_model_path, pairs, corpus):
    short = learner(tiny_model_path, max_seq_length=3).fit(*small(pairs))
    full = learner(tiny_model_path).fit(*small(pairs))
    assert short.model_.max_seq_length == full.model_.max_seq_length == 64
    assert not np.allclose(short.transform(corpus[:5]), full.transform(corpus[:5]), atol=1e-5)


def test_auto_seq_length_covers_three_texts_in_four_in_steps_of_16():
    from embetter.finetune._sbert_learner import auto_seq_length

    assert auto_seq_length([10] * 8) == 32  # short texts: the floor
    assert auto_seq_length([50] * 7 + [200]) == 64  # 75th percentile 50 -> 64
    assert auto_seq_length([33, 40, 47, 48]) == 48
    assert auto_seq_length(None) is None and auto_seq_length([]) is None


def test_max_seq_length_auto_is_resolved_from_the_first_calls_texts(tiny_model_path, pairs):
    from embetter._st import token_counts
    from embetter.finetune._sbert_learner import auto_seq_length

    X1, X2, y = small(pairs)
    long1 = [" ".join([t] * 10) for t in X1]  # about 50 tokens each: past the floor of 32
    fitted = learner(tiny_model_path, max_seq_length="auto").fit(long1, X2, y)
    counts = token_counts(fitted.model_, list(dict.fromkeys(long1 + list(X2))))
    assert fitted.max_seq_length_ == auto_seq_length(counts) > 32
    assert fitted.model_.max_seq_length == 64  # the model's own limit is back after training
    fitted.partial_fit(X1, X2, y)  # later calls keep the first call's length
    assert fitted.max_seq_length_ == auto_seq_length(counts)
    same = learner(tiny_model_path, max_seq_length=fitted.max_seq_length_).fit(long1, X2, y)
    assert np.allclose(same.transform(X1[:4]),
                       learner(tiny_model_path, max_seq_length="auto").fit(long1, X2, y)
                       .transform(X1[:4]), atol=1e-6)
    with pytest.raises(ValueError, match="max_seq_length"):
        learner(tiny_model_path, max_seq_length="longest").fit(X1, X2, y)


def test_freeze_embeddings_trains_everything_but_the_token_embeddings(tiny_model_path, pairs):
    from sentence_transformers import SentenceTransformer

    from embetter._st import token_embeddings

    model = SentenceTransformer(tiny_model_path, device="cpu")
    (embedding,) = token_embeddings(model)
    assert embedding.shape[0] == model.tokenizer.vocab_size
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fitted = learner(model, freeze_embeddings=True).fit(*small(pairs))
    after = dict(fitted.model_.named_parameters())
    (tuned_embedding,) = token_embeddings(fitted.model_)
    frozen = [n for n, p in after.items() if p is tuned_embedding]
    changed = [n for n, p in after.items() if not torch_equal(p, before[n])]
    assert frozen and not set(frozen) & set(changed)
    assert len(changed) > len(after) // 2  # the rest of the network did train
    assert all(p.requires_grad for p in fitted.model_.parameters())  # handed back trainable
    default = learner(model).fit(*small(pairs))  # the default trains the embeddings too
    assert not torch_equal(token_embeddings(default.model_)[0], before[frozen[0]])
    # and the caller's model was never touched
    assert all(torch_equal(p, before[n]) for n, p in model.named_parameters())


def test_global_random_state_is_left_alone(tiny_model_path, pairs):
    import random

    import torch

    np.random.seed(123), random.seed(123), torch.manual_seed(123)
    expected = (np.random.rand(), random.random(), torch.rand(1).item())
    np.random.seed(123), random.seed(123), torch.manual_seed(123)
    learner(tiny_model_path).fit(*small(pairs, 16))
    assert (np.random.rand(), random.random(), torch.rand(1).item()) == expected


@pytest.mark.parametrize("loss", ["cosine", "cosent", "contrastive", "online_contrastive"])
def test_pair_losses_train(tiny_model_path, pairs, loss):
    fitted = learner(tiny_model_path, loss=loss, matryoshka_dims=[32, 8]).fit(*small(pairs))
    X = fitted.transform(["the cat likes pizza", "a dog fixes old cars"])
    assert X.shape == (2, 32) and X.dtype == np.float32 and np.isfinite(X).all()


def test_each_loss_and_matryoshka_dims_train_differently(tiny_model_path, pairs):
    """`loss` and `matryoshka_dims` reach the training: with the same seed and pairs, each
    setting moves the model, and each somewhere else."""
    probe = ["the cat likes pizza", "a dog fixes old cars", "the market predicts the rain"]
    untrained = SentenceEncoder(tiny_model_path, device="cpu").transform(probe)
    settings = [{"loss": name} for name in ("cosine", "cosent", "contrastive",
                                             "online_contrastive")]
    settings.append({"loss": "cosine", "matryoshka_dims": [32, 8]})
    outs = [learner(tiny_model_path, **kw).fit(*small(pairs)).transform(probe)
            for kw in settings]
    for kw, out in zip(settings, outs):
        assert np.abs(out - untrained).max() > 1e-4, f"{kw} did not train"
    for i in range(len(outs)):
        for j in range(i):
            assert np.abs(outs[i] - outs[j]).max() > 1e-5, (settings[i], settings[j])


def test_mnrl_with_and_without_negatives(tiny_model_path, corpus):
    anchors, positives, negatives = corpus[:24], corpus[1:25], corpus[30:54]
    fitted = learner(tiny_model_path, loss="mnrl", batch_size=8).fit(anchors, positives)
    assert fitted.n_steps_ >= 3
    with_negatives = learner(tiny_model_path, loss="mnrl", batch_size=8).fit(
        anchors, positives, np.ones(24), negatives=negatives
    )
    assert with_negatives.predict(anchors[:3], positives[:3]).shape == (3,)
    # the negatives reach the loss: the same seed and pairs train another model
    assert np.abs(with_negatives.transform(anchors[:4]) - fitted.transform(anchors[:4])).max() \
        > 1e-5


@pytest.mark.parametrize(
    ("kw", "y", "match"),
    [
        ({"loss": "contrastive"}, [0.5, 1.0], "0/1 labels"),
        ({"loss": "online_contrastive"}, [2, 0], "0/1 labels"),
        ({"loss": "cosine"}, [5.0, 0.0], r"\[-1, 1\]"),
        ({"loss": "mnrl"}, [1, 0], "positive pairs only"),
        ({"loss": "cosine"}, None, "y is required"),
        ({"loss": "nope"}, [1, 0], "'loss' parameter"),
        ({"batch_size": 0}, [1, 0], "'batch_size' parameter"),
        ({"warmup_ratio": 1.5}, [1, 0], "'warmup_ratio' parameter"),
        ({"matryoshka_dims": [64]}, [1, 0], "matryoshka_dims"),
        ({}, [1, 0, 1], "y has 3 entries"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_model_path, kw, y, match):
    with pytest.raises(ValueError, match=match):
        learner(tiny_model_path, **kw).fit(["a b", "c d"], ["e f", "g h"], y)


def test_other_bad_inputs(tiny_model_path):
    with pytest.raises(ValueError, match="only used by loss='mnrl'"):
        learner(tiny_model_path).fit(["a"], ["b"], [1.0], negatives=["c"])
    with pytest.raises(ValueError, match="one text per pair"):
        learner(tiny_model_path, loss="mnrl").fit(["a", "b"], ["c", "d"], negatives=["e"])
    with pytest.raises(ValueError, match="same number"):
        learner(tiny_model_path).fit(["a", "b"], ["c"], [1.0, 0.0])
    with pytest.raises(TypeError, match="sent_tfm must be"):
        SbertLearner(sent_tfm=42).fit(["a"], ["b"], [1.0])
    with pytest.raises(ValueError, match="eval_set must be a tuple"):
        learner(tiny_model_path).fit(["a"], ["b"], [1.0], eval_set=(["a"], ["b"]))
    with pytest.raises(ValueError, match="X1\\[1\\] is missing"):
        learner(tiny_model_path).fit(["a", None], ["b", "c"], [1.0, 0.0])


def test_eval_set_reports_spearman_per_epoch(tiny_model_path, pairs):
    X1, X2, y = pairs
    fitted = learner(tiny_model_path, epochs=3, batch_size=16, learning_rate=3e-3).fit(
        X1[:128], X2[:128], y[:128], eval_set=(X1[128:], X2[128:], y[128:])
    )
    rho = [h["eval_spearman"] for h in fitted.history_]
    assert len(rho) == 3 and all(-1 <= r <= 1 for r in rho)
    # the label (same subject) is learnable: the held-out ranking beats the untrained model's
    before = spearmanr(cosine(SentenceEncoder(tiny_model_path), X1[128:], X2[128:]), y[128:])
    assert rho[0] < rho[-1] and rho[-1] > before.statistic + 0.2


def test_predict_is_cosine_of_transform(tiny_model_path, pairs):
    fitted = learner(tiny_model_path).fit(*small(pairs))
    X1, X2, _ = small(pairs, 5)
    a, b = fitted.transform(X1), fitted.transform(X2)
    expected = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    sims = fitted.predict(X1, X2)
    assert sims.dtype == np.float32 and np.allclose(sims, expected, atol=1e-5)
    with pytest.raises(ValueError, match="same number"):
        fitted.predict(X1, X2[:2])


def test_callers_sentence_transformer_is_never_changed(tiny_model_path, pairs, corpus):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    before = model.encode(corpus[:5])
    fitted = learner(model).fit(*small(pairs))
    assert fitted.model_ is not model and fitted.sent_tfm is model
    assert np.array_equal(model.encode(corpus[:5]), before)  # the caller's weights
    assert str(model.device) == "cpu"
    tuned = fitted.transform(corpus[:5])
    assert not np.allclose(tuned, before, atol=1e-4)
    # every fit starts from the weights it was given: the same seed gives the same model
    again = learner(model).fit(*small(pairs)).transform(corpus[:5])
    refit = fitted.fit(*small(pairs)).transform(corpus[:5])
    assert np.array_equal(again, tuned) and np.array_equal(refit, tuned)
    # pickling keeps the fine-tuned weights (the parameter stays the caller's model)
    restored = pickle.loads(pickle.dumps(fitted))
    assert np.allclose(restored.transform(corpus[:5]), tuned, atol=1e-6)


def test_clone_and_grid_candidates_never_share_a_model(tiny_model_path, pairs, corpus):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    before = model.encode(corpus[:5])
    first = learner(model).fit(*small(pairs))
    copy = clone(first)
    assert copy.sent_tfm is not model and not hasattr(copy, "model_")
    second = copy.set_params(learning_rate=5e-3).fit(*small(pairs))
    assert second.model_ is not first.model_
    assert not np.allclose(second.transform(corpus[:5]), first.transform(corpus[:5]), atol=1e-5)
    assert np.array_equal(model.encode(corpus[:5]), before)


def test_partial_fit_continues_and_records_training(tiny_model_path, pairs, corpus):
    X1, X2, y = pairs
    stream = learner(tiny_model_path, batch_size=16)
    stream.partial_fit(X1[:32], X2[:32], y[:32])
    model = stream.model_
    after_one = stream.transform(corpus[:5])
    stream.partial_fit(X1[32:64], X2[32:64], y[32:64], eval_set=(X1[64:], X2[64:], y[64:]))
    assert stream.model_ is model  # the same model, trained further
    assert not np.allclose(stream.transform(corpus[:5]), after_one, atol=1e-5)
    assert stream.n_iter_ == 2 and stream.n_steps_ == 4
    assert [h["epoch"] for h in stream.history_] == [1, 2]
    assert [h["step"] for h in stream.history_] == [2, 4]
    assert len(stream.loss_curve_) == 2 and all(np.isfinite(stream.loss_curve_))
    assert "eval_spearman" in stream.history_[1] and "eval_spearman" not in stream.history_[0]
    # the optimizer carried on: AdamW counted all 4 steps, not the second call's 2
    steps = {int(s["step"]) for s in stream._optimizer_state["state"].values()}
    assert steps == {4}
    assert "_optimizer_state" not in pickle.loads(pickle.dumps(stream)).__dict__
    stream.fit(X1[:32], X2[:32], y[:32])  # fit starts over: a fresh copy, a fresh record
    assert stream.model_ is not model and stream.n_iter_ == 1
    assert np.array_equal(stream.transform(corpus[:5]), after_one)
    assert {int(s["step"]) for s in stream._optimizer_state["state"].values()} == {2}


def test_name_or_encoder_loads_a_private_copy(tiny_model_path, pairs, corpus):
    encoder = SentenceEncoder(tiny_model_path)
    before = encoder.transform(corpus[:5])  # loads the shared instance
    for source in (tiny_model_path, encoder):
        fitted = learner(source).fit(*small(pairs))
        assert fitted.model_ is not encoder.model_
        assert not np.allclose(fitted.transform(corpus[:5]), before, atol=1e-4)
    assert np.array_equal(encoder.transform(corpus[:5]), before)
    assert np.array_equal(SentenceEncoder(tiny_model_path).transform(corpus[:5]), before)


def test_no_files_left_in_the_working_directory(tiny_model_path, pairs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    learner(tiny_model_path).fit(*small(pairs))
    assert os.listdir(tmp_path) == []


def test_to_disk_loads_with_sentence_encoder(tiny_model_path, pairs, corpus, tmp_path):
    fitted = learner(tiny_model_path).fit(*small(pairs))
    target = tmp_path / "model"
    fitted.to_disk(target)  # a model saved there before...
    (target / "stale.txt").write_text("old content is replaced")
    assert fitted.to_disk(target) == str(target)  # ...is replaced as a whole
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp dirs left
    loaded = SentenceEncoder(str(target)).transform(corpus)
    assert np.allclose(loaded, fitted.transform(corpus), atol=1e-5)
    with pytest.raises(ValueError, match="must be a directory"):
        fitted.to_disk(target / "config.json")


def test_pickle_keeps_fine_tuned_weights(tiny_model_path, pairs, corpus):
    fitted = learner(tiny_model_path).fit(*small(pairs))
    again = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(again.transform(corpus), fitted.transform(corpus))
    assert again.history_ == fitted.history_


def test_unfitted_learner_says_so(tiny_model_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="SbertLearner.*not fitted"):
        SbertLearner(tiny_model_path).transform(["a"])
    assert pickle.loads(pickle.dumps(SbertLearner(tiny_model_path))).sent_tfm == tiny_model_path


def test_a_failed_call_leaves_the_learner_as_it_was(tiny_model_path, pairs, corpus):
    """Training that fails half-way (here: interrupted) records nothing: a first call leaves
    the learner unfitted (no half-trained model_), a later fit keeps the previous model."""
    from sklearn.exceptions import NotFittedError

    X1, X2, y = pairs
    fresh = learner(tiny_model_path)
    fresh._train = lambda *args: (_ for _ in ()).throw(KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        fresh.fit(X1[:16], X2[:16], y[:16])
    del fresh._train
    with pytest.raises(NotFittedError):
        fresh.transform(corpus[:2])
    fitted = learner(tiny_model_path).fit(X1[:16], X2[:16], y[:16])
    before, model = fitted.transform(corpus[:3]), fitted.model_
    with pytest.raises(ValueError):
        fitted.fit(X1[:16], X2[:15], y[:16])
    assert fitted.model_ is model
    np.testing.assert_array_equal(fitted.transform(corpus[:3]), before)


JARGON = [
    ("ooo", "out of the office"),
    ("wfh", "working from home"),
    ("eod", "the end of the day"),
    ("pto", "paid time off"),
    ("lgtm", "this looks good to me"),
    ("asap", "as soon as possible"),
]


FRAMES = [
    "{} says the manager",
    "note: {} for the whole team",
    "reminder {} this friday",
    "she wrote {} in the chat",
    "{} according to the email",
    "my reply was simply {}",
]


def test_minilm_learns_paraphrases():
    # jargon <-> plain-English paraphrases: train in some sentence frames, test in unseen ones
    def make(frames):
        X1, X2, y = [], [], []
        for k, (short, plain) in enumerate(JARGON):
            other = JARGON[(k + 1) % len(JARGON)][1]
            for frame in frames:
                X1 += [frame.format(short), frame.format(short)]
                X2 += [frame.format(plain), frame.format(other)]
                y += [1.0, 0.0]
        return X1, X2, np.array(y)

    X1, X2, y = make(FRAMES[:4])
    positives = y == 1
    fitted = SbertLearner(
        "all-MiniLM-L6-v2", loss="mnrl", batch_size=8, learning_rate=2e-4, random_state=0
    ).fit([x for x, p in zip(X1, positives) if p], [x for x, p in zip(X2, positives) if p])
    X1, X2, y = make(FRAMES[4:])
    pos = y == 1
    after = fitted.predict(X1, X2)
    before = cosine(SentenceEncoder("all-MiniLM-L6-v2"), X1, X2)  # the untouched shared model
    assert after[pos].mean() > before[pos].mean() + 0.02
    # and not by pulling every pair together: paraphrases stand out more from non-paraphrases
    gap_after = after[pos].mean() - after[~pos].mean()
    gap_before = before[pos].mean() - before[~pos].mean()
    assert gap_after > gap_before + 0.03
