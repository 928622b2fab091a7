"""Choose the tuners' defaults on training data only (issue 11, point 2).

benchmarks/tuners.py scores on the test split; defaults must never be chosen there. This script
repeats its protocol (200 labelled rows, 8 per class for banking77 and clinc150, seeds 0-2, the
nine classification sets of ../shared/data) but scores on a
*dev* set drawn from each dataset's train.csv (the 2,000-row pool of benchmarks/tuners.py,
minus the labelled rows), and prints, per candidate setting, LR (LogisticRegressionCV) on the
tuned space minus LR on the raw space, and 5-NN on the tuned space.

    python benchmarks/tuner_defaults.py ff '{}' '{"early_stopping": true}'
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from tuners import DATASETS, DERIVED, SEEDS, knn_acc, load, load_pool, lr_acc, ours, table


def dev_split(name, seed):
    Xtr, ytr, _, _ = load(name, seed)
    Xpool, ypool, _, _ = load_pool(name)
    seen = {row.tobytes() for row in Xtr}
    keep = np.array([row.tobytes() not in seen for row in Xpool])
    return Xtr, ytr, Xpool[keep], ypool[keep]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["ff", "ct"])
    parser.add_argument("settings", nargs="+", help="JSON dicts of parameters")
    parser.add_argument("--datasets", nargs="*", default=DATASETS, choices=DATASETS + list(DERIVED))
    parser.add_argument("--seeds", nargs="*", type=int, default=SEEDS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = [json.loads(s) for s in args.settings]
    rows, gains = [], {i: [] for i in range(len(settings))}
    for name in args.datasets:
        raw_lr, raw_knn = [], []
        got = {i: ([], []) for i in range(len(settings))}
        for seed in args.seeds:
            Xtr, ytr, Xdev, ydev = dev_split(name, seed)
            raw_lr.append(lr_acc(Xtr, ytr, Xdev, ydev))
            raw_knn.append(knn_acc(Xtr, ytr, Xdev, ydev))
            for i, params in enumerate(settings):
                tuner = ours(args.kind, seed, **params).fit(Xtr, ytr)
                Ztr, Zdev = tuner.transform(Xtr), tuner.transform(Xdev)
                got[i][0].append(lr_acc(Ztr, ytr, Zdev, ydev))
                got[i][1].append(knn_acc(Ztr, ytr, Zdev, ydev))
        for i, params in enumerate(settings):
            lr, knn = np.mean(got[i][0]), np.mean(got[i][1])
            gains[i].append(lr - np.mean(raw_lr))
            rows.append([name, json.dumps(params), f"{np.mean(raw_lr):.3f}",
                         f"{np.mean(raw_knn):.3f}", f"{lr - np.mean(raw_lr):+.3f}", f"{knn:.3f}"])
            print("  " + " ".join(rows[-1]), flush=True)
    print(f"\n{args.kind}: dev accuracy (train.csv rows not labelled), mean of seeds {args.seeds};"
          f" load {os.getloadavg()[0]:.1f}")
    table(rows, ["dataset", "setting", "raw_lr", "raw_knn", "lr_gain", "knn"])
    for i, params in enumerate(settings):  # issue 23, point 5: never worse than raw LR - 0.5
        worst = min(gains[i])
        print(f"  {json.dumps(params)}: worst lr_gain {worst:+.3f} (target >= -0.005): "
              f"{worst >= -0.005}; mean {np.mean(gains[i]):+.3f}")


if __name__ == "__main__":
    main()
