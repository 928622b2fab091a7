"""SbertTuner's `"auto"` choices that follow from the labels alone: the loss and the pairs
per text (the label texts and the prototype check need the model: the tuner makes those)."""

from __future__ import annotations

import numpy as np

from embetter.finetune._losses import CLASS_LOSSES

#: `n_pos="auto"`/`n_neg="auto"` without label texts: this many times the pairs per text, so
#: that a fit without names trains as many steps as one with them (each text's label-text
#: pairs become pairs with other texts). Chosen on rows of the training splits (never the test
#: split; `benchmarks/sbert.py --validation --param label_texts=None`, 8 texts per class,
#: seeds 0-4) of the six public sets with at most 20 classes: the mean gain of a logistic
#: regression over the frozen model rose from +2.2 to +3.2 points (subj +1.8, sms_spam
#: +2.1, emotion +3.0; sst2 -0.3, mr -0.4, ag_news -0.4).
AUTO_UNNAMED_FACTOR = 2

#: `learning_rate="auto"`: the peak step size, and the smaller one for the pair loss over three
#: classes or more. There each text has 4 + 4 pairs (8 + 8 without label texts), so a fit
#: takes 4 to 6 times the steps of a two-class one (32 steps for 4 classes of 8 texts, 48 for
#: 6) and a full step at every one of them bends the model further than the labels pay for.
#: Chosen on rows of the training splits (`benchmarks/sbert.py --validation --param
#: learning_rate=1e-4`, 8 texts per class, seeds 0-4; docs/sentence-models.md has the table).
AUTO_LEARNING_RATE = 2e-4
AUTO_MULTICLASS_PAIR_LEARNING_RATE = 1e-4

#: Losses trained on positive pairs only: the other texts of a batch, or the prototypes of
#: the other classes, are the negatives.
POSITIVES_ONLY = ("mnrl", *CLASS_LOSSES)


def resolve_loss(loss: str, multilabel: bool, n_classes: int, batch_size: int) -> str:
    """`loss="auto"`: pairs with explicit negatives (`"cosine"`) while there are no more
    classes than pairs in a batch; with more classes, a batch of random pairs rarely holds
    two of one class, and in-batch contrast over positive pairs (`"supcon"`) sees far more
    classes per step; the tuner then trains `"prototype"` instead where the untrained
    model's class means fit the texts (`prototypes_fit_the_texts`)."""
    if loss == "prototype" and multilabel:
        raise ValueError(
            "loss='prototype' needs one label per text, got a 2-D y (multi-label 0/1 "
            "rows); use loss='supcon' or 'auto' for multi-label data")
    if loss != "auto":
        return loss
    # (a batch of one pair holds nothing to contrast: pairs with explicit negatives then)
    return "supcon" if n_classes > int(batch_size) >= 2 else "cosine"


def resolve_pairs(n_pos, n_neg, loss: str, n_classes: int, named: bool) -> tuple[int, int]:
    """`n_pos`/`n_neg` with `"auto"` resolved: the number of classes, between 2 and 4, for
    pair losses (more classes, more of them met per text); 2 positives and no explicit
    negatives under `"mnrl"`/`"supcon"`/`"prototype"`, whose batches (or prototypes) hold
    the negatives. Without label texts (`named` false) twice as many: the pairs the label
    texts would have taken go to other texts, so a fit trains as many steps either way."""
    in_batch = loss in POSITIVES_ONLY
    auto = 2 if in_batch else int(np.clip(n_classes, 2, 4))
    auto *= 1 if named else AUTO_UNNAMED_FACTOR
    n_pos = auto if isinstance(n_pos, str) else int(n_pos)
    n_neg = 0 if in_batch else auto if isinstance(n_neg, str) else int(n_neg)
    return n_pos, n_neg


def resolve_learning_rate(learning_rate, loss: str, n_classes: int) -> float:
    """`learning_rate="auto"` resolved: `AUTO_LEARNING_RATE`, and
    `AUTO_MULTICLASS_PAIR_LEARNING_RATE` for a pair loss over three classes or more (label
    columns, for multi-label rows). `"supcon"` and `"prototype"` (chosen with more classes
    than a batch holds) train fewer pairs per text and keep the full step."""
    if not isinstance(learning_rate, str):
        return float(learning_rate)
    if loss not in POSITIVES_ONLY and n_classes >= 3:
        return AUTO_MULTICLASS_PAIR_LEARNING_RATE
    return AUTO_LEARNING_RATE
