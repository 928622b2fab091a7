"""SbertLearner and SbertTuner: fine-tuning the sentence model itself (tiny BERT, and MiniLM)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from embetter.finetune import SbertLearner, SbertTuner
from embetter.text import SentenceEncoder
from tests.conftest import SUBJECTS


@pytest.fixture(scope="module")
def pairs(corpus):
    """256 text pairs with a 0/1 label: 1 when the subjects fall in the same (arbitrary) group,
    which no word overlap gives away: the model has to learn it."""
    rng = np.random.default_rng(0)
    i = rng.integers(0, len(corpus), 256)
    j = rng.integers(0, len(corpus), 256)
    X1 = [corpus[k] for k in i]
    X2 = [corpus[k] for k in j]
    group = {s: n % 2 for n, s in enumerate(SUBJECTS)}
    subject = [group[" ".join(t.split()[:2])] for t in X1 + X2]
    y = (np.array(subject[:256]) == np.array(subject[256:])).astype(float)
    return X1, X2, y


def cosine(encoder, X1, X2):
    a, b = encoder.transform(X1), encoder.transform(X2)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def small(pairs, n=32):
    X1, X2, y = pairs
    return X1[:n], X2[:n], y[:n]


def learner(path, **kw):
    kw.setdefault("random_state", 0)
    kw.setdefault("learning_rate", 1e-3)  # a random tiny model needs big steps to move at all
    return SbertLearner(path, **kw)


# -- SbertLearner ------------------------------------------------------------------------------
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


def torch_equal(a, b):
    import torch

    return torch.equal(a.detach().cpu(), b.detach().cpu())  # the fitted model may be on a GPU


def test_global_random_state_is_left_alone(tiny_model_path, pairs):
    import random

    import torch

    np.random.seed(123), random.seed(123), torch.manual_seed(123)
    expected = (np.random.rand(), random.random(), torch.rand(1).item())
    np.random.seed(123), random.seed(123), torch.manual_seed(123)
    learner(tiny_model_path).fit(*small(pairs, 16))
    assert (np.random.rand(), random.random(), torch.rand(1).item()) == expected


@pytest.mark.parametrize(
    "case", ["cosine", "cosent", "contrastive", "online_contrastive", "mnrl", "mnrl+negatives",
             "supcon", "cosine+matryoshka", "supcon+matryoshka", "cosine+left-padding"])
def test_a_batch_of_positions_has_the_loss_of_its_written_out_pairs(tiny_model_path, corpus,
                                                                    case):
    """Encoding each distinct text of a batch once (texts tokenised once, sliced per batch)
    changes the cost, not the loss or the gradients of sentence-transformers' own loss on the
    written-out pairs (MatryoshkaLoss too). A tokenizer that pads on the left is not sliced:
    each batch's distinct texts are tokenised then, with the same result."""
    import torch
    from sentence_transformers import SentenceTransformer

    from embetter._st import losses
    from embetter.finetune._losses import SupervisedContrastiveLoss, learner_loss
    from embetter.finetune._trainer import Rows, Tokens, batch_loss

    loss = case.split("+")[0]
    dims = [32, 8] if case.endswith("matryoshka") else None
    # float64, no dropout: the merged and the plain passes sum in different orders, which in
    # float32 alone moves a gradient by ~1e-6 (seen once in a full run); the check is exactness
    model = SentenceTransformer(tiny_model_path, device="cpu").double().eval()
    if case.endswith("left-padding"):
        model.tokenizer.padding_side = "left"
    ours = learner_loss(loss, model, dims)
    inner = ours.inner if dims else ours
    plain = inner if loss == "supcon" else type(inner)(model)
    if dims:
        plain = losses().MatryoshkaLoss(model, plain, matryoshka_dims=dims)
    if loss == "cosine":  # its MSE takes float32 labels (`labels.float()`): keep float64 throughout
        class MSE64(torch.nn.MSELoss):
            def forward(self, out, target):
                return super().forward(out, target.to(out.dtype))

        inner.loss_fct = (plain.loss if dims else plain).loss_fct = MSE64()
    texts = corpus[:12]
    columns = [np.array([0, 1, 2, 0, 3, 1, 4, 5]), np.array([1, 0, 0, 2, 5, 5, 4, 3])]
    if loss == "mnrl":  # no text twice in a batch
        columns = [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7])]
        if case.endswith("negatives"):
            columns.append(np.array([8, 9, 10, 11]))
    labels = np.array([1, 1, 0, 0, 1, 0, 1, 0])[:len(columns[0])]
    targets = {"mnrl": None, "supcon": np.array([0, 1, 2, 0, 1, 2, 0, 1])}.get(
        loss, labels.astype(np.int64 if "contrastive" in loss else np.float64))
    features = [model.preprocess([texts[i] for i in idx]) for idx in columns]
    rows = []
    hook = model.register_forward_pre_hook(lambda m, a: rows.append(a[0]["input_ids"].shape[0]))

    def loss_and_grads(fn):
        model.zero_grad()
        value = fn()
        value.backward()
        return value.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    expected, expected_grads = loss_and_grads(lambda: plain(
        [dict(f) for f in features], None if targets is None else torch.as_tensor(targets)))
    # (MatryoshkaLoss calls the model once per dimension, its cached forward behind the hook)
    assert sum(rows) == len(columns) * len(columns[0]) * len(dims or [1])
    rows.clear()
    tokens = Tokens(model, texts, torch.device("cpu"))
    assert (tokens.all is None) == case.endswith("left-padding")  # sliced, or per batch
    got, grads = loss_and_grads(lambda: batch_loss(
        model, tokens, Rows(texts, columns, targets), np.arange(len(columns[0])), ours))
    assert rows == [len(set(np.concatenate(columns)))]  # the distinct texts, one forward pass
    hook.remove()
    assert isinstance(inner, SupervisedContrastiveLoss) == (loss == "supcon")
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert len(grads) == len(expected_grads)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_no_duplicates_batches_hold_each_text_once_and_every_row_once():
    import torch

    from embetter.finetune._trainer import Rows, batches

    rng = np.random.default_rng(0)
    rows = Rows([f"t{i}" for i in range(10)], [rng.integers(0, 10, 60), rng.integers(0, 10, 60)])
    plain = batches(rows, 8, torch.Generator().manual_seed(0), no_duplicates=False)
    assert [len(b) for b in plain] == [8] * 7 + [4]
    assert sorted(np.concatenate(plain).tolist()) == list(range(60))
    found = batches(rows, 4, torch.Generator().manual_seed(0), no_duplicates=True)
    assert sorted(np.concatenate(found).tolist()) == list(range(60))
    for batch in found:
        texts = np.concatenate([c[batch] for c in rows.columns])
        # a row whose two texts are one text still counts once
        assert len(batch) <= 4 and len(set(texts.tolist())) == sum(
            len({int(rows.columns[0][r]), int(rows.columns[1][r])}) for r in batch)
    again = batches(rows, 4, torch.Generator().manual_seed(0), no_duplicates=True)
    assert all(np.array_equal(a, b) for a, b in zip(found, again))


def test_partial_fit_indexed_reads_a_text_given_twice_as_one_text(tiny_model_path, corpus):
    """Positions of two equal texts train as the same text: the same fit as one position."""
    texts = corpus[:6]
    idx1, idx2 = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4])
    y = np.array([1.0, 0.0, 1.0, 0.0])
    once = learner(tiny_model_path, batch_size=2).partial_fit_indexed(texts, idx1, idx2, y)
    twice = learner(tiny_model_path, batch_size=2).partial_fit_indexed(
        texts + [texts[1]], idx1, np.array([6, 2, 3, 4]), y)
    np.testing.assert_allclose(once.transform(corpus[:4]), twice.transform(corpus[:4]),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["cosine", "cosent", "contrastive", "online_contrastive"])
def test_pair_losses_train(tiny_model_path, pairs, loss):
    fitted = learner(tiny_model_path, loss=loss, matryoshka_dims=[32, 8]).fit(*small(pairs))
    X = fitted.transform(["the cat likes pizza", "a dog fixes old cars"])
    assert X.shape == (2, 32) and X.dtype == np.float32 and np.isfinite(X).all()


def test_mnrl_with_and_without_negatives(tiny_model_path, corpus):
    anchors, positives, negatives = corpus[:24], corpus[1:25], corpus[30:54]
    fitted = learner(tiny_model_path, loss="mnrl", batch_size=8).fit(anchors, positives)
    assert fitted.n_steps_ >= 3
    fitted = learner(tiny_model_path, loss="mnrl", batch_size=8).fit(
        anchors, positives, np.ones(24), negatives=negatives
    )
    assert fitted.predict(anchors[:3], positives[:3]).shape == (3,)


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
    target.mkdir()
    (target / "stale.txt").write_text("old content is replaced")
    assert fitted.to_disk(target) == str(target)
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

    with pytest.raises(NotFittedError):
        SbertLearner(tiny_model_path).transform(["a"])
    assert pickle.loads(pickle.dumps(SbertLearner(tiny_model_path))).sent_tfm == tiny_model_path


# -- SbertTuner --------------------------------------------------------------------------------
def tuner(path, **kw):
    kw.setdefault("random_state", 0)
    kw.setdefault("learning_rate", 1e-3)
    kw.setdefault("label_texts", None)  # the pair counts below are the texts' own
    return SbertTuner(path, **kw)


def test_tuner_in_a_pipeline(tiny_model_path, labelled):
    texts, y = labelled
    pipe = make_pipeline(tuner(tiny_model_path, n_neg=2, n_pos=1), LogisticRegression(max_iter=500))
    pipe.fit(texts, y)
    step = pipe[0]
    assert step.n_pairs_ == len(texts) * 3  # n_pos + n_neg per text: linear, not quadratic
    assert step.transform(texts).shape == (len(texts), 32)
    assert list(step.get_feature_names_out()[:2]) == ["sberttuner0", "sberttuner1"]
    assert pipe.score(texts, y) > 0.5


def test_tuner_clone_pickle_and_seed(tiny_model_path, labelled):
    texts, y = labelled
    fitted = tuner(tiny_model_path).fit(texts, y)
    again = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(again.transform(texts), fitted.transform(texts))
    fresh = clone(fitted)
    assert not hasattr(fresh, "learner_") and fresh.get_params() == fitted.get_params()
    assert np.array_equal(fresh.fit(texts, y).transform(texts), fitted.transform(texts))


def test_tuner_grid_search(tiny_model_path, labelled):
    texts, y = labelled
    pipe = make_pipeline(tuner(tiny_model_path), LogisticRegression(max_iter=200))
    grid = GridSearchCV(pipe, {"sberttuner__n_neg": [1, 2]}, cv=2).fit(texts, y)
    assert grid.best_params_["sberttuner__n_neg"] in (1, 2)
    assert grid.predict(texts[:3]).shape == (3,)


def test_tuner_mnrl_and_multilabel(tiny_model_path, labelled):
    texts, y = labelled
    fitted = tuner(tiny_model_path, loss="mnrl", batch_size=8).fit(texts, y)
    assert fitted.n_pairs_ == len(texts) * fitted.n_pos_  # positives only
    Y = np.stack([y == "likes", y == "hates", np.char.startswith(y, "f")], axis=1).astype(int)
    assert tuner(tiny_model_path, n_neg=1).fit(texts, Y).transform(texts[:2]).shape == (2, 32)


def test_tuner_bad_input(tiny_model_path, labelled):
    texts, y = labelled
    with pytest.raises(ValueError, match="y is required"):
        tuner(tiny_model_path).fit(texts, None)
    with pytest.raises(ValueError, match="y has 2 entries"):
        tuner(tiny_model_path).fit(texts, y[:2])
    with pytest.raises(ValueError, match="only one class"):
        tuner(tiny_model_path).fit(texts, np.zeros(len(texts)))
    with pytest.raises(ValueError, match="'n_neg' parameter"):
        tuner(tiny_model_path, n_neg=-1).fit(texts, y)
    with pytest.raises(ValueError, match="'loss' parameter"):
        tuner(tiny_model_path, loss="triplet").fit(texts, y)
    with pytest.raises(ValueError, match="label columns"):
        Y = np.eye(3, dtype=int)[np.arange(len(texts)) % 3]
        tuner(tiny_model_path).partial_fit(texts, Y).partial_fit(texts[:4], Y[:4, :2])


def test_tuner_partial_fit_keeps_training_one_model(tiny_model_path, labelled):
    texts, y = labelled
    classes = np.unique(y)
    # an exact count: every text has negatives; no retrain, so one model trains on
    stream = tuner(tiny_model_path, n_neg=2, n_pos=0, refit_growth=None)
    stream.partial_fit(texts[:12], y[:12], classes=classes)
    model = stream.model_
    first = stream.transform(texts)
    assert stream.n_pairs_ == 12 * 2 and stream.n_iter_ == 1
    stream.partial_fit(texts[12:], y[12:])
    assert stream.model_ is model and not np.allclose(stream.transform(texts), first, atol=1e-5)
    # pairs follow the rows a call brings: n_pos + n_neg per new text
    assert stream.n_pairs_ == len(texts) * 2 and stream.n_iter_ == 2
    assert len(stream.loss_curve_) == 2 and [h["epoch"] for h in stream.history_] == [1, 2]
    with pytest.raises(ValueError, match="labels not seen before"):
        stream.partial_fit(texts[:2], np.array(["flies", "unknown"]))
    assert stream.fit(texts, y).n_iter_ == 1 and stream.model_ is not model  # fit starts over


def test_stream_average_trains_on_raw_weights_and_serves_their_tail_average():
    import torch

    from embetter.finetune._stream_average import StreamAverage

    layer = torch.nn.Linear(2, 2)
    params = dict(layer.named_parameters())

    def values():
        return {float(v) for p in params.values() for v in p.detach().ravel()}

    def train_to(value):
        with torch.no_grad():
            for p in params.values():
                p.fill_(value)

    average = StreamAverage()
    average.start(params)
    train_to(1.0)
    average.end(params, n_new=10, n_seen=10)  # one call: its weights are the model's
    assert values() == {1.0}
    average.start(params)
    train_to(4.0)
    average.end(params, n_new=10, n_seen=20)  # weights 10 * 10 and 10 * 20
    assert values() == {3.0}  # (100 * 1 + 200 * 4) / 300: the model serves the average
    average.start(params)
    assert values() == {4.0}  # ... and the next call trains on from its own weights
    average.end(params, n_new=0, n_seen=20)  # no new rows: no weight in the average
    assert values() == {3.0}
    restored = pickle.loads(pickle.dumps(average))
    assert restored.weight == 300 and restored._raw is None  # the raw copy is not pickled
    restored.start(params)  # after loading, training carries on from the average
    assert values() == {3.0}


def test_tuner_stream_serves_the_row_weighted_average_of_its_calls(tiny_model_path, labelled):
    import torch

    texts, y = labelled
    stream = tuner(tiny_model_path, refit_growth=None)
    stream.partial_fit(texts[:12], y[:12], classes=np.unique(y))
    assert stream._average._raw is None  # one call (a fit): no second copy of the weights
    after_one = {k: p.detach().clone() for k, p in stream.model_.named_parameters()}
    stream.partial_fit(texts[12:], y[12:])
    raw, served = stream._average._raw, dict(stream.model_.named_parameters())
    first, second = 12 * 12, (len(texts) - 12) * len(texts)  # new rows * rows seen
    assert "embeddings.word_embeddings.weight" not in "".join(raw)  # frozen: not copied
    for name, p in raw.items():
        expected = (first * after_one[name] + second * p) / (first + second)
        torch.testing.assert_close(served[name], expected)
    assert any(not torch.equal(p, served[name]) for name, p in raw.items())
    again = pickle.loads(pickle.dumps(stream))
    np.testing.assert_allclose(again.transform(texts[:3]), stream.transform(texts[:3]),
                               atol=1e-6)

    def fail_midway(*args):  # a call that trains the raw weights, then fails
        with torch.no_grad():
            for p in raw:
                served[p].fill_(0.5)
        raise KeyboardInterrupt

    before = stream.transform(texts[:3])
    stream._train_pairs = fail_midway
    with pytest.raises(KeyboardInterrupt):
        stream.partial_fit(texts[:4], y[:4])
    del stream._train_pairs
    np.testing.assert_array_equal(stream.transform(texts[:3]), before)  # the average again
    assert again.partial_fit(texts[:4], y[:4]).n_iter_ == 3


def test_tuner_stream_retrains_when_the_texts_seen_have_grown(tiny_model_path, labelled):
    """`refit_growth=2`: a call that brings the texts seen to twice those the model was last
    trained from the start on retrains a fresh copy on all of them, which is exactly `fit` on
    those texts; calls in between keep training the same model."""
    import torch

    texts, y = labelled
    classes = np.unique(y)
    stream = tuner(tiny_model_path, refit_growth=2.0)
    stream.partial_fit(texts[:10], y[:10], classes=classes)
    assert stream.refit_rows_ == 10
    stream.partial_fit(texts[10:15], y[10:15])  # 15 < 2 * 10: the same model trains on
    model, pairs = stream.model_, stream.n_pairs_
    stream.partial_fit(texts[15:20], y[15:20])  # 20 texts: a fresh copy trains on all 20
    assert stream.refit_rows_ == 20 and stream.model_ is not model
    fitted = tuner(tiny_model_path, refit_growth=2.0).fit(texts[:20], y[:20])
    np.testing.assert_array_equal(stream.transform(texts), fitted.transform(texts))
    assert stream.n_pairs_ == pairs + fitted.n_pairs_ and stream.n_iter_ == fitted.n_iter_ == 1
    stream.partial_fit(texts[20:30], y[20:30])  # 30 < 40: continues the retrained model
    assert stream.refit_rows_ == 20 and len(stream.seen_texts_) == 30
    with pytest.raises(ValueError, match="labels not seen before"):
        stream.partial_fit(texts[:30], np.array(["unknown"] * 30))  # a retrain's batch is checked
    with pytest.raises(ValueError, match="differs from the classes of the first"):
        stream.partial_fit(texts[:30], y[:30], classes=classes[:2])

    def fail_midway(*args):
        raise KeyboardInterrupt

    before, learner = stream.transform(texts[:3]), stream.learner_
    stream._train_pairs = fail_midway
    with pytest.raises(KeyboardInterrupt):  # a retrain that fails leaves the stream as it was
        stream.partial_fit(texts[:30], y[:30])
    del stream._train_pairs
    assert stream.learner_ is learner and len(stream.seen_texts_) == 30
    assert stream.refit_rows_ == 20 and stream.classes_ is not None
    np.testing.assert_array_equal(stream.transform(texts[:3]), before)
    # a tuner pickled before refit_growth existed streams on without retraining
    old = pickle.loads(pickle.dumps(stream))
    del old.__dict__["refit_growth"], old.__dict__["refit_rows_"]
    assert old.refit_growth is None and not old._refit_due(10**6)
    with pytest.raises(ValueError, match="refit_growth"):
        tuner(tiny_model_path, refit_growth=1.0).fit(texts, y)
    with pytest.raises(ValueError, match="refit_growth"):
        tuner(tiny_model_path, refit_growth="2").fit(texts, y)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("loss", ["contrastive", "supcon"])
def test_tuner_one_partial_fit_call_is_fit(tiny_model_path, labelled, loss):
    """A stream whose first batch holds every row (batches of 2,000 over 1,000 rows in the
    streaming grid) trains exactly what one fit trains, label texts included."""
    texts, y = labelled
    names = {label: f"they {label}" for label in np.unique(y)}
    kw = dict(loss=loss, label_texts=names, batch_size=8)
    fitted = tuner(tiny_model_path, **kw).fit(texts, y)
    streamed = tuner(tiny_model_path, **kw).partial_fit(texts, y, classes=np.unique(y))
    assert streamed.n_pairs_ == fitted.n_pairs_ > len(texts)
    np.testing.assert_array_equal(streamed.transform(texts), fitted.transform(texts))


def test_tuner_supcon_streams_positive_pairs_of_new_rows(tiny_model_path, labelled):
    from embetter.finetune._pairs import pairs_for_new_rows

    texts, y = labelled
    stream = tuner(tiny_model_path, loss="supcon", batch_size=8, n_pos=2)
    stream.partial_fit(texts[:12], y[:12])
    first = stream.n_pairs_
    stream.partial_fit(texts[12:16], y[12:16])
    # the same positive pairs the tuner draws: its new rows, partners from every row so far
    expected = [pairs_for_new_rows(y[:n], n_old, 2, 0, stream._pair_seed + n_old)[2].size
                for n_old, n in ((0, 12), (12, 16))]
    assert (first, stream.n_pairs_ - first) == tuple(expected) and 0 < expected[1] <= 4 * 2
    assert stream.learner_.n_steps_ == sum(-(-n // 8) for n in expected)


def test_stream_pairs_replay_earlier_rows_within_the_new_rows_budget():
    from embetter.finetune._pairs import generate_pairs, pairs_for_new_rows

    y = np.repeat(np.arange(4), 10)
    fresh = pairs_for_new_rows(y[:20], 0, 2, 2, random_state=0)  # a first call: fit's pairs
    expected = generate_pairs(y[:20], n_neg=2, n_pos=2, random_state=0)
    assert all(np.array_equal(a, b) for a, b in zip(fresh, expected))
    i, j, sim = pairs_for_new_rows(y, 20, 2, 2, random_state=0)
    assert len(i) == 20 * 4  # the budget of the 20 new rows ...
    assert (i < 20).any() and (i >= 20).any()  # ... spent on them and on replayed rows
    assert np.array_equal(sim == 1, y[i] == y[j])  # partners from every row so far


def test_tuner_supcon_trains_on_labelled_texts(tiny_model_path, labelled):
    texts, y = labelled
    fitted = tuner(tiny_model_path, loss="supcon", batch_size=8, epochs=2).fit(texts, y)
    assert fitted.n_iter_ == 2 and fitted.learner_.n_steps_ == 2 * -(-fitted.n_pairs_ // 8)
    assert all(np.isfinite(fitted.loss_curve_))
    before = SentenceEncoder(tiny_model_path).transform(texts)
    assert not np.allclose(fitted.transform(texts), before, atol=1e-4)
    Y = np.stack([y == "likes", y == "hates", np.char.startswith(y, "f")], axis=1).astype(int)
    assert tuner(tiny_model_path, loss="supcon").fit(texts, Y).transform(texts[:2]).shape == (2, 32)
    with pytest.raises(ValueError, match="needs positive pairs"):
        tuner(tiny_model_path, loss="supcon").fit(texts[:3], ["cat", "dog", "owl"])
    # one text per class: its label text is its positive
    names = {"cat": "a cat", "dog": "a dog", "owl": "an owl"}
    single = tuner(tiny_model_path, loss="supcon", label_texts=names).fit(
        texts[:3], ["cat", "dog", "owl"])
    assert single.n_pairs_ == 3 * single.n_pos_


def test_supervised_contrastive_loss_values():
    import torch

    from embetter.finetune._losses import SupervisedContrastiveLoss

    loss = SupervisedContrastiveLoss(model=None, scale=1.0)
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    same = loss.compute_loss_from_embeddings([z], torch.tensor([0, 0, 1, 1]))
    crossed = loss.compute_loss_from_embeddings([z], torch.tensor([0, 1, 0, 1]))
    # by hand: the positive has cosine 1, the two negatives cosine 0
    assert same.item() == pytest.approx(-np.log(np.e / (np.e + 2)), rel=1e-5)
    assert crossed.item() > same.item()
    alone = loss.compute_loss_from_embeddings([z], torch.tensor([0, 1, 2, 3]))
    assert alone.item() == 0.0  # nobody has a partner: nothing to learn, no NaN


def test_tuner_and_learner_tune_a_static_model(tiny_model_path, labelled):
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import StaticEmbedding
    from transformers import AutoTokenizer

    texts, y = labelled
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    static = SentenceTransformer(
        modules=[StaticEmbedding(tokenizer, embedding_dim=16)], device="cpu")
    before = static.encode(texts)
    for loss in ("cosine", "supcon"):
        fitted = tuner(static, loss=loss, learning_rate=1e-2).fit(texts, y)
        assert fitted.transform(texts).shape == (len(texts), 16)
        assert not np.allclose(fitted.transform(texts), before, atol=1e-4)  # it trained
    assert np.array_equal(static.encode(texts), before)  # on a copy
    X1, X2 = texts[:10], texts[10:20]
    learned = SbertLearner(static, learning_rate=1e-2, random_state=0).fit(
        X1, X2, (y[:10] == y[10:20]).astype(float))
    assert learned.n_iter_ == 1 and np.isfinite(learned.loss_curve_[0])
    again = pickle.loads(pickle.dumps(fitted))
    assert np.allclose(again.transform(texts), fitted.transform(texts), atol=1e-6)


# -- the real model ------------------------------------------------------------------------------
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


# -- hard-negative mining ------------------------------------------------------------------------
def unit_rows(*rows):
    X = np.array(rows, dtype=np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_mining_picks_the_closest_non_match():
    from embetter.finetune import mine_hard_negatives

    anchors = ["q0", "q1", "q2", "q0"]  # q0 has two positives: neither is its negative
    positives = ["p0", "p1", "p2", "p0b"]
    A = unit_rows([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0])
    P = unit_rows([1, 0.6, 0], [0.6, 1, 0.3], [0, 0.3, 1], [1, 0, 0.2])
    a, p, n = mine_hard_negatives(anchors, positives, embeddings=(A, P), margin=None)
    assert list(zip(a, p, n)) == [
        ("q0", "p0", "p1"), ("q1", "p1", "p0"), ("q2", "p2", "p1"), ("q0", "p0b", "p1")
    ]
    a, p, n = mine_hard_negatives(anchors, positives, embeddings=(A, P), n_negatives=2,
                                  margin=None)
    assert [x for x, q in zip(n, a) if q == "q1"] == ["p0", "p2"]  # most similar first
    # a margin skips candidates nearly as close as the positive (likely unlabelled matches)
    a, p, n = mine_hard_negatives(anchors, positives, embeddings=(A, P), margin=0.5)
    assert list(zip(a, n)) == [("q0", "p2"), ("q1", "p2"), ("q2", "p1"), ("q0", "p2")]


def test_mining_with_models_feeds_mnrl(tiny_model_path, corpus):
    from embetter.finetune import mine_hard_negatives

    anchors, positives = corpus[0:40:2], corpus[1:41:2]
    a, p, n = mine_hard_negatives(anchors, positives, tiny_model_path, margin=None)
    assert len(a) == 20 and all(x != y for x, y in zip(p, n)) and set(n) <= set(positives)
    fitted = learner(tiny_model_path, loss="mnrl", batch_size=8).fit(a, p, negatives=n)
    # a fitted learner (or any transformer) can mine with its own, tuned embeddings
    a2, _, n2 = mine_hard_negatives(anchors, positives, fitted, n_negatives=3, margin=None)
    assert len(a2) == 60 and len(n2) == 60


def test_mining_bad_input():
    from embetter.finetune import mine_hard_negatives

    A = unit_rows([1, 0], [0, 1])
    with pytest.raises(ValueError, match="same number"):
        mine_hard_negatives(["a", "b"], ["c"], embeddings=(A, A))
    with pytest.raises(ValueError, match="at least 2"):
        mine_hard_negatives(["a"], ["c"], embeddings=(A[:1], A[:1]))
    with pytest.raises(ValueError, match="embeddings\\[1\\] has 3 rows"):
        mine_hard_negatives(["a", "b"], ["c", "d"], embeddings=(A, unit_rows([1, 0], [0, 1],
                                                                               [1, 1])))
    with pytest.raises(ValueError, match="no hard negative"):
        mine_hard_negatives(["a", "b"], ["c", "d"], embeddings=(A, A), margin=2.0)
    with pytest.raises(ValueError, match="n_negatives"):
        mine_hard_negatives(["a", "b"], ["c", "d"], embeddings=(A, A), n_negatives=0)
    with pytest.raises(TypeError, match="model must be"):
        mine_hard_negatives(["a", "b"], ["c", "d"], model=3)


def test_tuner_auto_loss_follows_the_number_of_classes(tiny_model_path, labelled):
    texts, y = labelled
    n_classes = np.unique(y).size
    few = tuner(tiny_model_path, batch_size=n_classes).fit(texts, y)
    many = tuner(tiny_model_path, batch_size=n_classes - 1).fit(texts, y)
    assert (few.loss, few.loss_, many.loss_) == ("auto", "cosine", "supcon")
    assert many.learner_.loss == "supcon"
    # a stream decides on its first call, from `classes` when given
    half = len(texts) // 2
    stream = tuner(tiny_model_path, batch_size=2).partial_fit(texts[:half], y[:half], classes=y)
    assert stream.loss_ == "supcon" and stream.partial_fit(texts[half:], y[half:]).loss_ == "supcon"
    with pytest.raises(ValueError, match="loss"):
        tuner(tiny_model_path, loss="triplet").fit(texts, y)


def test_label_texts_name_the_classes():
    from embetter.finetune._label_texts import name_as_text, resolve_label_texts

    assert name_as_text("card_arrival") == "card arrival"
    assert name_as_text("Sci/Tech") == "Sci Tech"
    assert name_as_text("AddToPlaylist") == "Add To Playlist"
    assert name_as_text("getWeather") == "get Weather" and name_as_text("HUM") == "HUM"
    assert name_as_text("42") is None and name_as_text(3) is None and name_as_text("_") is None
    classes = np.array(["joy", "sad_news"])
    assert resolve_label_texts("auto", classes, False) == {"joy": "joy", "sad_news": "sad news"}
    assert resolve_label_texts("auto", np.array(["joy", "7"]), False) == {}  # all or nothing
    assert resolve_label_texts("auto", np.array(["a_b", "a-b"]), False) == {}  # one text
    assert resolve_label_texts("auto", np.arange(2), True) == {}  # multi-label columns
    assert resolve_label_texts(None, classes, False) == {}
    given = {"joy": "happy", "sad_news": "bad news", "other": "unused"}
    assert resolve_label_texts(given, classes, False) == {"joy": "happy", "sad_news": "bad news"}
    with pytest.raises(ValueError, match=r"no text for the labels \['sad_news'\]"):
        resolve_label_texts({"joy": "happy"}, classes, False)
    with pytest.raises(ValueError, match="non-empty str"):
        resolve_label_texts({"joy": "happy", "sad_news": " "}, classes, False)


def test_label_text_pairs_point_at_own_and_other_classes():
    from embetter.finetune._label_texts import label_text_pairs

    codes = np.repeat(np.arange(4), 5)
    rows, named, sim = label_text_pairs(codes, np.arange(10, 20), 4, n_pos=2, n_neg=3, rng=0)
    assert len(rows) == 10 * 5 and set(rows) == set(range(10, 20))
    assert np.array_equal(sim == 1, codes[rows] == named)  # positives: own class only
    assert (sim == 1).sum() == 20 and set(named[sim == 0]) == {0, 1, 2, 3}
    Y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]])
    rows, named, sim = label_text_pairs(Y, np.arange(4), 3, n_pos=4, n_neg=4, rng=0)
    assert np.array_equal(Y[rows, named] == 1, sim == 1)
    # no labels: no positive; every label: no negative
    assert 2 not in rows[sim == 1] and 3 not in rows[sim == 0]
    assert (sim == 1).sum() == 3 * 4 and (sim == 0).sum() == 3 * 4


def test_tuner_trains_towards_label_texts(tiny_model_path, labelled):
    texts, y = labelled
    classes = np.unique(y)
    names = {c: f"it {c} things" for c in classes}
    named = tuner(tiny_model_path, label_texts=names).fit(texts, y)
    plain = tuner(tiny_model_path).fit(texts, y)
    assert named.label_texts_ == names and plain.label_texts_ == {}
    # n_pos + n_neg more per text with names; twice the auto counts without: one budget
    assert named.n_pairs_ == plain.n_pairs_ and plain.n_pos_ == 2 * named.n_pos_
    assert not np.allclose(named.transform(texts), plain.transform(texts), atol=1e-4)
    codes = np.searchsorted(classes, y)
    assert tuner(tiny_model_path, label_texts="auto").fit(texts, codes).label_texts_ == {}
    with pytest.raises(ValueError, match="'label_texts' parameter"):
        tuner(tiny_model_path, label_texts=["likes"]).fit(texts, y)
    with pytest.raises(ValueError, match="no text for the labels"):
        tuner(tiny_model_path, label_texts={classes[0]: "x"}).fit(texts, y)
    # a stream pairs each new text with label texts once: as many pairs as one fit
    half = len(texts) // 2
    stream = tuner(tiny_model_path, n_pos=0, n_neg=2, label_texts=names, refit_growth=None)
    stream.partial_fit(texts[:half], y[:half], classes=classes).partial_fit(texts[half:], y[half:])
    once = tuner(tiny_model_path, n_pos=0, n_neg=2, label_texts=names).fit(texts, y)
    assert stream.n_pairs_ == once.n_pairs_ == len(texts) * 2 * 2
    Y = np.stack([y == "likes", y == "hates"], axis=1).astype(int)
    multi = tuner(tiny_model_path, label_texts={0: "liking", 1: "hating"}).fit(texts, Y)
    assert multi.label_texts_ == {0: "liking", 1: "hating"}


TOPICS = {
    "sports": ["the team won the final", "a late goal decided the match",
               "she broke the sprint record", "the coach picked a new striker"],
    "cooking": ["simmer the sauce for ten minutes", "knead the dough until smooth",
                "season the soup with salt", "bake the bread at high heat"],
    "weather": ["heavy rain is expected tonight", "a cold front brings snow",
                "sunny skies and a light breeze", "storm warnings along the coast"],
}


def test_auto_label_texts_need_names_that_fit_the_texts():
    from embetter.finetune._label_texts import names_are_words, names_fit_the_texts
    from embetter.text._models import load_sentence_transformer

    model = load_sentence_transformer("all-MiniLM-L6-v2", "cpu")
    texts = [t for ts in TOPICS.values() for t in ts]
    targets = np.repeat(np.arange(3), 4)
    assert names_fit_the_texts(model, texts, targets, list(TOPICS), random_state=0)
    assert not names_fit_the_texts(model, texts, targets, ["QZX", "VKB", "JWP"], random_state=0)
    assert not names_fit_the_texts(model, texts, targets[::-1], list(TOPICS), random_state=0)
    # abbreviations are no words of the model's vocabulary, whatever the t-test says
    fits = dict(random_state=0, min_t=-np.inf)
    assert names_fit_the_texts(model, texts, targets, list(TOPICS), **fits)
    assert not names_fit_the_texts(model, texts, targets, ["SPRT", "CKNG", "WTHR"], **fits)
    assert names_fit_the_texts(model, texts, targets, ["SPRT", "CKNG", "WTHR"], **fits,
                               min_words=0)
    assert not names_are_words(model, ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"])
    assert names_are_words(model, ["ham", "spam"])  # "spam" is two pieces: half the names
    assert names_are_words(model, ["DESC manner", "LOC city", "NUM dist"])  # words in 2 of 3
    assert not names_are_words(model, ["ham", "spam"], min_share=0.6)
    # in the tuner: names kept (and, in a stream, for labels met later), codes dropped
    y = np.repeat(list(TOPICS), 4)
    fast = dict(max_seq_length=8, learning_rate=1e-5, n_pos=1, n_neg=1, random_state=0)
    kept = SbertTuner(**fast).partial_fit(texts[:8], y[:8])
    assert kept.label_texts_ == {"cooking": "cooking", "sports": "sports"}
    assert kept.partial_fit(texts[8:], y[8:]).label_texts_["weather"] == "weather"
    codes = np.array(["QZX", "VKB", "JWP"])[targets]
    assert SbertTuner(**fast).fit(texts, codes).label_texts_ == {}


# -- index pairs and supcon: the learner owns every loss the tuner trains with -------------------
def test_partial_fit_indexed_trains_exactly_as_the_written_out_pairs(tiny_model_path, corpus):
    texts = corpus[:12]
    idx1, idx2 = np.array([0, 1, 2, 3, 4, 5, 0, 7]), np.array([1, 0, 3, 2, 5, 4, 9, 11])
    y = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    by_index = learner(tiny_model_path, batch_size=4).partial_fit_indexed(texts, idx1, idx2, y)
    written = learner(tiny_model_path, batch_size=4).partial_fit(
        [texts[i] for i in idx1], [texts[j] for j in idx2], y)
    np.testing.assert_array_equal(by_index.transform(texts), written.transform(texts))
    with pytest.raises(ValueError, match=r"idx2 must be positions into texts \(0 to 11\)"):
        learner(tiny_model_path).partial_fit_indexed(texts, idx1, idx2 + 5, y)
    with pytest.raises(TypeError, match="idx1 must be a 1-D collection of int positions"):
        learner(tiny_model_path).partial_fit_indexed(texts, idx1.astype(float), idx2, y)
    with pytest.raises(ValueError, match="same length"):
        learner(tiny_model_path).partial_fit_indexed(texts, idx1[:3], idx2, y)


def test_supcon_is_a_learner_loss_with_a_class_per_pair(tiny_model_path, labelled):
    texts, verbs = labelled
    classes = np.unique(verbs, return_inverse=True)[1]
    order = np.argsort(classes, kind="stable")
    anchors, positives = order[:-1], order[1:]
    keep = classes[anchors] == classes[positives]  # positive pairs: same verb
    X1 = [texts[i] for i in anchors[keep]]
    X2 = [texts[j] for j in positives[keep]]
    fitted = learner(tiny_model_path, loss="supcon", batch_size=8).fit(
        X1, X2, classes[anchors[keep]])
    assert fitted.n_iter_ == 1 and np.isfinite(fitted.loss_curve_).all()
    with pytest.raises(ValueError, match="y is required for loss='supcon'"):
        learner(tiny_model_path, loss="supcon").fit(X1, X2)
    with pytest.raises(ValueError, match="int class codes"):
        learner(tiny_model_path, loss="supcon").fit(X1, X2, np.full(len(X1), 0.5))
    with pytest.raises(ValueError, match="one class per pair"):
        learner(tiny_model_path, loss="supcon").fit(X1, X2, [0, 1])
    with pytest.raises(ValueError, match="negatives are only used by loss='mnrl'"):
        learner(tiny_model_path, loss="supcon").fit(X1, X2, classes[anchors[keep]],
                                                    negatives=X1)


def test_a_supcon_tuner_hands_its_learner_the_loss(tiny_model_path, labelled):
    texts, verbs = labelled
    tuner = SbertTuner(tiny_model_path, loss="supcon", epochs=1, batch_size=8,
                       label_texts=None, random_state=0).fit(texts, verbs)
    assert tuner.loss_ == "supcon" and tuner.learner_.loss == "supcon"
    assert tuner.n_pairs_ > 0 and tuner.transform(texts[:3]).shape == (3, 32)


def test_supcon_class_texts_join_every_batch(tiny_model_path, labelled):
    import torch

    from embetter.finetune._losses import SupervisedContrastiveLoss

    texts, verbs = labelled
    classes, codes = np.unique(verbs, return_inverse=True)
    X1, X2, y = texts[:-1], texts[1:], codes[:-1]
    names = [f"a text about {c}" for c in classes]
    fitted = learner(tiny_model_path, loss="supcon", batch_size=8).fit(
        X1, X2, y, class_texts=names)
    assert fitted.n_iter_ == 1 and np.isfinite(fitted.loss_curve_).all()
    # the class texts change what is learned: the same data without them trains otherwise
    plain = learner(tiny_model_path, loss="supcon", batch_size=8).fit(X1, X2, y)
    assert not np.allclose(fitted.transform(texts[:4]), plain.transform(texts[:4]), atol=1e-5)
    with pytest.raises(ValueError, match="only used by loss='supcon'"):
        learner(tiny_model_path, loss="cosine").fit(X1, X2, np.ones(len(X1)), class_texts=names)
    with pytest.raises(ValueError, match="a text for every class code"):
        learner(tiny_model_path, loss="supcon").fit(X1, X2, y, class_texts=names[:1])
    with pytest.raises(ValueError, match="non-empty"):
        learner(tiny_model_path, loss="supcon").fit(X1, X2, y, class_texts=[""] * len(names))
    # a batch with no pair of its own class still meets its class's text: a positive
    loss = SupervisedContrastiveLoss(model=None, scale=1.0, class_texts=["x", "y"])
    loss._encode_classes = lambda device: torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    aligned = loss.compute_loss_from_embeddings([z], torch.tensor([0, 1]))
    crossed = loss.compute_loss_from_embeddings([z], torch.tensor([1, 0]))
    assert float(aligned) < float(crossed)



def test_auto_pairs_grow_with_the_classes(tiny_model_path, labelled):
    texts, verbs = labelled
    two = np.where(verbs == verbs[0], "a", "b")
    named = {"a": "the first kind", "b": "the second kind"}
    assert tuner(tiny_model_path, label_texts=named).fit(texts, two).n_pos_ == 2
    # without label texts, the pairs they would have taken go to other texts
    assert tuner(tiny_model_path).fit(texts, two).n_pos_ == 4
    k = int(np.clip(np.unique(verbs).size, 2, 4))
    names = {v: f"it {v}" for v in np.unique(verbs)}
    many = tuner(tiny_model_path, label_texts=names).fit(texts, verbs)
    assert (many.n_pos_, many.n_neg_) == (k, k) and many.loss_ == "cosine"
    assert many.n_pairs_ == len(texts) * 2 * k * 2  # the texts' pairs and the names'
    unnamed = tuner(tiny_model_path).fit(texts, verbs)
    assert (unnamed.n_pos_, unnamed.n_neg_) == (2 * k, 2 * k)
    assert unnamed.n_pairs_ == many.n_pairs_  # as many steps either way
    supcon = tuner(tiny_model_path, loss="supcon", label_texts=names).fit(texts, verbs)
    assert (supcon.n_pos_, supcon.n_neg_) == (2, 0)
    assert tuner(tiny_model_path, loss="supcon").fit(texts, verbs).n_pos_ == 4
    fixed = tuner(tiny_model_path, n_pos=1, n_neg=3).fit(texts, verbs)
    assert (fixed.n_pos_, fixed.n_neg_) == (1, 3)
    with pytest.raises(ValueError, match="n_pos"):
        tuner(tiny_model_path, n_pos="many").fit(texts, verbs)
