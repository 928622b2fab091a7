"""Streaming grid (issue 11, point 3): partial_fit over a stream in batches of any size vs one fit.

For each tuner and visible set: one `fit` on a 2,000-row pool (all-MiniLM-L6-v2 embeddings,
the pool of benchmarks/tuners.py) and `partial_fit` over the same rows, shuffled, in batches
of 50, 100, 500 and 2,000, each batch seen once; 5-NN (cosine) accuracy on 1,000 held-out
test rows, mean over seeds. Target: every stream within 2 points of the fit (gap >= -0.02).

    python benchmarks/streaming.py
    python benchmarks/streaming.py --tuners ct --datasets banking77 --seeds 0
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from tuners import DATASETS, knn_acc, load_pool, ours, table

BATCHES = [50, 100, 500, 2000]


def stream_fit(kind, seed, X, y, classes, batch):
    tuner = ours(kind, seed)
    order = np.random.default_rng(seed).permutation(len(y))
    for start in range(0, len(y), batch):
        rows = order[start:start + batch]
        tuner.partial_fit(X[rows], y[rows], classes=classes)
    return tuner


def grid(kinds, datasets, seeds, batches):
    results = {}
    for name in datasets:
        Xtr, ytr, Xte, yte = load_pool(name)
        classes = np.unique(ytr)
        for kind in kinds:
            scores = {"fit": [], **{b: [] for b in batches}}
            seconds = {"fit": [], **{b: [] for b in batches}}
            for seed in seeds:
                start = time.perf_counter()
                full = ours(kind, seed).fit(Xtr, ytr)
                seconds["fit"].append(time.perf_counter() - start)
                scores["fit"].append(knn_acc(full.transform(Xtr), ytr, full.transform(Xte), yte))
                for b in batches:
                    start = time.perf_counter()
                    tuner = stream_fit(kind, seed, Xtr, ytr, classes, b)
                    seconds[b].append(time.perf_counter() - start)
                    scores[b].append(knn_acc(tuner.transform(Xtr), ytr, tuner.transform(Xte),
                                             yte))
            mean = {k: float(np.mean(v)) for k, v in scores.items()}
            results[name, kind] = mean, {k: float(np.mean(v)) for k, v in seconds.items()}
            print(f"  {name} {kind}: " + " ".join(f"{k}={v:.3f}" for k, v in mean.items())
                  + f"  load {os.getloadavg()[0]:.1f}", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuners", nargs="*", default=["ff", "ct"], choices=["ff", "ct"])
    parser.add_argument("--datasets", nargs="*", default=DATASETS, choices=DATASETS)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--batches", nargs="*", type=int, default=BATCHES)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = grid(args.tuners, args.datasets, args.seeds, args.batches)
    rows, worst = [], {}
    for (name, kind), (mean, secs) in results.items():
        gaps = [mean[b] - mean["fit"] for b in args.batches]
        worst[kind] = min(worst.get(kind, np.inf), min(gaps))
        rows.append([name, kind, f"{mean['fit']:.3f}"]
                    + [f"{mean[b]:.3f} ({g:+.3f})" for b, g in zip(args.batches, gaps)]
                    + [f"{secs['fit']:.1f}"] + [f"{secs[b]:.1f}" for b in args.batches])
    print(f"\nStreaming grid: 5-NN on 1,000 test rows; one fit on a 2,000-row pool vs "
          f"partial_fit over it in batches of {args.batches} (each seen once), mean of seeds "
          f"{args.seeds}; (gap to fit); then seconds (fit, each stream). load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} (timings noisy on a shared CPU)")
    table(rows, ["dataset", "tuner", "fit"] + [f"stream {b}" for b in args.batches]
          + ["fit_s"] + [f"s_{b}" for b in args.batches])
    for kind, gap in worst.items():
        print(f"  {kind}: worst gap {gap:+.3f} (target >= -0.020): {gap >= -0.02}")


if __name__ == "__main__":
    main()
