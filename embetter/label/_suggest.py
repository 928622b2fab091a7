"""suggest(): which rows of a pool to label next, given a fitted classifier or pipeline."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from embetter._validation import as_positions, as_random_state
from embetter.label._coverage import auto_pick
from embetter.label._strategies import (
    entropy_uncertainty,
    kcenter_greedy,
    margin_uncertainty,
    top_k,
)

STRATEGIES = ("auto", "margin", "entropy", "kcenter", "random")


def check_strategy(strategy) -> str:
    if not isinstance(strategy, str):
        raise TypeError(
            f"strategy must be one of {list(STRATEGIES)}, got {type(strategy).__name__}"
        )
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    return strategy


def check_k(k) -> int:
    if not isinstance(k, numbers.Integral) or isinstance(k, bool):
        raise TypeError(f"k must be a positive int (how many rows to suggest), got {k!r}")
    if k < 1:
        raise ValueError(f"k must be a positive int (how many rows to suggest), got {k!r}")
    return int(k)


def check_model(model) -> None:
    """A classifier (or pipeline ending in one) with predict_proba, fitted."""
    last = model[-1] if isinstance(model, Pipeline) and len(model) else model
    if not hasattr(model, "predict_proba"):
        what = (f"a {type(model).__name__} ending in {type(last).__name__}" if last is not model
                else type(model).__name__)
        raise TypeError(
            f"model must be a classifier (or a pipeline ending in one) with predict_proba, got "
            f"{what}; e.g. LogisticRegression, SGDClassifier(loss='log_loss'), or "
            "SVC(probability=True)"
        )
    if not hasattr(last, "fit"):  # (predict_proba alone, a zero-shot rule: nothing to fit)
        return
    try:
        check_is_fitted(last)
    except NotFittedError:
        raise NotFittedError(
            f"model ({type(model).__name__}) is not fitted yet: fit it on the labels you have "
            "(LabellingLoop starts from none); a classifier that keeps no fitted attribute "
            "ending in '_' says it is fitted with __sklearn_is_fitted__()"
        ) from None


def pool_size(X) -> int:
    if isinstance(X, (str, bytes)):
        raise TypeError(f"X must be a pool of texts or rows, got a single {type(X).__name__}")
    shape = getattr(X, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else 0
    try:
        return len(X)
    except TypeError:
        raise TypeError(
            f"X must be a sized pool (list, array, Series, DataFrame), got {type(X).__name__}"
        ) from None


def space_and_proba(model, X, proba: bool = True):
    """The pool in the space the classifier sees (a pipeline's steps but the last, applied
    once) and the classifier's probabilities on it (`None` without `proba`). A fitted search
    (GridSearchCV, RandomizedSearchCV) over a pipeline predicts with its best pipeline: that
    pipeline's space is the one its classifier sees."""
    best = getattr(model, "best_estimator_", None)
    if isinstance(best, Pipeline):
        model = best
    if isinstance(model, Pipeline) and len(model.steps) > 1:
        Z = model[:-1].transform(X)
        return Z, model[-1].predict_proba(Z) if proba else None
    return X, model.predict_proba(X) if proba else None


def _float(dtype) -> type:
    """float32 rows stay float32 (embeddings are: a float64 copy of a large pool would
    double its memory); anything else becomes float64."""
    return np.float32 if dtype == np.float32 else np.float64


def as_space(Z, strategy: str) -> np.ndarray:
    """The pool's rows as a float matrix (diversity measures distances on it), dense float32
    rows as they are; a sparse one (TF-IDF) stays sparse: densified, its rows times its
    vocabulary would not fit. Scaled down where its distances would overflow."""
    if sp.issparse(Z):
        Z = sp.csr_matrix(Z, dtype=np.float64)
    else:
        try:
            Z = np.asarray(Z)
            Z = Z.astype(_float(Z.dtype), copy=False)
        except (TypeError, ValueError):
            raise TypeError(
                f"strategy={strategy!r} measures distances in the space the classifier sees, "
                "which must be numeric; pass a pipeline whose steps before the classifier "
                "embed the texts, or the embeddings themselves as X, or use strategy='margin' "
                "or 'entropy', which need only predict_proba"
            ) from None
        Z = Z.reshape(Z.shape[0], -1)
    values = Z.data if sp.issparse(Z) else Z
    # one pass each for the smallest and largest value: NaN or infinity shows in them (no
    # pool-sized mask unless there is one to find), and they give the pool's magnitude
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(
            f"X (the pool, in the space the classifier sees) contains NaN or infinity, first "
            f"at row {_first_bad_row(Z)}; impute or drop those rows before suggesting")
    return _measurable(Z, max(hi, -lo))


def _first_bad_row(Z) -> int:
    """The first row holding NaN or infinity."""
    if sp.issparse(Z):
        bad = np.flatnonzero(~np.isfinite(Z.data))
        return int(np.searchsorted(Z.indptr, bad[0], side="right") - 1)
    return int(np.argwhere(~np.isfinite(Z))[0][0])


def _measurable(Z, top: float):
    """`Z`, or a copy scaled down just enough where its squared distances would overflow its
    dtype (`top`, its largest magnitude, around 1e154 in float64, 1e17 in float32): every
    strategy compares distances with each other or with their median, so one scale for the
    whole pool changes no pick (scaled further, rows far from the origin but close together
    would shrink to spreads below the strategies' small tie-breaks)."""
    dtype = Z.dtype
    limit = float(np.sqrt(np.finfo(dtype).max / (8.0 * max(1, Z.shape[1]))))
    return Z * dtype.type(limit / top) if top > limit else Z


def checked_proba(proba, n: int) -> np.ndarray:
    """The classifier's probabilities of the pool: a finite row for each of its `n` rows
    (NaN would be ranked as if it were a doubt, and a short matrix picks past its end)."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape[0] != n:
        raise ValueError(f"model's predict_proba gave {proba.shape[0]} rows for a pool of {n}: "
                         "it must give one row per row of X")
    if not np.isfinite(proba).all():
        raise ValueError("model's predict_proba gave NaN or inf: the uncertainty of those rows "
                         "is unknown (check the classifier and the pool's embeddings)")
    return proba


def pick(strategy: str, proba, Z, k: int, candidates: np.ndarray, labelled: np.ndarray,
         rng) -> np.ndarray:
    """Dispatch to one strategy; every branch returns `k` positions among `candidates`."""
    if strategy == "random":
        return rng.choice(candidates, size=k, replace=False).astype(np.intp)
    if strategy == "margin":
        return top_k(margin_uncertainty(proba), candidates, k, rng)
    if strategy == "entropy":
        return top_k(entropy_uncertainty(proba), candidates, k, rng)
    Z = as_space(Z, strategy)
    if strategy == "kcenter":
        return kcenter_greedy(Z, candidates, labelled, k, rng)
    return auto_pick(proba, Z, candidates, k, labelled, rng)


def suggest(model, X, k: int = 10, strategy: str = "auto", random_state=None, *,
            labelled=None) -> np.ndarray:
    """The positions (into `X`) of the `k` rows to label next.

    Strategies: `"margin"` (smallest gap between the two likeliest classes), `"entropy"`
    (most spread-out prediction), `"kcenter"` (k-center greedy: farthest from everything
    labelled, in the space the classifier sees), `"random"` (the baseline) and `"auto"`, the
    default: while `labelled` names at least one and fewer than 3 rounds of `k` (without it,
    or empty, labels are taken not to be scarce), rows that cover the pool (ProbCover: each
    pick's neighbourhood holds the most rows no labelled or picked row's neighbourhood holds
    yet), taken in turn from the classes the classifier predicts, so the labels stay
    balanced over them; after that, uncertainty herding: each pick adds most to the coverage
    of the pool weighted by the classifier's doubt (margin uncertainty) of each row, so
    doubtful regions far from every label come first, and never ten near-copies of one
    doubt. Measured on nine public sets in docs/labelling.md.

    For a Pipeline, the steps before the classifier are applied to `X` once per call; to
    reuse the pool's embeddings across rounds, wrap the encoder with `embetter.utils.cached`,
    pass the embeddings as `X` with the classifier alone, or use `LabellingLoop`.

    Arguments:
        model: a fitted classifier with `predict_proba`, or a fitted pipeline ending in one,
            that accepts `X`.
        X: the pool: texts, rows or embeddings, whatever `model` takes.
        k: how many positions to return (at most the rows that may still be picked).
        strategy: `"auto"`, `"margin"`, `"entropy"`, `"kcenter"` or `"random"`.
        random_state: seed for the tie-breaks, the sample a large pool is measured on
            (`"auto"`), and random picks.
        labelled: positions in `X` already labelled: never suggested; `"kcenter"` keeps away
            from them and `"auto"` counts them for its cold-start rule (without them it
            assumes labels are not scarce).

    Usage:

    ```python
    from sklearn.linear_model import LogisticRegression
    from embetter.label import suggest

    X = [[0.0, 0.1], [0.2, 0.0], [5.0, 5.1], [5.2, 4.9], [2.5, 2.6], [2.4, 2.5]]
    clf = LogisticRegression().fit([[0, 0], [5, 5]], ["a", "b"])
    print(suggest(clf, X, k=2, strategy="margin", random_state=0))  # the two in between
    ```
    """
    strategy = check_strategy(strategy)
    k = check_k(k)
    check_model(model)
    n = pool_size(X)
    if n == 0:
        raise ValueError("X (the pool to suggest from) is empty")
    labelled = as_positions(labelled, n, "labelled")
    candidates = np.setdiff1d(np.arange(n, dtype=np.intp), labelled, assume_unique=True)
    if k > candidates.size:
        raise ValueError(
            f"k={k} is larger than the pool: X has {n} rows, {candidates.size} not labelled yet"
        )
    rng = as_random_state(random_state)
    if strategy == "random":
        return pick(strategy, None, None, k, candidates, labelled, rng)
    # kcenter measures the space alone; uncertainty needs one (rows, classes) matrix, and a
    # multi-output classifier gives one per output
    Z, proba = space_and_proba(model, X, proba=strategy != "kcenter")
    if proba is None:
        return pick(strategy, None, Z, k, candidates, labelled, rng)
    if isinstance(proba, list) or np.ndim(proba) != 2:
        got = f"{len(proba)} arrays" if isinstance(proba, list) else f"a {np.ndim(proba)}-D array"
        raise TypeError(
            f"model's predict_proba gives {got}, not one "
            "(rows, classes) matrix: a classifier of several outputs (MultiOutputClassifier) "
            "has no single uncertainty; suggest for one output's classifier "
            "(model.estimators_[i]) or strategy='kcenter' on the embeddings")
    return pick(strategy, checked_proba(proba, n), Z, k, candidates, labelled, rng)
