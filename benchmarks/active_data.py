"""The data of benchmarks/active.py: each set's pool, held-out train rows and test rows, encoded
with the bundled all-MiniLM-L6-v2 (cached on disk), and the seeded start of a simulation;
shared with active_rounds.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from splits import read_split  # beside this script

DATA = Path(os.environ.get(
    "EMBETTER_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
))
CACHE = Path(os.environ.get("EMBETTER_BENCH_CACHE", "/tmp/embetter-bench-cache"))
N_POOL, N_DEV, N_TEST = 2000, 1000, 1000


def text_encoder():
    from embetter.text import SentenceEncoder
    from embetter.utils import cached

    return cached(CACHE, SentenceEncoder("all-MiniLM-L6-v2"))


def split(name: str):
    """The pool (train rows), the held-out train rows for --dev, and the test rows (DataFrames).

    The pool and test rows are drawn as benchmarks/tuners.py draws them, so the two share the
    embedding cache; the dev rows are other train rows, never in the pool, drawn per label
    in the train rows' proportions (500 rows drawn at random held mr at 56 % positive against
    the pool's 51 %: a classifier leaning positive scored 7 points better there than on test).
    """
    train = read_split(DATA, name, "train")
    pool = train.sample(min(N_POOL, len(train)), random_state=100)
    rest = train.drop(pool.index)
    dev = _stratified(rest, min(N_DEV, len(rest)), seed=0)
    test = read_split(DATA, name, "test")
    return pool, dev, test.sample(min(N_TEST, len(test)), random_state=0)


def _stratified(rows, n: int, seed: int):
    """About `n` of `rows`, each label's count in proportion to its share of them."""
    take = (rows["label"].value_counts(normalize=True) * n).round().astype(int)
    return pd.concat([rows[rows["label"] == label].sample(count, random_state=seed)
                      for label, count in take.items() if count])


def load(name: str, dev: bool = False):
    """Encoded pool (X, y) and evaluation rows (X, y): test rows, or held-out train rows."""
    pool, held_out, test = split(name)
    evaluation = held_out if dev else test
    enc = text_encoder()
    return (enc.transform(pool["text"]), pool["label"].astype(str).to_numpy(),
            enc.transform(evaluation["text"]), evaluation["label"].astype(str).to_numpy())


def start_set(y, seed: int) -> np.ndarray:
    """2 pool rows per class (fewer for a class the pool holds once), seeded."""
    rng = np.random.RandomState(seed)
    return np.concatenate([
        rng.choice(np.flatnonzero(y == c), min(2, int((y == c).sum())), replace=False)
        for c in np.unique(y)
    ]).astype(np.intp)
