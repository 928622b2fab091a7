"""The disk cache in front of a fitted SbertTuner: the encoder's key is hashed once per state.

`cached(path, tuner)` keys every text by a fingerprint of the wrapped encoder. Hashing a fitted
SbertTuner (its whole model: ~87 MB for all-MiniLM-L6-v2) on every `transform` cost more than
serving 1,000 texts from disk; the fingerprint is now recomputed only when the tuner's state
moves (fit, partial_fit, set_params). Prints, side by side in one run on this machine:

- an uncached `transform` of 1,000 texts through the fitted tuner,
- the cached `transform` of the same 1,000 texts once they are on disk (best of 5),
- the hash the old code paid on every call (`joblib.hash(tuner)`), for comparison,
- that a `partial_fit` changes the key (the next call re-encodes).

    python benchmarks/cache_keys.py            # 1,000 texts of the bundled support inbox
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import joblib

    from embetter.datasets import load_support_inbox
    from embetter.finetune import SbertTuner
    from embetter.utils import cached

    texts, labels = load_support_inbox()
    texts, labels = list(texts), list(labels)
    pool = (texts * (args.texts // len(texts) + 1))[: args.texts]
    pool = [f"{t} #{i}" for i, t in enumerate(pool)]  # distinct texts, so none is a repeat
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, "
          f"{os.cpu_count()} CPUs")
    tuner = SbertTuner(epochs=1, random_state=0).fit(texts[:40], labels[:40])

    t = time.perf_counter()
    uncached = tuner.transform(pool)
    t_uncached = time.perf_counter() - t

    enc = cached(tempfile.mkdtemp(prefix="embetter-cache-bench-"), tuner)
    t = time.perf_counter()
    first = enc.transform(pool)
    t_fill = time.perf_counter() - t
    hits = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        again = enc.transform(pool)
        hits.append(time.perf_counter() - t)
    assert np.allclose(first, uncached, atol=1e-5) and np.array_equal(first, again)
    t = time.perf_counter()
    joblib.hash(tuner)
    t_hash = time.perf_counter() - t

    tuner.partial_fit(texts[40:60], labels[40:60])
    t = time.perf_counter()
    moved = enc.transform(pool[:50])
    t_moved = time.perf_counter() - t
    assert not np.allclose(moved, first[:50]), "the key did not change after partial_fit"

    rows = [
        ("uncached transform", t_uncached, 1.0),
        ("first cached transform (encodes, writes)", t_fill, t_uncached / t_fill),
        (f"cached transform, all hits (best of {args.repeats})", min(hits),
         t_uncached / min(hits)),
        ("old per-call key: joblib.hash(tuner) alone", t_hash, t_uncached / t_hash),
        ("after partial_fit: 50 texts re-encoded", t_moved, float("nan")),
    ]
    print(f"\n{args.texts} texts through a fitted SbertTuner (all-MiniLM-L6-v2)\n")
    print(f"| {'what':<48} | {'seconds':>8} | {'speed-up vs uncached':>20} |")
    print(f"|{'-' * 50}|{'-' * 10}|{'-' * 22}|")
    for name, seconds, ratio in rows:
        print(f"| {name:<48} | {seconds:8.3f} | {ratio:19.1f}x |")


if __name__ == "__main__":
    main()
