"""Benchmark of the tuners: kNN / logistic accuracy on raw vs tuned embeddings, speed, streaming.

Protocol (issue 3): sst2, ag_news, emotion, banking77 from ../shared/data, encoded with the
bundled all-MiniLM-L6-v2; 200 labelled training rows (8 per class for banking77), 1,000 test
rows, 3 seeds, default parameters. Encodings are cached on disk (EMBETTER_BENCH_CACHE, default
/tmp/embetter-bench-cache) so that re-runs only train and score.

    python benchmarks/tuners.py            # everything
    python benchmarks/tuners.py --only quality --datasets sst2 emotion
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(os.environ.get(
    "EMBETTER_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
))
CACHE = Path(os.environ.get("EMBETTER_BENCH_CACHE", "/tmp/embetter-bench-cache"))
DATASETS = ["sst2", "ag_news", "emotion", "banking77"]
SEEDS = [0, 1, 2]
N_TRAIN, N_TEST, PER_CLASS = 200, 1000, {"banking77": 8}


def _encoder():
    from embetter.text import SentenceEncoder
    from embetter.utils import cached

    return cached(CACHE, SentenceEncoder("all-MiniLM-L6-v2"))


def load(name: str, seed: int):
    """Encoded (X_train, y_train, X_test, y_test) for one dataset and seed."""
    train = pd.read_csv(DATA / name / "train.csv")
    test = pd.read_csv(DATA / name / "test.csv").sample(N_TEST, random_state=0)
    if name in PER_CLASS:
        train = train.groupby("label", group_keys=False).sample(PER_CLASS[name], random_state=seed)
        train = train.sample(frac=1.0, random_state=seed)
    else:
        train = train.sample(N_TRAIN, random_state=seed)
    enc = _encoder()
    return (enc.transform(train["text"]), train["label"].to_numpy(),
            enc.transform(test["text"]), test["label"].to_numpy())
