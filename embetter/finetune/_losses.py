"""Training losses, one per data format, the way sentence-transformers names them.

Pair losses come from sentence-transformers; this module adds two losses that train on texts
with class labels: `SupervisedContrastiveLoss` (every same-class text in a batch is a positive,
every other text a negative) and `PrototypeLoss` (each text against every class's mean
embedding); and a Matryoshka wrapper that works on embeddings. The training loop
(`_trainer.train`) encodes each distinct text of a batch once and calls a loss's
`compute_loss_from_embeddings` with the embeddings gathered per column; before the first step
it calls a loss's `prepare(embed, rows)`, where it has one.
"""

from __future__ import annotations

import numpy as np
import torch

from embetter import _st
from embetter.finetune._label_texts import encode_sample

#: Loss name -> the data it trains on (sentence-transformers' data formats).
LOSSES = {
    "cosine": "pairs with a float similarity score in [-1, 1]",
    "cosent": "pairs with a float similarity score (only the order of the scores matters)",
    "contrastive": "pairs with a 0/1 label (1 = similar)",
    "online_contrastive": "pairs with a 0/1 label (1 = similar)",
    "mnrl": "positive (anchor, positive) pairs, optionally with a hard negative each",
    "supcon": "positive (anchor, positive) pairs with an int class per pair (or a 0/1 row "
              "of classes, multi-label); every same-class text in a batch is a positive",
    "prototype": "positive (anchor, positive) pairs with an int class per pair; each text is "
                 "classified against every class's mean embedding",
}

#: The losses that train on texts with a class each (positive pairs, a class per pair).
CLASS_LOSSES = ("supcon", "prototype")


def pair_loss(name: str, model):
    """The sentence-transformers loss for `name` (see `LOSSES`; not our class losses)."""
    losses = _st.losses()
    make = {
        "cosine": losses.CosineSimilarityLoss,
        "cosent": losses.CoSENTLoss,
        "contrastive": losses.ContrastiveLoss,
        "online_contrastive": losses.OnlineContrastiveLoss,
        "mnrl": losses.MultipleNegativesRankingLoss,
    }[name]
    return make(model)


def learner_loss(name: str, model, dims=None, class_texts=None):
    """The loss an `SbertLearner` trains with for `name`: a pair loss, or supervised
    contrastive over labelled positive pairs (with `class_texts`, every class's text joins
    each batch); Matryoshka-wrapped with `dims`. The training loop calls its
    `compute_loss_from_embeddings(columns, targets)` with one embedding tensor per column."""
    if name == "supcon":
        loss = SupervisedContrastiveLoss(model, class_texts=class_texts)
    elif name == "prototype":
        loss = PrototypeLoss(model)
    else:
        loss = pair_loss(name, model)
    return MatryoshkaLoss(loss, dims) if dims else loss


class MatryoshkaLoss(torch.nn.Module):
    """`inner` on each of the leading `dims` dimensions of the embeddings, summed (each cut
    normalised), as sentence-transformers' `MatryoshkaLoss` with equal weights."""

    def __init__(self, inner, dims):
        super().__init__()
        self.inner = inner
        self.dims = sorted({int(d) for d in dims}, reverse=True)

    def prepare(self, embed, rows):
        if hasattr(self.inner, "prepare"):
            self.inner.prepare(embed, rows)

    def compute_loss_from_embeddings(self, embeddings, labels):
        return sum(
            self.inner.compute_loss_from_embeddings(
                [torch.nn.functional.normalize(e[..., :d], dim=-1) for e in embeddings], labels)
            for d in self.dims)


class SupervisedContrastiveLoss(torch.nn.Module):
    """Texts with class labels; every other text of the batch is a negative or a positive.

    The supervised contrastive loss (Khosla et al., 2020): for each text, the softmax over its
    cosine similarities to the other texts of the batch (scaled by `scale`, i.e. divided by a
    temperature of `1 / scale`) should put its mass on the texts that share its label. One
    forward pass over `b` texts trains on all `b * (b - 1)` ordered pairs, which is why it
    beats pair losses for the same compute. A label row of 0/1 values (multi-label) makes
    texts that share any label positives. Data format: one or more text columns (such as an
    anchor and a positive of its class, Khosla's two views) and a `label` shared by the row.

    `class_texts` (one text per class code, such as the label names) join every batch as
    texts of their class: each text then meets every class at every step, not only the few
    classes a batch happens to hold (with 77 classes, a batch of 32 texts holds under half),
    and each class is pulled towards what its name means (as FastFit pairs texts with class
    names in its batch contrastive loss). They are short, so encoding them costs little.
    """

    def __init__(self, model, scale: float = 20.0, class_texts=None):
        super().__init__()
        self.model = model
        self.scale = scale
        self.class_texts = list(class_texts) if class_texts else []
        self._class_inputs = None

    def forward(self, sentence_features, labels):
        embeddings = [self.model(f)["sentence_embedding"] for f in sentence_features]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings, labels):
        """Columns of texts (e.g. anchor and positive) sharing one label per row."""
        k = len(embeddings)
        labels = labels.repeat(k) if labels.ndim == 1 else labels.repeat(k, 1)
        embeddings = list(embeddings)
        if self.class_texts:
            # as wide as the texts' (MatryoshkaLoss hands in embeddings cut to its dims)
            embeddings.append(self._encode_classes(embeddings[0].device)
                              [:, :embeddings[0].shape[1]])
            n = len(self.class_texts)
            own = torch.arange(n, device=labels.device)
            if labels.ndim == 2:
                own = torch.nn.functional.one_hot(own, labels.shape[1]).to(labels.dtype)
            labels = torch.cat([labels, own])
        z = torch.nn.functional.normalize(torch.cat(embeddings), dim=1)
        logits = self.scale * (z @ z.T)
        n = logits.shape[0]
        self_mask = torch.eye(n, dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        if labels.ndim == 2:  # multi-label rows: positives share at least one label
            positive = (labels.float() @ labels.float().T) > 0
        else:
            positive = labels[:, None] == labels[None, :]
        positive &= ~self_mask
        counts = positive.sum(dim=1)
        has = counts > 0
        if not has.any():  # no text of the batch has a partner: nothing to pull together
            return embeddings[0].sum() * 0.0
        summed = log_prob.masked_fill(~positive, 0.0).sum(dim=1)
        return -(summed[has] / counts[has]).mean()

    def _encode_classes(self, device):
        """The class texts' embeddings (with gradients); tokenised once, on first use."""
        if self._class_inputs is None:
            self._class_inputs = {
                k: v.to(device) if isinstance(v, torch.Tensor) else v
                for k, v in _st.model_inputs(self.model, self.class_texts).items()}
        return self.model(dict(self._class_inputs))["sentence_embedding"]

    @property
    def citation(self) -> str:
        return "Khosla et al., Supervised Contrastive Learning, NeurIPS 2020"


class PrototypeLoss(torch.nn.Module):
    """Texts with class labels, each classified against every class's prototype.

    A normalised softmax (cosine) classifier trained with the body, end to end: the logits of
    a text are its cosine similarities to the prototypes, scaled by `scale`, and the loss is
    their cross-entropy with its class. The prototypes are the classes' mean embeddings on
    the model as it is before the call trains (`prepare`), normalised, and stay fixed while
    it trains, so the body moves each text towards its class's centre and away from every
    other class's, all classes at every step (a batch of in-batch negatives holds only a few
    of 77 classes). This is the "differentiable head" SetFit trains with the body, with the
    head's weights set to the class means as in prototypical networks (Snell et al., 2017).
    Data format: one or more text columns (such as an anchor and a positive of its class)
    and an int class code per row; classes no text of the call holds are left out.
    """

    def __init__(self, model, scale: float = 20.0):
        super().__init__()
        self.model = model
        self.scale = scale
        self.prototypes = None  # (slots, dim): one row per code in `codes`
        self.codes = None  # the class code of each row, sorted
        self.present = None  # whether a row's class is in the call's rows (others: -inf)

    def prepare(self, embed, rows):
        """The prototypes: the mean normalised embedding (`embed(positions)`, no gradients)
        of each class's texts in `rows`. Codes 0..k-1 (a tuner's) get a row each, those of
        absent classes masked out; sparse codes (a code of 10**12) get a row per class
        present, not a table that large."""
        # each distinct (text, class) once: a text repeated under two labels counts for both
        pairs = np.unique(np.stack([np.concatenate(rows.columns),
                                    np.tile(np.asarray(rows.targets), len(rows.columns))],
                                   axis=1).astype(np.int64), axis=0)
        used, where = np.unique(pairs[:, 0], return_inverse=True)
        z = torch.nn.functional.normalize(embed(used).float(), dim=1)
        present = np.unique(pairs[:, 1])
        # (a tuner's codes are dense; a learner's may be ids: 10**12 is not a table that large)
        top = int(present[-1]) + 1 if present.size else 0
        codes = np.arange(top) if top <= max(4 * present.size, 4096) else present
        sums = torch.zeros(codes.size, z.shape[1], device=z.device)
        sums.index_add_(0, torch.as_tensor(np.searchsorted(codes, pairs[:, 1]), device=z.device),
                        z[torch.as_tensor(where.ravel(), device=z.device)])
        self.codes = torch.as_tensor(codes, device=z.device)
        self.present = torch.as_tensor(np.isin(codes, present), device=z.device)
        self.prototypes = torch.nn.functional.normalize(sums, dim=1)

    def forward(self, sentence_features, labels):
        embeddings = [self.model(f)["sentence_embedding"] for f in sentence_features]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings, labels):
        if self.prototypes is None:
            raise RuntimeError("PrototypeLoss.prepare must run before the loss is computed")
        z = torch.nn.functional.normalize(torch.cat(list(embeddings)), dim=1)
        prototypes = torch.nn.functional.normalize(self.prototypes[:, :z.shape[1]], dim=1)
        logits = self.scale * (z @ prototypes.to(z.dtype).T)
        if not bool(self.present.all()):
            logits = logits.masked_fill(~self.present, float("-inf"))
        labels = labels.to(self.codes.device)
        rows = torch.searchsorted(self.codes, labels).clamp_(max=self.codes.numel() - 1)
        if not (torch.equal(self.codes[rows], labels)
                and bool(self.present[rows].all())):  # a class `prepare` never saw
            raise ValueError("PrototypeLoss: a label without a prototype (prepare saw other "
                             "rows than the loss is computed on)")
        return torch.nn.functional.cross_entropy(logits, rows.repeat(len(embeddings)))

    @property
    def citation(self) -> str:
        return "Snell et al., Prototypical Networks for Few-shot Learning, NeurIPS 2017"


def nearest_mean_accuracy(embeddings: np.ndarray, targets: np.ndarray) -> float:
    """Leave-one-out accuracy of the nearest class mean (cosine) over `embeddings` (rows)
    with a class label each in `targets`: how well the classes' mean embeddings, the prototypes
    `PrototypeLoss` would anchor on, already tell the texts apart. Each text is left out of
    its own class's mean; texts alone in their class are not scored. NaN when none is."""
    z = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    codes, targets = np.unique(np.asarray(targets), return_inverse=True)
    sums = np.zeros((codes.size, z.shape[1]))
    np.add.at(sums, targets, z)
    counts = np.bincount(targets, minlength=codes.size)
    dots = z @ sums.T  # (texts, classes): each text against every class's sum
    scores = dots / np.maximum(np.linalg.norm(sums, axis=1), 1e-12)
    rows = np.arange(z.shape[0])
    own = dots[rows, targets] - 1.0  # its own class without itself: (sum - z) . z
    rest = np.sqrt(np.maximum(
        (sums[targets] ** 2).sum(axis=1) - 2.0 * dots[rows, targets] + 1.0, 0.0))
    scores[rows, targets] = np.where(rest > 1e-9, own / np.maximum(rest, 1e-12), -np.inf)
    scored = counts[targets] >= 2
    if not scored.any():
        return float("nan")
    return float((scores[scored].argmax(axis=1) == targets[scored]).mean())


def prototypes_fit_the_texts(model, texts, labels, random_state, max_texts=2048,
                             min_accuracy=0.7) -> bool:
    """Whether `PrototypeLoss` suits these labelled texts: the classes' mean embeddings on
    the untrained `model` already classify them (`nearest_mean_accuracy` of a random sample
    of at most `max_texts`, at least `min_accuracy`).

    The prototypes are fixed anchors, so they help where the pretrained geometry already fits
    the classes, as label names do (`names_fit_the_texts`). `SbertTuner(loss="auto")` asks
    this with more classes than a batch holds: yes trains `"prototype"`, no `"supcon"`. The
    0.7 was chosen on rows of the training splits (8 texts per class, seeds 0-4) of the three
    public sets with more than 16 classes: banking77 scored 0.74-0.81 and clinc150 0.88-0.91,
    where the prototype loss beat supcon (+1.3 and +2.6 points of a logistic regression,
    seeds 0-1); question types (trec_fine) 0.58-0.63, where it lost 6.3.
    """
    pick, embeddings = encode_sample(model, texts, max_texts, random_state)
    return bool(nearest_mean_accuracy(embeddings, np.asarray(labels)[pick]) >= min_accuracy)
