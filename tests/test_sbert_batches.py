"""SbertLearner's data path: index pairs over distinct texts, batches, and the losses on them."""

from __future__ import annotations

import numpy as np
import pytest

from tests._sbert_helpers import learner


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
