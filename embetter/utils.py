"""Utilities: a disk cache for embeddings, distance helpers, batching, and skops files."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterable, Iterator

import numpy as np
from sklearn.metrics import pairwise_distances

from embetter._cache import CachedEncoder, cached
from embetter._skops import (
    UntrustedAddressError,
    UntrustedTypesError,
    load_skops,
    save_skops,
    trusted_types,
)
from embetter._validation import check_int

__all__ = [
    "CachedEncoder", "cached", "calc_distances", "batched",
    "save_skops", "load_skops", "trusted_types", "UntrustedTypesError", "UntrustedAddressError",
]


def calc_distances(
    inputs,
    anchors,
    pipeline,
    anchor_pipeline=None,
    metric: str = "cosine",
    aggregate=np.max,
    n_jobs=None,
) -> np.ndarray:
    """Distance from each input to a set of anchors, aggregated per input.

    Arguments:
        inputs: what to score (anything `pipeline.transform` accepts).
        anchors: reference items, e.g. a few texts that describe what you look for.
        pipeline: turns inputs into vectors.
        anchor_pipeline: turns anchors into vectors (default: `pipeline`).
        metric: any metric of `sklearn.metrics.pairwise_distances`.
        aggregate: reduces the `(n_inputs, n_anchors)` distances along axis 1 (`np.max`,
            `np.min`, `np.mean`, ...).
        n_jobs: passed to `pairwise_distances`.

    Usage:

    ```python
    import numpy as np
    from embetter.text import SentenceEncoder
    from embetter.utils import calc_distances

    d = calc_distances(["a dog", "a tax form"], ["puppy", "kitten"], SentenceEncoder(),
                       aggregate=np.min)
    assert d[0] < d[1]
    ```
    """
    anchor_pipeline = pipeline if anchor_pipeline is None else anchor_pipeline
    for name, step in (("pipeline", pipeline), ("anchor_pipeline", anchor_pipeline)):
        if not callable(getattr(step, "transform", None)):
            raise TypeError(f"{name} must have a transform method (an encoder or a fitted "
                            f"pipeline), got {type(step).__name__}")
    if not callable(aggregate):
        raise TypeError("aggregate must be a function reducing along axis 1 (np.max, np.min, "
                        f"np.mean, ...), got {aggregate!r}")
    if isinstance(inputs, (str, bytes)) or isinstance(anchors, (str, bytes)):
        name = "inputs" if isinstance(inputs, (str, bytes)) else "anchors"
        raise TypeError(f"{name} must be a list of texts (or rows), got the single string "
                        f"{(inputs if name == 'inputs' else anchors)!r:.60}; wrap it in a list")
    if n_jobs is not None and (isinstance(n_jobs, bool)
                               or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0):
        raise ValueError(f"n_jobs must be None or a non-zero int (-1: every core), got "
                         f"{n_jobs!r}")
    X_inputs = pipeline.transform(inputs)
    X_anchors = anchor_pipeline.transform(anchors)
    if _n_rows(X_anchors) == 0:
        raise ValueError("anchors is empty: at least one anchor is needed to measure against")
    if _n_rows(X_inputs) == 0:
        return np.zeros(0, dtype=np.float64)
    # (a metric of its own, or nan_euclidean, decides what it takes)
    if not callable(metric) and metric != "nan_euclidean":
        _check_vectors(X_inputs, X_anchors)
    distances = pairwise_distances(X_inputs, X_anchors, metric=metric, n_jobs=n_jobs)
    return aggregate(distances, axis=1)


def _check_vectors(X, A) -> None:
    """The two sides' vectors (`pipeline`'s of the inputs, `anchor_pipeline`'s of the
    anchors): a 2-D table of finite numbers each, of one width (the distance's own errors
    name neither)."""
    import scipy.sparse

    widths = []
    for M, who in ((X, "pipeline"), (A, "anchor_pipeline")):
        if scipy.sparse.issparse(M):
            values, shape = M.data, M.shape
        else:
            values = np.asarray(M)
            try:  # (objects, pandas' nullable floats: as numbers, None as NaN)
                values = values.astype(np.float64) if values.dtype.kind in "OV" else values
            except (TypeError, ValueError) as e:
                raise ValueError(f"{who} gave values that are not numbers ({e}); distances "
                                 "need a 2-D array of numbers, one row per item") from None
            shape = values.shape
        if len(shape) != 2:
            raise ValueError(f"{who} must return a 2-D array (one row per item), got shape "
                             f"{shape}")
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            raise ValueError(f"{who} gave vectors holding NaN or inf: distances need finite "
                             "numbers")
        widths.append(shape[1])
    if widths[0] != widths[1]:
        raise ValueError(f"pipeline gives inputs {widths[0]} columns and anchor_pipeline gives "
                         f"anchors {widths[1]}: both must map into the same space")


def _n_rows(X) -> int:
    """Rows by shape (a sparse matrix, a TfidfVectorizer's, has no len()), else by len (an
    encoder that returns a list of vectors)."""
    return X.shape[0] if hasattr(X, "shape") else len(X)


def batched(iterable: Iterable, n: int = 64) -> Iterator[list]:
    """Yield lists of `n` items (the last one may be shorter).

    Arguments:
        iterable: the items.
        n: items per list (default 64), a positive int.

    Usage:

    ```python
    from embetter.utils import batched
    assert list(batched(range(5), 2)) == [[0, 1], [2, 3], [4]]
    ```
    """
    check_int(n, "n")  # here, not when the batches are first asked for
    try:
        iterator = iter(iterable)
    except TypeError:
        raise TypeError(f"iterable must be an iterable of items, got "
                        f"{type(iterable).__name__}") from None

    def batches():
        while batch := list(itertools.islice(iterator, n)):
            yield batch

    return batches()
