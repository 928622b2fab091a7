"""Query strategies on plain arrays: uncertainty scores and diversity picks.

Every function here takes what the public `suggest` already computed (class probabilities of
the pool, the pool's rows in the space the classifier sees, the positions that may be picked)
and returns positions into the pool. Ties are broken by a seeded random order, so a strategy
is repeatable with `random_state` and never favours the start of the pool.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils.extmath import row_norms


def margin_uncertainty(proba: np.ndarray) -> np.ndarray:
    """1 - (highest - second highest probability): 1 where the classifier is torn, 0 where sure."""
    if proba.shape[1] < 2:
        return np.zeros(proba.shape[0])
    top2 = np.partition(proba, proba.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - np.abs(top2[:, 1] - top2[:, 0])


def entropy_uncertainty(proba: np.ndarray) -> np.ndarray:
    """Shannon entropy of the predicted distribution (nats)."""
    p = np.clip(proba, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def top_k(scores: np.ndarray, candidates: np.ndarray, k: int, rng) -> np.ndarray:
    """The `k` candidates with the highest scores, ties in a seeded random order."""
    tiebreak = rng.random_sample(candidates.size)
    order = np.lexsort((tiebreak, -scores[candidates]))
    return candidates[order[:k]]


def _cross(A, B) -> np.ndarray:
    """`A @ B.T` as a dense array: rows of a sparse pool stay sparse in the product (densified,
    a few hundred rows times the vocabulary would take gigabytes), only the result is dense."""
    out = A @ B.T
    return out.toarray() if sp.issparse(out) else np.asarray(out)


def _centred(rows, *others):
    """Dense rows (copies the caller owns) shifted in place by the mean of the first block:
    no distance changes, but float32 keeps its precision on rows far from the origin (the
    expansion `z2 - 2zc + c2` below would cancel their common offset: features around 1,000
    spread by 0.05 lost every digit). Sparse rows are left as they are (float64)."""
    shift = _mean_row(rows)
    if shift is not None:
        for block in (rows, *others):
            block -= shift
    return (rows, *others)


def _mean_row(rows):
    """The mean of dense rows in their own dtype (None for sparse ones)."""
    return None if sp.issparse(rows) else rows.mean(axis=0, dtype=np.float64).astype(rows.dtype)


#: Distances computed at once (pool rows x centres): about 128 MB per block (float64).
_BLOCK_CELLS = 1 << 24


def _sq_dist_to(Z: np.ndarray, centres: np.ndarray, block: int = 512) -> np.ndarray:
    """Squared euclidean distance from each row of Z (dense or sparse) to its nearest row of
    `centres`, in blocks of at most `block` centres and `_BLOCK_CELLS` distances (a pool of
    100,000 rows: 167 centres at a time, arrays of about 130 MB instead of 400 MB)."""
    best = np.full(Z.shape[0], np.inf)
    z2 = row_norms(Z, squared=True)
    block = max(1, min(block, _BLOCK_CELLS // max(1, Z.shape[0])))
    for start in range(0, centres.shape[0], block):
        c = centres[start:start + block]
        d = z2[:, None] - 2.0 * _cross(Z, c) + row_norms(c, squared=True)[None, :]
        best = np.minimum(best, d.min(axis=1))
    return np.maximum(best, 0.0)


def kcenter_greedy(Z: np.ndarray, candidates: np.ndarray, centres: np.ndarray, k: int,
                   rng) -> np.ndarray:
    """k-center greedy (Sener & Savarese, 2018): each pick is the candidate farthest from
    everything labelled or picked so far, so the picks cover the space.

    Without labelled rows the first pick is the candidate nearest the candidates' mean (a
    typical row, not an outlier); the rest follow the farthest-first rule.
    """
    Zc, C = _centred(Z[candidates], Z[centres])
    picked: list[int] = []
    if centres.size:
        dist = _sq_dist_to(Zc, C)
    else:
        first = int(np.argmin(_sq_dist_to(Zc, np.asarray(Zc.mean(axis=0)).reshape(1, -1))))
        picked.append(first)
        dist = _sq_dist_to(Zc, Zc[first:first + 1])
        dist[first] = -1.0
    tiebreak = rng.random_sample(Zc.shape[0]) * 1e-12
    while len(picked) < k:
        i = int(np.argmax(dist + tiebreak))
        picked.append(i)
        dist = np.minimum(dist, _sq_dist_to(Zc, Zc[i:i + 1]))
        dist[picked] = -1.0
    return candidates[np.asarray(picked, dtype=np.intp)]
