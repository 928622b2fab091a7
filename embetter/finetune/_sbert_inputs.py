"""SbertLearner's inputs: the pairs' texts made distinct, and each loss's targets checked;
SbertTuner's stream labels checked against the earlier calls'.

Every check raises a ValueError that names the argument and what the loss needs, before any
model is loaded or trained.
"""

from __future__ import annotations

import numpy as np

from embetter._estimator_checks import check_label_columns, check_stream_classes
from embetter._labels import as_labels, as_targets, encode_known_labels
from embetter._validation import as_pair_scores, as_texts, check_pairs


def distinct(texts: list) -> tuple[list, np.ndarray]:
    """Each distinct text once (first-seen order), and every given text's position among
    them: a text given twice is one text (one encoding, and no false in-batch negative)."""
    where = {}
    positions = np.fromiter((where.setdefault(t, len(where)) for t in texts), np.int64,
                            len(texts))
    return list(where), positions


def check_negatives(negatives, n: int, loss: str):
    """`negatives` (loss='mnrl' only) as a list of one hard-negative text per pair."""
    if negatives is None:
        return None
    if loss != "mnrl":
        raise ValueError(
            f"negatives are only used by loss='mnrl' (anchor, positive, negative "
            f"triplets), got loss={loss!r}; drop negatives or use loss='mnrl'"
        )
    if isinstance(negatives, (list, tuple)):
        several = next((i for i, v in enumerate(negatives) if isinstance(v, (list, tuple))),
                       None)
        if several is not None:
            raise ValueError(
                f"negatives[{several}] holds several texts; negatives takes one text per pair: "
                "for several negatives of an anchor, repeat the anchor and its positive once "
                "per negative (as sentence-transformers' mine_hard_negatives does)")
    negatives = as_texts(negatives, "negatives")
    if len(negatives) != n:
        raise ValueError(f"negatives must hold one text per pair ({n}), got {len(negatives)}")
    return negatives


def check_targets(y, n: int, loss: str):
    """The `n` pairs' targets as this loss trains on them: float32 scores, int64 0/1
    labels or class codes (`"supcon"`, `"prototype"`), or `None` (`"mnrl"`)."""
    from embetter.finetune._losses import CLASS_LOSSES, LOSSES

    if loss in CLASS_LOSSES:
        return check_classes(y, n, loss)
    if y is not None:
        y = as_pair_scores(y, n, hint=(
            "; for (anchor, positive, negative) triplets pass the third column as "
            "fit(anchors, positives, negatives=...) with loss='mnrl'"))
    if loss == "mnrl":
        if y is not None and not np.all(y == 1):
            raise ValueError(
                "loss='mnrl' trains on positive pairs only (y all 1, or y=None); "
                f"y holds {int(np.sum(y != 1))} other values. Keep the pairs with y == 1, "
                "or use loss='contrastive' / 'cosine' for pairs labelled 0/1"
            )
        return None
    if y is None:
        raise ValueError(f"y is required for loss={loss!r}: {LOSSES[loss]}")
    if loss in ("contrastive", "online_contrastive"):
        if not np.isin(y, (0, 1)).all():
            raise ValueError(
                f"loss={loss!r} needs 0/1 labels, got values such as "
                f"{np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()}; use loss='cosine' or "
                "'cosent' for graded similarity scores"
            )
        return y.astype(np.int64)
    if loss == "cosine" and (y.min() < -1 or y.max() > 1):
        raise ValueError(
            f"loss='cosine' needs scores in [-1, 1] (it regresses the cosine similarity), "
            f"got values from {y.min():g} to {y.max():g}; rescale them (e.g. y / 5 for STS "
            "scores) or use loss='cosent', which only uses their order"
        )
    return y


def check_classes(y, n: int, loss: str):
    """loss='supcon' or 'prototype': the class of each positive pair (ints; for
    'supcon' also 0/1 rows, multi-label)."""
    from embetter.finetune._losses import LOSSES

    if y is None:
        raise ValueError(f"y is required for loss={loss!r}: " + LOSSES[loss])
    classes = np.asarray(y)
    rows = loss == "supcon"
    if classes.ndim not in ((1, 2) if rows else (1,)) or classes.shape[0] != n:
        raise ValueError(
            f"y for loss={loss!r} must hold one class per pair ({n}) as ints"
            + (", or a 0/1 row per pair" if rows else
               " (multi-label 0/1 rows need loss='supcon')")
            + f", got shape {classes.shape}")
    if classes.dtype.kind not in "iub" and not (
            classes.dtype.kind == "f" and np.all(np.isfinite(classes))
            and np.all(classes == np.round(classes))):
        raise ValueError(
            f"y for loss={loss!r} must be int class codes"
            + (" (or 0/1 rows)" if rows else "")
            + f", got values such as {classes.ravel()[:3].tolist()}")
    if classes.dtype.kind == "b":  # (False/True: codes 0/1; compared with int64's range
        classes = classes.astype(np.int64)  # below they overflowed)
    if classes.ndim == 2 and not np.isin(classes, (0, 1)).all():
        raise ValueError(f"multi-label y for loss={loss!r} must hold 0/1 rows, got values such "
                         f"as {np.unique(classes[~np.isin(classes, (0, 1))])[:5].tolist()}")
    if not rows and classes.size and classes.min() < 0:
        raise ValueError(f"y for loss={loss!r} must hold class codes >= 0, got "
                         f"{int(classes.min())}")
    # (as floats: int64's largest, 2**63 - 1, compares equal to 2**63 there)
    low, high = (-(2.0**63), 2.0**63) if classes.dtype.kind == "f" else (
        np.iinfo(np.int64).min, np.iinfo(np.int64).max + 1)
    if classes.size and (classes.max() >= high or classes.min() < low):
        raise ValueError(f"y for loss={loss!r} must hold class codes that fit in int64, got "
                         f"values from {classes.min().item()!r} to {classes.max().item()!r}")
    return classes.astype(np.int64)


def check_named_classes(classes, seen: np.ndarray, labels: np.ndarray) -> None:
    """`classes=` on a later call of a stream that kept none (begun by `fit`, or by a first
    `partial_fit` without it): they must hold every label the stream has been given."""
    if classes is None or labels.ndim != 1:
        return
    outside = np.setdiff1d(np.concatenate([seen, labels]), as_labels(classes, "classes"))
    if outside.size:
        raise ValueError(f"classes={np.unique(classes).tolist()[:10]} leaves out labels this "
                         f"stream has been given: {outside.tolist()[:10]}")


def check_first_classes(y, loss: str, class_texts) -> None:
    """A learner's first call with a class loss: y must hold two classes (or class texts to
    contrast with), else every text is its own class's and the loss is 0: nothing trains."""
    if (loss in ("supcon", "prototype") and class_texts is None and y.ndim == 1
            and np.unique(y).size < 2):
        raise ValueError(
            f"y holds a single class ({y[0]}): loss={loss!r} contrasts texts of different "
            "classes, so nothing would be learned; give pairs of two classes or more"
            + (" (or class_texts=)" if loss == "supcon" else ""))


def check_class_texts(class_texts, y, loss: str):
    """`class_texts` as a list of texts, one per class code of `y` (supcon only)."""
    if class_texts is None:
        return None
    if loss != "supcon":
        raise ValueError(f"class_texts are only used by loss='supcon', got loss={loss!r}")
    texts = as_texts(class_texts, "class_texts")
    needed = y.shape[1] if y.ndim == 2 else int(y.max()) + 1
    if (len(texts) != needed) if y.ndim == 2 else (len(texts) < needed):
        raise ValueError(
            f"class_texts must hold a text for every class code of y (codes 0..{needed - 1}"
            f"), got {len(texts)} texts")
    if any(not t.strip() for t in texts):
        raise ValueError("class_texts must be non-empty texts, got an empty one")
    if y.ndim == 1 and y.min() < 0:
        raise ValueError("with class_texts, y's class codes must be >= 0 (list positions)")
    return texts


def check_eval_set(eval_set):
    """`eval_set` as checked `(X1, X2, y)` pairs of texts and scores."""
    if eval_set is None:
        return None
    if not isinstance(eval_set, (tuple, list)) or len(eval_set) != 3:
        raise ValueError(
            "eval_set must be a tuple (X1, X2, y) of texts and scores, got "
            f"{type(eval_set).__name__}"
            + (f" of length {len(eval_set)}" if isinstance(eval_set, (tuple, list)) else "")
        )
    if eval_set[2] is None:  # scored by the Spearman correlation with these scores
        raise ValueError("eval_set's y must hold a similarity score per pair, got None")
    try:
        return check_pairs(*eval_set, texts=True)
    except (TypeError, ValueError) as e:  # (its messages name X1, X2 and y: the eval set's)
        raise type(e)(f"eval_set (X1, X2, y): {e}") from None


def read_batch(X, y, classes, *, streaming: bool, known, seen_y):
    """A `fit`'s or `partial_fit` call's texts and labels, checked against the stream so far
    (`seen_y`: its labels, None on its first call; `known`: the classes it declared, if any).
    Returns `(texts, labels, classes)`, the last the classes declared by a first call's
    `classes=` (or `known`)."""
    first = seen_y is None
    texts = as_texts(X)
    if not texts and streaming:  # (fit: "y is empty")
        raise ValueError("X is empty: a partial_fit batch needs at least one labelled text")
    labels, _ = as_targets(y, "y", n_samples=len(texts))
    if first and labels.ndim == 1 and classes is not None:
        known = np.unique(as_labels(classes, "classes"))
    elif first and labels.ndim == 2:
        check_label_columns(classes, labels.shape[1])
    elif not first and known is not None:
        check_stream_classes(classes, known)
    check_stream_labels(labels, seen_y, known)
    if not first and known is None:
        check_named_classes(classes, seen_y, labels)
    return texts, labels, known


def check_stream_labels(labels: np.ndarray, seen_y, classes) -> None:
    """A `partial_fit` batch's labels against the stream's: as many label columns as the
    earlier batches (2-D), no 1-D batch after 2-D ones, and, when the stream knows its
    `classes` (given on its first call), no label outside them. `seen_y` is `None` on the
    first call."""
    if labels.ndim == 2:
        if seen_y is not None and seen_y.ndim == 1:
            raise ValueError("y is multi-label (2-D) but earlier batches were 1-D")
        if seen_y is not None and labels.shape[1] != seen_y.shape[1]:
            raise ValueError(
                f"y has {labels.shape[1]} label columns but earlier batches had "
                f"{seen_y.shape[1]}"
            )
        return
    if classes is not None:
        classes[encode_known_labels(labels, classes)]  # the clear error
    if seen_y is not None and seen_y.ndim == 2:
        raise ValueError("y is 1-D but earlier batches were multi-label (2-D)")
    if seen_y is not None and seen_y.size and labels.size and (
            _numeric(seen_y) != _numeric(labels)):
        # joined with the earlier labels, 1 would become "1": a new class, silently
        kinds = ["numbers" if _numeric(a) else "strings" for a in (labels, seen_y)]
        raise ValueError(f"y holds {kinds[0]} but earlier batches held {kinds[1]} "
                         f"({labels[0]!r} against {seen_y[0]!r}); a stream keeps one kind "
                         "of label")


def _numeric(labels: np.ndarray) -> bool:
    return labels.dtype.kind in "biuf" or (
        labels.dtype.kind == "O" and isinstance(labels.flat[0], (int, float, np.number)))
