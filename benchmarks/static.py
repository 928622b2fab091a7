"""TextEncoder (static model2vec) against the sentence model it comes from, side by side.

Four tables:

1. `--only select`: how the distillation settings were chosen, on TRAIN splits only: for each
   (pca_dims, sif_coefficient), LogisticRegressionCV accuracy with 200 labels (8 per class for
   banking77) drawn from the train split, scored on 1,000 *other train rows*, 3 seeds, as a
   percentage of MiniLM's on the same rows. The test splits play no part in it.
2. `--only quality`: benchmarks/tuners.py's protocol (200 labels, 1,000 test rows, 3 seeds) on
   the sets named by --datasets (default: all nine): MiniLM, TextEncoder() and, with
   `--train-texts N`, TextEncoder(train_on_fit=True) fitted on N unlabelled train texts of that set.
3. `--only ratio`: issue 24's check on all nine sets of benchmarks/tuners.py, its exact
   200-label rows (8 per class for banking77 and clinc150; `load_texts`, seeds 0-2) and MiniLM
   embedding cache: LogisticRegressionCV accuracy of MiniLM and of TextEncoder() and the ratio,
   on DEV rows (benchmarks/tuner_defaults.py's: the 2,000-row train pool minus the labelled
   rows, where defaults are chosen) and on the test rows (reported, never chosen on). With
   `--candidates pca:sif,...` each candidate distillation is scored on dev rows only. The LR
   runs on one thread (threadpool_limits(1)). With `--train-texts N`, also
   TextEncoder(train_on_fit=True, random_state=0) fitted on N unlabelled train texts of each
   set (all of them where the split is smaller; never a test row; the labelled and dev rows
   may be among them, as a user's own texts would be). To save CPU, the teacher's (MiniLM's)
   embeddings of those texts come from the benchmark's disk cache instead of a fresh
   SentenceEncoder: the encoder is a subclass that overrides only `_teacher_embeddings`, so
   the training (`_distill.train_to_mimic`) is the encoder's own. `--only fit-time` times the
   real thing. `--teacher-backend onnx` trains on another SentenceEncoder backend's embeddings
   (e.g. int8) to see what a faster teacher costs; `--recipes` scores training settings.
4. `--only speed`: texts/s on the 1,000 texts of benchmarks/encode_speed.py (half SST-2, half
   AG News), best of several interleaved rounds, load average beside it.
5. `--only fit-time`: one full `TextEncoder(train_on_fit=True, random_state=0).fit(texts)` on
   `--train-texts` train texts of the `--datasets` (taken in order: every train text of the
   first set, then the next, ...), nothing cached: seconds in all, of which the teacher's
   encoding and the training, and the load average.

    python benchmarks/static.py
    python benchmarks/static.py --only select --pca 128,256,None --sif 1e-4,1e-3,1e-2
    OMP_NUM_THREADS=1 python benchmarks/static.py --only ratio --candidates 256:None,None:1e-4
    OMP_NUM_THREADS=1 python benchmarks/static.py --only ratio --train-texts 10000
    python benchmarks/static.py --only fit-time --train-texts 10000 --datasets ag_news subj
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from encode_common import table  # noqa: E402
from static_common import fit_corpus, load_avg, minilm, torch_threads  # noqa: E402
from tuners import DATA, DATASETS, N_TEST, PER_CLASS, lr_acc  # noqa: E402


def labelled(train: pd.DataFrame, name: str, seed: int) -> pd.DataFrame:
    if name in PER_CLASS:
        return train.groupby("label", group_keys=False).sample(PER_CLASS[name], random_state=seed)
    return train.sample(200, random_state=seed)


def mean_lr(encode, trains, test) -> float:
    Xte = encode(test.text.tolist())
    return 100 * float(np.mean([
        lr_acc(encode(tr.text.tolist()), tr.label.to_numpy(), Xte, test.label.to_numpy())
        for tr in trains
    ]))


# -- 1. choosing the settings on train splits ------------------------------------------------
def select(args) -> None:
    import model2vec.distill.distillation as distillation
    from transformers import AutoModel, AutoTokenizer

    from embetter.text._models import bundled_model_path

    splits = {}
    for name in args.datasets:
        train = pd.read_csv(DATA / name / "train.csv")
        val = train.sample(1000, random_state=0)
        rest = train.drop(val.index)
        splits[name] = ([labelled(rest, name, s) for s in range(3)], val)
    enc = minilm()
    ref = {n: mean_lr(enc.transform, *splits[n]) for n in args.datasets}
    # The transformer pass over the vocabulary is the same for every setting: run it once.
    source = str(bundled_model_path())
    model, tok = AutoModel.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    original = distillation.create_embeddings
    memo = {}

    def once(**kw):
        if "raw" not in memo:
            memo["raw"] = original(**kw)
        return memo["raw"].copy()

    distillation.create_embeddings = once
    rows = []
    parse = lambda v, f: None if v == "None" else f(v)  # noqa: E731
    for pca, sif in itertools.product(args.pca.split(","), args.sif.split(",")):
        static = distillation.distill_from_model(
            model, tok, pca_dims=parse(pca, int), sif_coefficient=parse(sif, float),
            quantize_to="float32", device="cpu")
        got = {n: mean_lr(static.encode, *splits[n]) for n in args.datasets}
        ratio = {n: 100 * got[n] / ref[n] for n in args.datasets}
        rows.append([pca, sif, *(f"{got[n]:.1f} ({ratio[n]:.0f}%)" for n in args.datasets),
                     f"{min(ratio.values()):.1f}", f"{np.mean(list(ratio.values())):.1f}"])
        print(f"[{time.strftime('%H:%M:%S')}] pca={pca} sif={sif} done", file=sys.stderr)
    print("\n## Choosing the distillation settings on train splits (200 labels from train, "
          "scored on 1,000 other train rows, 3 seeds; % of MiniLM on the same rows)\n")
    print("MiniLM: " + ", ".join(f"{n} {ref[n]:.1f}" for n in args.datasets) + "\n")
    print(table(["pca_dims", "sif", *args.datasets, "min %", "mean %"], rows))
    print(f"\nload average {load_avg()}")


# -- 2. quality on the test protocol ---------------------------------------------------------
def quality(args) -> None:
    from embetter.text import TextEncoder

    enc, static = minilm(), TextEncoder()
    rows = []
    for name in args.datasets:
        train = pd.read_csv(DATA / name / "train.csv")
        test = pd.read_csv(DATA / name / "test.csv")
        test = test.sample(min(N_TEST, len(test)), random_state=0)  # trec_fine has 500
        trains = [labelled(train, name, s) for s in (0, 1, 2)]
        ref = mean_lr(enc.transform, trains, test)
        got = mean_lr(static.transform, trains, test)
        row = [name, f"{ref:.1f}", f"{got:.1f}", f"{100 * got / ref:.1f}"]
        if args.train_texts:
            # Unlabelled texts of the same kind: train rows, never the test rows.
            corpus = train.sample(min(args.train_texts, len(train)), random_state=7)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                tuned = TextEncoder(train_on_fit=True, random_state=0).fit(corpus.text)
                seconds = time.perf_counter() - start
            got2 = mean_lr(tuned.transform, trains, test)
            row += [f"{got2:.1f}", f"{100 * got2 / ref:.1f}", f"{seconds:.0f}"]
        rows.append(row)
        print(f"[{time.strftime('%H:%M:%S')}] {name} done", file=sys.stderr)
    header = ["set", "MiniLM LR", "TextEncoder LR", "% of MiniLM"]
    if args.train_texts:
        header += [f"trained on {args.train_texts} texts", "% of MiniLM", "fit s"]
    print(f"\n## LogisticRegressionCV accuracy, tuners.py protocol (200 labels, 8 per class for "
          f"banking77; {N_TEST} test rows; seeds 0-2)\n")
    print(table(header, rows))
    print(f"\nload average {load_avg()}")


# -- 5. one full fit, timed --------------------------------------------------------------------
def fit_time(args) -> None:
    from embetter.text import TextEncoder

    n = args.train_texts or 10_000
    texts = []
    for name in args.datasets:
        texts += fit_corpus(name, n - len(texts))
        if len(texts) >= n:
            break
    words = np.mean([len(t.split()) for t in texts])
    TextEncoder().transform(["warm"])  # the untrained static model, built/loaded beforehand
    seconds = {}

    class Timed(TextEncoder):  # the real encoder; only a stopwatch around the teacher
        def _teacher_embeddings(self, texts):
            start = time.perf_counter()
            out = super()._teacher_embeddings(texts)
            seconds["teacher"] = time.perf_counter() - start
            return out

    load_before = load_avg()
    start = time.perf_counter()
    Timed(train_on_fit=True, random_state=0).fit(texts)
    total = time.perf_counter() - start
    rows = [["teacher encoding (SentenceEncoder, float32)", f"{seconds['teacher']:.1f}"],
            ["training (model2vec, early stopping)", f"{total - seconds['teacher']:.1f}"],
            ["fit in all", f"{total:.1f}"]]
    print(f"\n## TextEncoder(train_on_fit=True).fit on {len(texts)} train texts of "
          f"{', '.join(args.datasets)} ({words:.1f} words on average), {torch_threads()} torch "
          f"thread(s), {os.cpu_count()} CPUs\n")
    print(table(["part", "seconds"], rows))
    print(f"\nload average {load_before} before, {load_avg()} after")


# -- 4. speed ----------------------------------------------------------------------------------
def speed(args) -> None:
    from encode_common import load_texts

    from embetter.text import SentenceEncoder, TextEncoder

    texts = load_texts(1000)
    encoders = {"SentenceEncoder()": SentenceEncoder(), "TextEncoder()": TextEncoder()}
    for enc in encoders.values():
        enc.transform(texts[:10])
    times = {k: [] for k in encoders}
    for _ in range(args.rounds):
        for k, enc in encoders.items():
            start = time.perf_counter()
            enc.transform(texts)
            times[k].append(time.perf_counter() - start)
    base = min(times["SentenceEncoder()"])
    rows = [[k, f"{len(texts) / min(t):.0f}", f"{base / min(t):.0f}x"] for k, t in times.items()]
    print(f"\n## Speed: {len(texts)} texts (half SST-2, half AG News), best of {args.rounds} "
          "interleaved rounds\n")
    print(table(["encoder", "texts/s", "vs SentenceEncoder()"], rows))
    print(f"\nload average {load_avg()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="quality,speed")
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--pca", default="128,256,None")
    ap.add_argument("--sif", default="1e-4,1e-3,1e-2")
    ap.add_argument("--train-texts", type=int, default=0,
                    help="also fit TextEncoder(train_on_fit=True) on this many train texts "
                         "(--only quality, ratio; fit-time: the texts timed)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--candidates", default="",
                    help="with --only ratio: pca:sif distillations to score on dev rows, "
                         "e.g. 256:None,None:1e-4")
    ap.add_argument("--recipes", default="",
                    help="with --only ratio --train-texts N: training settings of train_to_mimic "
                         "to score on dev rows, ';' between recipes, e.g. "
                         "'loss=cosine,learning_rate=0.01;loss=mse,patience=2,max_epochs=None'")
    ap.add_argument("--teacher-backend", default=None,
                    help="with --train-texts: the SentenceEncoder backend that embeds the fit "
                         "texts for training (default: float32 torch); MiniLM's own LR column "
                         "stays float32")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"# static: {os.cpu_count()} CPUs, load average {load_avg()} at start")
    from static_ratio import ratio  # beside this script

    for part, fn in (("select", select), ("quality", quality), ("ratio", ratio),
                     ("speed", speed), ("fit-time", fit_time)):
        if part in args.only.split(","):
            fn(args)


if __name__ == "__main__":
    main()
