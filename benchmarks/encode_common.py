"""What benchmarks/encode_speed.py and its tables' helpers (encode_auto.py, encode_wrapper.py)
share with the other encoding benchmarks: the model, the texts, timing and a plain table."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
MODEL = "all-MiniLM-L6-v2"


def load_texts(n: int, seed: int = 0) -> list[str]:
    """Half SST-2 (short), half AG News (longer) sentences, the same every run."""
    rng = np.random.default_rng(seed)
    sst = pd.read_csv(DATA / "sst2" / "train.csv").text
    ag = pd.read_csv(DATA / "ag_news" / "train.csv").text
    a = sst.iloc[rng.permutation(len(sst))[: n - n // 2]].tolist()
    b = ag.iloc[rng.permutation(len(ag))[: n // 2]].tolist()
    return [t for pair in zip(a, b) for t in pair] + a[len(b):]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def cosines(a, b):
    return np.sum(a * b, axis=1) / np.maximum(
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def table(header, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
