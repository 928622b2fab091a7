"""`auto`'s picks: cover the pool while labels are few, then uncertainty herding.

Both measure how well the rows picked so far (and the labelled ones) cover the pool:

- while fewer labels are known than `COLD_ROUNDS` rounds of `k`, ProbCover (Yehuda et al.,
  2022): a ball of radius delta around each row (delta: the median distance from a row to its
  `BALL_NEIGHBOURS`-th nearest one); each pick is the row whose ball holds the most rows no
  ball of a labelled or picked row holds yet (ties: the most typical row), among the rows
  the classifier predicts as a class the labelled and picked rows hold fewest of (by its
  predictions; its doubts, on a handful of labels, are worth little). Unbalanced, the first
  picks on a binary set of film reviews were 70 % one class and the classifier predicted it
  for 93 % of the test rows: 6 points behind random picks, where balanced picks were ahead;
- after that, uncertainty herding (Bae et al., 2024): a Gaussian kernel on the pool (its
  squared width: the median over rows of the mean squared distance to their
  `KERNEL_NEIGHBOURS` nearest ones); each pick adds most to the coverage of the pool weighted
  by the classifier's doubt (margin uncertainty) of each row, the coverage of a row being its
  largest kernel value to a labelled or picked row. Doubtful regions far from every label
  are asked about first, and never ten near-copies of one doubt.

Neither asks about a copy of a labelled or picked row (the same text twice) while another
row is left.

Chosen by simulation on held-out TRAIN rows of nine public sets (benchmarks/active.py --dev):
in the screening of candidates, +1.54 points in the half-the-labels comparison against +0.35
for the previous `auto` (TypiClust, then uncertainty-weighted k-means on the 10 k smallest
margins; benchmarks/active_previous.py), 20 seeds, and +1.80 against +0.41 on 10 seeds used
for nothing else; docs/labelling.md has the run of this code.

Pools of more than `COVERAGE_ROWS` rows are measured on a seeded sample of that many (the
coverage and the kernel's width); the coverage picks are taken among the sample, the herding
picks among the sample and the `10 * k` most doubtful rows of the whole pool: the distances
stay a few thousand rows square.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils.extmath import row_norms

from embetter.label._strategies import _cross, _mean_row, margin_uncertainty, top_k

#: while fewer labels are known than this many rounds of `k`, the picks cover the pool
#: (ProbCover), balanced over the classes the classifier predicts; its doubts are not asked
COLD_ROUNDS = 3
#: ProbCover's radius: the median distance from a row to its this-many-th nearest row
#: (the paper's rule, the largest radius with 95 % of the balls pure under k-means, gave
#: balls of 1-3 rows on sentence embeddings: -13 points on subj's first round, dev rows)
BALL_NEIGHBOURS = 10
#: the herding kernel's squared width: the median over rows of the mean squared distance to
#: this many nearest rows (half or twice the width moved the dev figure by 0.2 points)
KERNEL_NEIGHBOURS = 20
#: pools up to this many rows are measured whole; larger ones on a seeded sample
COVERAGE_ROWS = 2000
#: past the sample, the herding picks may also be among this many times `k` most doubtful rows
DOUBTFUL_PER_PICK = 10


class _Measured:
    """The rows coverage is measured on (`targets`, positions into the pool) and what the
    picks need of them: their squared distances to each other, each one's typicality (1 /
    mean squared distance to its nearest rows) and the statistics of those neighbourhoods."""

    def __init__(self, Z, targets: np.ndarray):
        self.Z, self.targets = Z, targets
        self.rows, self.shift = _float_rows(Z, targets, None)
        self.t2 = row_norms(self.rows, squared=True)
        d2 = self.sq_dist(self.rows, self.t2)
        near = max(1, min(KERNEL_NEIGHBOURS, targets.size - 1))
        ball = max(1, min(BALL_NEIGHBOURS, targets.size - 1))
        if targets.size > 1:  # (one partition gives both neighbourhoods; a row is not its own)
            np.fill_diagonal(d2, np.inf)
            nearest = np.partition(d2, sorted({ball - 1, near - 1}), axis=1)[:, :near]
            np.fill_diagonal(d2, 0.0)
        else:
            nearest = np.zeros((targets.size, near))
        mean_near = nearest.mean(axis=1)
        self.typicality = 1.0 / (mean_near + 1e-9)
        self.width = float(np.median(mean_near))
        self.radius = float(np.median(np.sqrt(nearest[:, ball - 1])))
        # rows this close are copies (the same text embedded twice: rounding apart at most)
        self.same = 1e-9 * float(np.median(self.t2))
        self.d2 = d2

    def sq_dist(self, other, o2=None) -> np.ndarray:
        """Squared distances from every target row to each row of `other` (centred alike)."""
        o2 = row_norms(other, squared=True) if o2 is None else o2
        return np.maximum(self.t2[:, None] - 2.0 * _cross(self.rows, other) + o2[None, :], 0.0)

    def places(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each pool position's column among the targets, and whether it is one of them."""
        column = np.minimum(np.searchsorted(self.targets, positions), self.targets.size - 1)
        return column, self.targets[column] == positions

    def to(self, positions: np.ndarray) -> np.ndarray:
        """Squared distances from the targets to the pool rows at `positions`."""
        column, among = self.places(positions)
        if positions.size and among.all():
            return self.d2[:, column]  # (all among the targets: already measured)
        return self.sq_dist(_float_rows(self.Z, positions, self.shift)[0])


def _float_rows(Z, positions: np.ndarray, shift):
    """The pool rows at `positions` as float64, dense ones shifted by `shift` (their own mean
    when None: distances do not change, float32 pools keep their precision)."""
    rows = Z[positions]
    if sp.issparse(rows):
        return sp.csr_matrix(rows, dtype=np.float64), None
    rows = np.asarray(rows, dtype=np.float64)
    shift = _mean_row(rows) if shift is None else shift
    return rows - shift, shift


def _targets(n: int, rng) -> np.ndarray:
    if n <= COVERAGE_ROWS:
        return np.arange(n, dtype=np.intp)
    return np.sort(rng.choice(n, COVERAGE_ROWS, replace=False)).astype(np.intp)


def coverage_pick(Z, candidates: np.ndarray, labelled: np.ndarray, k: int, rng,
                  predicted: np.ndarray | None = None) -> np.ndarray:
    """ProbCover: `k` rows whose balls hold the most rows no labelled or picked row's ball
    holds yet; ties to the most typical row. Picks among the measured rows; with `predicted`
    (a class code per pool row), each among the rows of a class the labelled and picked rows
    are predicted as least often."""
    measured = _Measured(Z, _targets(Z.shape[0], rng))
    choice = np.intersect1d(candidates, measured.targets, assume_unique=True)
    if choice.size < k:  # a sample holding too few unlabelled rows: as many others at random
        others = np.setdiff1d(candidates, choice, assume_unique=True)
        choice = np.union1d(choice, rng.choice(others, k - choice.size, replace=False))
    # (squared, with a hair of tolerance: rows exactly at the radius, as many are on binary
    # or rounded features, stay inside although the shift by the mean rounds them apart)
    inside = measured.radius ** 2 * (1.0 + 1e-9)
    to_choice = measured.to(choice)  # targets x choice
    balls, copies = to_choice <= inside, _Copies(measured, choice, to_choice)
    del to_choice
    covered = np.zeros(measured.targets.size, dtype=bool)
    if labelled.size:
        to_labelled = measured.to(labelled)
        covered = (to_labelled <= inside).any(axis=1)
        copies.of(to_labelled, labelled)
    typical = measured.typicality / measured.typicality.max()
    column, among = measured.places(choice)
    tiebreak = rng.random_sample(choice.size) * 1e-6
    tiebreak[among] += typical[column[among]] * 1e-3
    free = np.ones(choice.size, dtype=bool)
    counts = balls.astype(np.float32)  # (exact: fewer than 2**24 rows)
    balance = _Balance(predicted, choice, labelled)
    picked: list[int] = []
    for _ in range(k):
        gain = (~covered).astype(np.float32) @ counts + tiebreak
        open_ = copies.spare(free)
        gain[~(open_ & balance.allowed(open_))] = -np.inf
        i = int(np.argmax(gain))
        picked.append(i)
        free[i] = False
        covered |= balls[:, i]
        balance.add(i)
        copies.of_pick(i)
    return choice[np.asarray(picked, dtype=np.intp)]


class _Copies:
    """Which candidates are copies of a labelled or picked row (the same text twice): asked
    about only when nothing else is left. The candidates among the measured rows read their
    distances from the targets'; the others (doubtful rows past a sample) are measured."""

    def __init__(self, measured: _Measured, choice: np.ndarray, to_choice: np.ndarray):
        column, among = measured.places(choice)
        self.measured, self.choice, self.same = measured, choice, measured.same
        self.among, self.rows = among, column[among]
        self.near = (to_choice <= self.same)[self.rows]  # measured candidates x choice
        self.copy = np.zeros(choice.size, dtype=bool)
        self.others = None  # (the rest: their rows, centred as the targets, and their norms)
        if not among.all():
            rows = _float_rows(measured.Z, choice[~among], measured.shift)[0]
            self.others = (rows, row_norms(rows, squared=True))

    def of(self, to_rows: np.ndarray, positions: np.ndarray) -> None:
        """Mark the copies of the pool rows at `positions`, whose distances from the targets
        are `to_rows`."""
        if positions.size:
            self.copy[self.among] |= (to_rows[self.rows] <= self.same).any(axis=1)
            self._of_others(positions)

    def of_pick(self, i: int) -> None:
        self.copy[self.among] |= self.near[:, i]
        self._of_others(self.choice[i:i + 1])

    def _of_others(self, positions: np.ndarray) -> None:
        if self.others is None:
            return
        rows, norms = self.others
        for start in range(0, positions.size, 1024):  # (blocks: many labels, many others)
            block = positions[start:start + 1024]
            theirs = _float_rows(self.measured.Z, block, self.measured.shift)[0]
            d2 = norms[:, None] - 2.0 * _cross(rows, theirs) + row_norms(theirs, squared=True)
            self.copy[~self.among] |= (d2 <= self.same).any(axis=1)

    def spare(self, free: np.ndarray) -> np.ndarray:
        """The free candidates that are no copy; all the free ones when only copies are."""
        fresh = free & ~self.copy
        return fresh if fresh.any() else free


class _Balance:
    """Which candidates keep the labelled and picked rows balanced over the predicted classes:
    those predicted as a class they hold fewest of, among the classes a free candidate is
    predicted as. Every candidate when there are no predictions."""

    def __init__(self, predicted: np.ndarray | None, choice: np.ndarray, labelled: np.ndarray):
        self.classes = None if predicted is None else predicted[choice]
        if self.classes is not None:
            size = int(predicted.max()) + 1
            self.held = np.bincount(predicted[labelled], minlength=size).astype(np.float64)

    def allowed(self, free: np.ndarray) -> np.ndarray | bool:
        if self.classes is None:
            return True
        open_ = np.bincount(self.classes[free], minlength=self.held.size) > 0
        held = np.where(open_, self.held, np.inf)
        return (held == held.min())[self.classes]

    def add(self, i: int) -> None:
        if self.classes is not None:
            self.held[self.classes[i]] += 1


def herding_pick(proba: np.ndarray, Z, candidates: np.ndarray, labelled: np.ndarray, k: int,
                 rng) -> np.ndarray:
    """Uncertainty herding: each pick adds most to the doubt-weighted coverage of the
    measured rows (their largest kernel value to a labelled or picked row)."""
    measured = _Measured(Z, _targets(Z.shape[0], rng))
    doubt = margin_uncertainty(proba)
    choice = np.intersect1d(candidates, measured.targets, assume_unique=True)
    if measured.targets.size < Z.shape[0]:  # a sample: the most doubtful rows may be picked too
        doubtful = top_k(doubt, candidates, min(candidates.size, DOUBTFUL_PER_PICK * k), rng)
        choice = np.union1d(choice, doubtful)
    width = max(measured.width, 1e-12)
    kernel = measured.to(choice)  # targets x choice (a copy: turned into the kernel in place)
    copies = _Copies(measured, choice, kernel)
    kernel = np.exp(np.divide(kernel, -width, out=kernel), out=kernel)
    coverage = np.zeros(measured.targets.size)
    if labelled.size:
        to_labelled = measured.to(labelled)
        coverage = np.exp(-to_labelled / width).max(axis=1)
        copies.of(to_labelled, labelled)
    weights = doubt[measured.targets]
    tiebreak = rng.random_sample(choice.size) * 1e-12
    free = np.ones(choice.size, dtype=bool)
    above = np.empty_like(kernel)  # (one buffer for every pick's gains)
    picked: list[int] = []
    for _ in range(k):
        np.subtract(kernel, coverage[:, None], out=above)
        gain = weights @ np.maximum(above, 0.0, out=above) + tiebreak
        gain[~copies.spare(free)] = -np.inf
        i = int(np.argmax(gain))
        picked.append(i)
        free[i] = False
        coverage = np.maximum(coverage, kernel[:, i])
        copies.of_pick(i)
    return choice[np.asarray(picked, dtype=np.intp)]


def auto_pick(proba, Z, candidates: np.ndarray, k: int, labelled: np.ndarray | None,
              rng) -> np.ndarray:
    """Coverage while fewer labels are known than `COLD_ROUNDS` rounds of `k` (`labelled=None`
    or empty: labels are assumed not scarce), uncertainty herding after."""
    labelled = np.zeros(0, dtype=np.intp) if labelled is None else labelled
    if labelled.size and labelled.size < COLD_ROUNDS * k:
        return coverage_pick(Z, candidates, labelled, k, rng, predicted=proba.argmax(axis=1))
    return herding_pick(proba, Z, candidates, labelled, k, rng)
