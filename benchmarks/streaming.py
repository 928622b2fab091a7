"""Streaming grid (issue 11, point 3): partial_fit over a stream in batches of any size vs one fit.

For each tuner and visible set: one `fit` on a 2,000-row pool (all-MiniLM-L6-v2 embeddings,
the pool of benchmarks/tuners.py) and `partial_fit` over the same rows, shuffled, in batches
of 50, 100, 500 and 2,000, each batch seen once; 5-NN (cosine) accuracy on 1,000 held-out
test rows, mean over seeds. Target: every stream within 2 points of the fit (gap >= -0.02).

`--rows 600 --dev` is issue 23's protocol (point 6): the first 600 rows of the pool are fitted
and streamed, the other 1,400 (training rows, never labelled) are scored, so defaults can be
chosen on it; the pair sets (mrpc, stsb) have no labels to stream a tuner on and are not run.

    python benchmarks/streaming.py
    python benchmarks/streaming.py --rows 600 --dev --batches 50 100 500
    python benchmarks/streaming.py --tuners ct --datasets banking77 --seeds 0
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from params import parse_params
from tuners import DATASETS, DERIVED, knn_acc, load_pool, ours, table

BATCHES = [50, 100, 500, 2000]


def stream_fit(kind, seed, X, y, classes, batch, params):
    tuner = ours(kind, seed, **params)
    order = np.random.default_rng(seed).permutation(len(y))
    for start in range(0, len(y), batch):
        rows = order[start:start + batch]
        tuner.partial_fit(X[rows], y[rows], classes=classes)
    return tuner


def rows_of(name, rows=None, dev=False):
    """The rows to fit and stream, and the rows to score: the pool (all of it, or its first
    `rows`) and the test rows, or, with `dev`, the rest of the pool (training rows)."""
    Xtr, ytr, Xte, yte = load_pool(name)
    if dev:
        n = rows or len(ytr) // 2
        return Xtr[:n], ytr[:n], Xtr[n:], ytr[n:]
    return (Xtr, ytr, Xte, yte) if rows is None else (Xtr[:rows], ytr[:rows], Xte, yte)


def grid(kinds, datasets, seeds, batches, rows=None, dev=False, params=None):
    params = params or {}
    results = {}
    for name in datasets:
        Xtr, ytr, Xte, yte = rows_of(name, rows, dev)
        classes = np.unique(load_pool(name)[1])
        for kind in kinds:
            scores = {"fit": [], **{b: [] for b in batches}}
            seconds = {"fit": [], **{b: [] for b in batches}}
            for seed in seeds:
                start = time.perf_counter()
                full = ours(kind, seed, **params).fit(Xtr, ytr)
                seconds["fit"].append(time.perf_counter() - start)
                scores["fit"].append(knn_acc(full.transform(Xtr), ytr, full.transform(Xte), yte))
                for b in batches:
                    start = time.perf_counter()
                    tuner = stream_fit(kind, seed, Xtr, ytr, classes, b, params)
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
    parser.add_argument("--datasets", nargs="*", default=DATASETS, choices=DATASETS + list(DERIVED))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--batches", nargs="*", type=int, default=BATCHES)
    parser.add_argument("--rows", type=int, default=None,
                        help="fit and stream the first ROWS rows of the 2,000-row pool")
    parser.add_argument("--dev", action="store_true",
                        help="score on the pool's other rows (training rows), not the test split")
    parser.add_argument("--param", action="append", default=[],
                        help="tuner parameter for the fit and the streams, key=value")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: quiet on a shared machine)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    params = parse_params(args.param)
    results = grid(args.tuners, args.datasets, args.seeds, args.batches, args.rows, args.dev,
                   params)
    rows, worst = [], {}
    for (name, kind), (mean, secs) in results.items():
        gaps = [mean[b] - mean["fit"] for b in args.batches]
        worst[kind] = min(worst.get(kind, np.inf), min(gaps))
        rows.append([name, kind, f"{mean['fit']:.3f}"]
                    + [f"{mean[b]:.3f} ({g:+.3f})" for b, g in zip(args.batches, gaps)]
                    + [f"{secs['fit']:.1f}"] + [f"{secs[b]:.1f}" for b in args.batches])
    scored = "the pool's other rows (train split)" if args.dev else "1,000 test rows"
    n_rows = args.rows or (1000 if args.dev else 2000)
    print(f"\nparams: {params or 'defaults'}")
    print(f"\nStreaming grid: 5-NN on {scored}; one fit on {n_rows:,} rows vs "
          f"partial_fit over them in batches of {args.batches} (each seen once), mean of seeds "
          f"{args.seeds}; (gap to fit); then seconds (fit, each stream). load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} (timings noisy on a shared CPU)")
    table(rows, ["dataset", "tuner", "fit"] + [f"stream {b}" for b in args.batches]
          + ["fit_s"] + [f"s_{b}" for b in args.batches])
    for kind, gap in worst.items():
        print(f"  {kind}: worst gap {gap:+.3f} (target >= -0.020): {gap >= -0.02}")


if __name__ == "__main__":
    main()
