"""What benchmarks/static.py shares with static_ratio.py: the cached MiniLM, the unlabelled
fit texts, the load average and torch's threads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tuners import DATA  # noqa: E402

CACHE = os.environ.get("EMBETTER_BENCH_CACHE", "/tmp/embetter-bench-cache")


def minilm(backend=None):
    from embetter.text import SentenceEncoder
    from embetter.utils import cached

    if backend is None:
        return cached(CACHE, SentenceEncoder("all-MiniLM-L6-v2"))
    return cached(CACHE, SentenceEncoder("all-MiniLM-L6-v2", backend=backend))


def load_avg() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def fit_corpus(name: str, n: int) -> list[str]:
    """n unlabelled texts of the train split (all of them when it is smaller); no test row."""
    train = pd.read_csv(DATA / name / "train.csv")
    return train.sample(min(n, len(train)), random_state=7).text.tolist()


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()
