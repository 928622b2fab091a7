"""Query strategies on plain arrays: uncertainty scores and diversity picks.

Every function here takes what the public `suggest` already computed (class probabilities of
the pool, the pool's rows in the space the classifier sees, the positions that may be picked)
and returns positions into the pool. Ties are broken by a seeded random order, so a strategy
is repeatable with `random_state` and never favours the start of the pool.
"""

from __future__ import annotations

import numpy as np

#: auto: how many uncertain candidates per suggestion k-means chooses among (chosen by
#: simulation on held-out TRAIN rows of nine public sets, benchmarks/active.py --dev --grid:
#: beta 7/10/15 x cold 0/2/4; 10 and 4 had the best mean accuracy at +100 labels; its worst
#: early loss to random, -2.8 points on emotion at +10, was larger than cold 0's -1.6)
AUTO_BETA = 10
#: auto's cold start: while fewer than this many labels per class are known, the candidate
#: set widens in proportion (diversity first, while the classifier is too young to trust)
AUTO_COLD_PER_CLASS = 4


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


def _sq_dist_to(Z: np.ndarray, centres: np.ndarray, block: int = 512) -> np.ndarray:
    """Squared euclidean distance from each row of Z to its nearest row of `centres`."""
    best = np.full(Z.shape[0], np.inf)
    z2 = np.einsum("ij,ij->i", Z, Z)
    for start in range(0, centres.shape[0], block):
        c = centres[start:start + block]
        d = z2[:, None] - 2.0 * Z @ c.T + np.einsum("ij,ij->i", c, c)[None, :]
        best = np.minimum(best, d.min(axis=1))
    return np.maximum(best, 0.0)


def kcenter_greedy(Z: np.ndarray, candidates: np.ndarray, centres: np.ndarray, k: int,
                   rng) -> np.ndarray:
    """k-center greedy (Sener & Savarese, 2018): each pick is the candidate farthest from
    everything labelled or picked so far, so the picks cover the space.

    Without labelled rows the first pick is the candidate nearest the candidates' mean (a
    typical row, not an outlier); the rest follow the farthest-first rule.
    """
    Zc = Z[candidates].astype(np.float64, copy=False)
    picked: list[int] = []
    if centres.size:
        dist = _sq_dist_to(Zc, Z[centres].astype(np.float64, copy=False))
    else:
        first = int(np.argmin(_sq_dist_to(Zc, Zc.mean(axis=0, keepdims=True))))
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


def weighted_kmeans_pick(Z: np.ndarray, candidates: np.ndarray, weights: np.ndarray, k: int,
                         rng) -> np.ndarray:
    """Cluster the candidates into `k` groups (k-means weighted by `weights`) and take the
    candidate nearest each centre: spread over the space, drawn to the weighted regions."""
    if candidates.size <= k:
        return candidates
    from sklearn.cluster import KMeans

    Zc = Z[candidates].astype(np.float64, copy=False)
    w = weights[candidates] + 1e-6
    km = KMeans(n_clusters=k, n_init=1, random_state=rng.randint(2**31 - 1)).fit(
        Zc, sample_weight=w
    )
    d = _sq_dist_to(Zc, km.cluster_centers_, block=k)  # only for the fallback order below
    picked: list[int] = []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        if members.size:
            gap = ((Zc[members] - km.cluster_centers_[c]) ** 2).sum(axis=1)
            picked.append(int(members[np.argmin(gap)]))
    if len(picked) < k:  # an empty cluster: fill with the nearest-to-a-centre others
        rest = np.setdiff1d(np.argsort(d, kind="stable"), picked, assume_unique=True)
        picked.extend(rest[: k - len(picked)].tolist())
    return candidates[np.asarray(picked, dtype=np.intp)]


def auto_pick(proba: np.ndarray, Z: np.ndarray, candidates: np.ndarray, k: int,
              n_labelled: int | None, rng, *, beta: float = AUTO_BETA,
              cold_per_class: float = AUTO_COLD_PER_CLASS) -> np.ndarray:
    """Uncertainty-weighted diversity (after Zhdanov, 2019): the `beta * k` candidates with the
    smallest margin, clustered into `k` groups by k-means weighted by their uncertainty, the
    one nearest each centre picked. While labels are few (fewer than `cold_per_class` per
    class) the candidate set widens in proportion, towards plain weighted k-means over the
    whole pool: an untrained classifier's doubts are not worth much yet, coverage is."""
    uncertainty = margin_uncertainty(proba)
    m = beta * k
    need = cold_per_class * max(proba.shape[1], 2)
    if n_labelled is not None and n_labelled < need:
        m *= need / max(n_labelled, 1)
    m = int(min(candidates.size, max(k, round(m))))
    shortlist = top_k(uncertainty, candidates, m, rng)
    return weighted_kmeans_pick(Z, shortlist, uncertainty, k, rng)
