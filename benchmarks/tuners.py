"""Benchmark of the tuners: kNN / logistic accuracy on raw vs tuned embeddings, speed, streaming.

Protocol (issue 3, widened by issue 23 to every classification set of ../shared/data): sst2,
ag_news, emotion, banking77, mr, subj, clinc150, trec_fine, sms_spam, encoded with the bundled
all-MiniLM-L6-v2; 200 labelled training rows (8 per class for banking77 and clinc150), 1,000 test
rows (all of them where a test split is smaller), 3 seeds, default parameters. Encodings are
cached on disk (EMBETTER_BENCH_CACHE, default /tmp/embetter-bench-cache) so that re-runs only
train and score.

    python benchmarks/tuners.py                      # quality, streaming and speed tables
    python benchmarks/tuners.py --only quality --datasets sst2 emotion
    python benchmarks/tuners.py --only quality --sbert   # with an SbertTuner column

The peer (PyPI embetter 0.9.1) is timed and scored in the same run when a Python with it
installed is found (PEER_PYTHON, default /tmp/peer-venv/bin/python); it runs in a subprocess,
so this script works without it. Timings on a shared CPU are noisy: each speed row is the
fastest of several runs, and the first fit of a process (torch's lazy imports) is not counted.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from splits import DERIVED, read_split  # beside this script

DATA = Path(os.environ.get(
    "EMBETTER_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
))
CACHE = Path(os.environ.get("EMBETTER_BENCH_CACHE", "/tmp/embetter-bench-cache"))
DATASETS = ["sst2", "ag_news", "emotion", "banking77", "mr", "subj", "clinc150", "trec_fine",
            "sms_spam"]
SEEDS = [0, 1, 2]
N_TRAIN, N_TEST, PER_CLASS = 200, 1000, {"banking77": 8, "clinc150": 8}


def _encoder():
    from embetter.text import SentenceEncoder
    from embetter.utils import cached

    return cached(CACHE, SentenceEncoder("all-MiniLM-L6-v2"))


def _test_rows(name: str):
    """N_TEST rows of the test split (all of them when it is smaller, as for trec_fine)."""
    test = read_split(DATA, name, "test")
    return test.sample(min(N_TEST, len(test)), random_state=0)


def load_texts(name: str, seed: int):
    """The labelled training rows and the test rows of one dataset and seed (DataFrames)."""
    train = read_split(DATA, name, "train")
    test = _test_rows(name)
    if name in PER_CLASS:
        train = train.groupby("label", group_keys=False).sample(PER_CLASS[name], random_state=seed)
        train = train.sample(frac=1.0, random_state=seed)
    else:
        train = train.sample(N_TRAIN, random_state=seed)
    return train, test


def load(name: str, seed: int):
    """Encoded (X_train, y_train, X_test, y_test) for one dataset and seed."""
    train, test = load_texts(name, seed)
    enc = _encoder()
    return (enc.transform(train["text"]), train["label"].to_numpy(),
            enc.transform(test["text"]), test["label"].to_numpy())


def load_pool(name: str, n: int = 2000, seed: int = 100):
    """A larger encoded training pool (for the streaming and speed rows) and the test set."""
    train = read_split(DATA, name, "train").sample(n, random_state=seed)
    test = _test_rows(name)
    enc = _encoder()
    return (enc.transform(train["text"]), train["label"].to_numpy(),
            enc.transform(test["text"]), test["label"].to_numpy())


# -- scoring -----------------------------------------------------------------------------------
def knn_acc(Xtr, ytr, Xte, yte) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(5, metric="cosine").fit(Xtr, ytr).score(Xte, yte)


def lr_acc(Xtr, ytr, Xte, yte) -> float:
    import warnings

    from sklearn.linear_model import LogisticRegressionCV

    with warnings.catch_warnings():  # sklearn's FutureWarnings about CV defaults, tiny folds
        warnings.simplefilter("ignore")
        model = LogisticRegressionCV(Cs=[0.1, 1, 10, 100], cv=3, max_iter=2000)
        return model.fit(Xtr, ytr).score(Xte, yte)


def ours(kind: str, seed: int, **params):
    from embetter.finetune import ContrastiveTuner, FeedForwardTuner

    cls = {"ff": FeedForwardTuner, "ct": ContrastiveTuner}[kind]
    return cls(random_state=seed, **params)


def timed_fit_transform(kind, seed, Xtr, ytr, Xte):
    tuner = ours(kind, seed)
    start = time.perf_counter()
    tuner.fit(Xtr, ytr)
    seconds = time.perf_counter() - start
    return tuner.transform(Xtr), tuner.transform(Xte), seconds


# -- the peer, in its own interpreter ------------------------------------------------------------
PEER_PYTHON = Path(os.environ.get("PEER_PYTHON", "/tmp/peer-venv/bin/python"))
PEER_WORKER = r"""
import sys, time, numpy as np, torch
from embetter.finetune import ContrastiveTuner, FeedForwardTuner
data = np.load(sys.argv[1], allow_pickle=False)
kind, threads = sys.argv[3], int(sys.argv[4])
if threads:
    torch.set_num_threads(threads)
# warm-up: the first optimizer of a process pays torch's lazy imports
FeedForwardTuner(n_epochs=1).fit(data["Xtr"][:64], data["ytr"][:64])
out = {}
for rep in range(int(sys.argv[5])):
    tuner = (FeedForwardTuner() if kind == "ff" else ContrastiveTuner())
    start = time.perf_counter()
    tuner.fit(data["Xtr"], data["ytr"])
    out[f"seconds{rep}"] = time.perf_counter() - start
out["Ztr"] = tuner.transform(data["Xtr"])
out["Zte"] = tuner.transform(data["Xte"])
np.savez(sys.argv[2], **out)
"""


def peer_available() -> bool:
    return PEER_PYTHON.exists()


def peer_fit(kind, Xtr, ytr, Xte, threads=0, repeats=1, timeout=None):
    """Fit the peer's tuner in a subprocess: (Ztr, Zte, [seconds per repeat]) or None."""
    import subprocess
    import tempfile

    if not peer_available():
        return None
    _, ycodes = np.unique(ytr, return_inverse=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, Xtr=Xtr, ytr=ycodes.astype(np.int64), Xte=Xte)
        try:
            done = subprocess.run(
                [str(PEER_PYTHON), "-c", PEER_WORKER, str(src), str(dst), kind, str(threads),
                 str(repeats)], capture_output=True, text=True, cwd=tmp, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            print(f"  (peer {kind} with threads={threads or 'default'}: over {timeout} s, stopped)")
            return None
        if done.returncode != 0:
            print(f"  (peer {kind} failed: {done.stderr.strip().splitlines()[-1:]})")
            return None
        out = np.load(dst)
        return out["Ztr"], out["Zte"], [float(out[f"seconds{r}"]) for r in range(repeats)]


# -- tables ---------------------------------------------------------------------------------------
def table(rows, columns):
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"

    print(line(columns))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def sbert_scores(name, seed):
    """5-NN and LR-CV on the space of an SbertTuner (defaults) fitted on the same texts."""
    from embetter.finetune import SbertTuner

    train, test = load_texts(name, seed)
    ytr, yte = train["label"].to_numpy(), test["label"].to_numpy()
    start = time.perf_counter()
    tuner = SbertTuner(random_state=seed).fit(train["text"].tolist(), ytr)
    seconds = time.perf_counter() - start
    Ztr, Zte = tuner.transform(train["text"].tolist()), tuner.transform(test["text"].tolist())
    return knn_acc(Ztr, ytr, Zte, yte), lr_acc(Ztr, ytr, Zte, yte), seconds


def quality(datasets, seeds, with_peer, with_sbert=False):
    cols = ["raw_lr", "raw_knn", "ff_knn", "ff_lr", "ff_s", "ct_knn", "ct_lr", "ct_s"]
    if with_sbert:
        cols += ["sbert_knn", "sbert_lr", "sbert_s"]
    if with_peer:
        cols += ["peer_ff_knn", "peer_ct_knn"]
    results = {}
    warm = load(datasets[0], seeds[0])
    ours("ff", 0, n_epochs=1).fit(warm[0][:64], warm[1][:64])  # torch's lazy imports, not timed
    for name in datasets:
        per_seed = []
        for seed in seeds:
            Xtr, ytr, Xte, yte = load(name, seed)
            r = {"raw_lr": lr_acc(Xtr, ytr, Xte, yte), "raw_knn": knn_acc(Xtr, ytr, Xte, yte)}
            for kind in ("ff", "ct"):
                Ztr, Zte, seconds = timed_fit_transform(kind, seed, Xtr, ytr, Xte)
                r[f"{kind}_knn"] = knn_acc(Ztr, ytr, Zte, yte)
                r[f"{kind}_lr"] = lr_acc(Ztr, ytr, Zte, yte)
                r[f"{kind}_s"] = seconds
            if with_sbert:
                r["sbert_knn"], r["sbert_lr"], r["sbert_s"] = sbert_scores(name, seed)
            if with_peer:
                for kind in ("ff", "ct"):
                    # one thread: the same results, without the peer's thread contention
                    got = peer_fit(kind, Xtr, ytr, Xte, threads=1)
                    r[f"peer_{kind}_knn"] = np.nan if got is None else knn_acc(got[0], ytr,
                                                                               got[1], yte)
            per_seed.append(r)
            print(f"  {name} seed {seed}: " + ", ".join(f"{k}={v:.3f}" for k, v in r.items()),
                  flush=True)
        results[name] = {c: float(np.mean([r[c] for r in per_seed])) for c in cols}
    mean = {c: float(np.mean([results[n][c] for n in results])) for c in cols}
    rows = [[n] + [f"{results[n][c]:.3f}" for c in cols] for n in results]
    rows.append(["mean"] + [f"{mean[c]:.3f}" for c in cols])
    print(f"\nQuality: accuracy on {N_TEST} test rows, mean of seeds {list(seeds)}; "
          "_knn = 5-NN (cosine), _lr = LogisticRegressionCV(Cs=[0.1, 1, 10, 100], cv=3), "
          "_s = fit seconds")
    table(rows, ["dataset"] + cols)
    print("\nTargets (issue 11):")
    for kind in ("ff", "ct"):
        lr_ok = all(results[n][f"{kind}_lr"] >= results[n]["raw_lr"] - 0.005 for n in results)
        print(f"  {kind}: LR on tuned >= raw LR - 0.5 pt on every set: {lr_ok}")
    if with_sbert:
        gain = mean["sbert_lr"] - mean["raw_lr"]
        print(f"  sbert: mean LR on tuned - mean raw LR-CV = {100 * gain:+.1f} pts (target >= +2):"
              f" {gain >= 0.02}")
    best = np.mean([max(results[n]["ff_knn"], results[n]["ct_knn"]) for n in results])
    print(f"  mean best tuned 5-NN {best:.3f} >= mean raw LR-CV {mean['raw_lr']:.3f}: "
          f"{best >= mean['raw_lr']}; load average {os.getloadavg()[0]:.1f}")
    return results


def streaming(datasets, seeds, n_batches=10):
    """One fit on a 2,000-row pool vs partial_fit on 10 batches of it, each seen once."""
    rows = []
    for name in datasets:
        Xtr, ytr, Xte, yte = load_pool(name)
        classes = np.unique(ytr)
        row = [name]
        for kind in ("ff", "ct"):
            fits, streams = [], []
            for seed in seeds:
                full = ours(kind, seed).fit(Xtr, ytr)
                stream = ours(kind, seed)
                order = np.random.default_rng(seed).permutation(len(ytr))
                for batch in np.array_split(order, n_batches):
                    stream.partial_fit(Xtr[batch], ytr[batch], classes=classes)
                fits.append(knn_acc(full.transform(Xtr), ytr, full.transform(Xte), yte))
                streams.append(knn_acc(stream.transform(Xtr), ytr, stream.transform(Xte), yte))
            a, b = np.mean(fits), np.mean(streams)
            row += [f"{a:.3f}", f"{b:.3f}", f"{b - a:+.3f}"]
        rows.append(row)
        print(f"  {name}: " + " ".join(row[1:]), flush=True)
    print(f"\nStreaming: 5-NN on {N_TEST} test rows after one fit on a 2,000-row pool vs "
          f"partial_fit over {n_batches} batches of it (shuffled), each seen once; mean of seeds "
          f"{list(seeds)} (target: gap >= -0.02)")
    table(rows, ["dataset", "ff_fit", "ff_stream", "ff_gap", "ct_fit", "ct_stream", "ct_gap"])


def speed(with_peer, repeats=3):
    """Fit seconds on 2,000 x 384 float32 with 4 classes (ag_news, encoded), and pair speed."""
    from embetter.finetune import generate_pairs, pairs_from_records

    Xtr, ytr, Xte, _ = load_pool("ag_news")
    assert Xtr.shape == (2000, 384) and Xtr.dtype == np.float32
    ours("ff", 0, n_epochs=1).fit(Xtr[:64], ytr[:64])  # warm-up: torch's lazy imports
    rows = []
    for kind, name, share in (("ff", "FeedForwardTuner().fit", 10), ("ct", "ContrastiveTuner().fit",
                                                                       3)):
        mine = []
        for rep in range(repeats):
            start = time.perf_counter()
            ours(kind, rep).fit(Xtr, ytr)
            mine.append(time.perf_counter() - start)
        row = [name, f"{min(mine):.2f}", f"{np.median(mine):.2f}"]
        if with_peer:
            # torch's default threads can be many times slower on a busy machine: one run,
            # stopped after 10 minutes
            got = peer_fit(kind, Xtr, ytr, Xte, repeats=1, timeout=600)
            one = peer_fit(kind, Xtr, ytr, Xte, threads=1, repeats=1 if kind == "ff" else repeats)
            peer = [min(g[2]) for g in (got, one) if g is not None]
            # compare against the peer at its fastest thread setting
            best = min(peer) if peer else np.nan
            row += [f"{min(got[2]):.2f}" if got else "-", f"{min(one[2]):.2f}" if one else "-",
                    f"{min(mine) / best:.3f}" if peer else "-", f"<= {1 / share:.3f}"]
        rows.append(row)
        print("  " + " ".join(row), flush=True)

    y = np.random.default_rng(0).integers(0, 50, size=100_000)
    generate_pairs(y[:100], random_state=0)
    pair_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate_pairs(y, n_neg=3, random_state=0)
        pair_s.append(time.perf_counter() - start)
    rows.append(["generate_pairs(100k labels)", f"{min(pair_s):.3f}", f"{np.median(pair_s):.3f}"]
                + (["-", "-", "-", "< 0.5 s"] if with_peer else []))
    flags = np.random.default_rng(1).integers(0, 3, size=(100_000, 2))
    records = [{"text": f"t{i}", "cats": {k: int(v) for k, v in zip("ab", r) if v < 2}}
               for i, r in enumerate(flags)]
    rec_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        pairs_from_records(records, n_neg=3, random_state=0)
        rec_s.append(time.perf_counter() - start)
    rows.append(["pairs_from_records(100k records)", f"{min(rec_s):.3f}",
                 f"{np.median(rec_s):.3f}"] + (["-", "-", "-", "< 0.5 s"] if with_peer else []))
    print(f"\nSpeed: seconds on 2,000 x 384 float32, 4 classes (ag_news); min and median of "
          f"{repeats} runs; peer with torch's default threads and with 1 thread; ratio = ours "
          "(min) / peer (fastest)")
    cols = ["what", "ours_min", "ours_median"]
    if with_peer:
        cols += ["peer_default", "peer_1thread", "ratio", "target"]
    table(rows, cols)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=["quality", "streaming", "speed"],
                        choices=["quality", "streaming", "speed"])
    parser.add_argument("--datasets", nargs="*", default=DATASETS, choices=DATASETS + list(DERIVED))
    parser.add_argument("--seeds", nargs="*", type=int, default=SEEDS)
    parser.add_argument("--no-peer", action="store_true", help="skip the peer even if found")
    parser.add_argument("--sbert", action="store_true",
                        help="add SbertTuner (fine-tunes the sentence model: minutes per fit)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with_peer = peer_available() and not args.no_peer
    print(f"peer: {'found at ' + str(PEER_PYTHON) if with_peer else 'not used'}")
    if "quality" in args.only:
        quality(args.datasets, args.seeds, with_peer, args.sbert)
    if "streaming" in args.only:
        streaming(args.datasets, args.seeds)
    if "speed" in args.only:
        speed(with_peer)


if __name__ == "__main__":
    main()
