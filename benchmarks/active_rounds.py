"""The interactive rounds of benchmarks/active.py (`--time-round`, `--time-sbert`): seconds of
one LabellingLoop round (suggest, then update) on real embeddings or texts; run them through
active.py."""

from __future__ import annotations

import os
import time

import numpy as np
from active_data import load, split, start_set  # beside this script


# -- one interactive round -------------------------------------------------------------------
def time_round(repeats: int = 8, sbert: bool = True):
    """LabellingLoop rounds on a 10,000-row pool of real 384-d MiniLM embeddings: from 2 labels
    per class (116), rounds of 10; the tuner retrains from the start in the round that brings
    the labels to 1.5 times its last start (176), timed apart."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.pipeline import make_pipeline

    from embetter.finetune import ContrastiveTuner, FeedForwardTuner
    from embetter.label import LabellingLoop

    parts = [load(name, dev=True) for name in ("sst2", "subj", "mr", "trec_fine", "sms_spam")]
    X = np.vstack([p[0] for p in parts])[:10_000]
    y = np.concatenate([[f"{i}:{v}" for v in p[1]] for i, p in enumerate(parts)])[:10_000]
    print(f"\npool {X.shape}, {np.unique(y).size} classes (five sets' pools stacked); "
          f"load {os.getloadavg()}")
    print("| pipeline | round (s), median | slowest | retraining round (s) | suggest (s) | "
          "update (s) |")
    print("|---|---|---|---|---|---|")
    for tuner, head in [(t, h) for t in (FeedForwardTuner, ContrastiveTuner)
                        for h in (SGDClassifier, LogisticRegression)]:
        clf = head(loss="log_loss", random_state=0) if head is SGDClassifier else head()
        pipe = make_pipeline(tuner(random_state=0), clf)
        loop = LabellingLoop(pipe, X, classes=np.unique(y), random_state=0)
        loop.update(start_set(y, 0), y[start_set(y, 0)])
        loop.suggest(10)  # the first call pays torch's and sklearn's lazy imports
        rounds, asks, updates, retrains = [], [], [], []
        for _ in range(repeats):
            start = loop.model_[0].refit_rows_
            (total,), (ask,), (update,) = _time_rounds(loop, y, 1)
            if loop.model_[0].refit_rows_ != start:
                retrains.append(total)
            else:
                rounds.append(total)
            asks.append(ask)
            updates.append(update)
        print(f"| {tuner.__name__} + {head.__name__} | {np.median(rounds):.2f} | "
              f"{max(rounds):.2f} | {', '.join(f'{t:.2f}' for t in retrains) or '-'} | "
              f"{np.median(asks):.2f} | {np.median(updates):.2f} |")
    if sbert:
        time_sbert_round()


def _time_rounds(loop, y, repeats: int):
    """(round, suggest, update) seconds of `repeats` rounds of k=10, the truth as labels."""
    rounds, asks, updates = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        picks = loop.suggest(10)
        t1 = time.perf_counter()
        loop.update(picks, y[picks])
        t2 = time.perf_counter()
        rounds.append(t2 - t0)
        asks.append(t1 - t0)
        updates.append(t2 - t1)
    return rounds, asks, updates


def time_sbert_round(repeats: int = 8, n_pool: int = 1000):
    """LabellingLoop rounds with an SbertTuner pipeline (texts in) on a pool of 1,000 texts:
    each round fine-tunes the sentence model (partial_fit) and re-embeds the pool to suggest.
    Every round is listed: those that bring the labels to refit_growth (1.5) times those of
    the last retrain fine-tune a fresh copy on all of them, the others train on."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from embetter.finetune import SbertTuner
    from embetter.label import LabellingLoop

    pool = split("emotion")[0].iloc[:n_pool]
    texts, y = pool["text"].tolist(), pool["label"].astype(str).to_numpy()
    threads = torch.get_num_threads()
    print(f"\nSbertTuner: pool of {len(texts)} emotion texts, {np.unique(y).size} classes, "
          f"k=10; torch threads {threads}; load {os.getloadavg()}")
    pipe = make_pipeline(SbertTuner(random_state=0), LogisticRegression(C=10, max_iter=2000))
    loop = LabellingLoop(pipe, texts, classes=np.unique(y), random_state=0)
    start = start_set(y, 0)
    t0 = time.perf_counter()
    loop.update(start, y[start])  # the first fine-tuning call (loads the model)
    first = time.perf_counter() - t0
    print(f"(first update, {start.size} labels, model load included: {first:.1f} s)")
    print("| round | labels after | retrained | round (s) | suggest (s) | update (s) |")
    print("|---|---|---|---|---|---|")
    short, long = [], []
    tuner = loop.model_.steps[0][1]  # the stream's tuner: updated in place every round
    for r in range(1, repeats + 1):
        before = tuner.refit_rows_
        (total,), (ask,), (upd,) = _time_rounds(loop, y, 1)
        retrained = tuner.refit_rows_ != before
        (long if retrained else short).append(total)
        print(f"| {r} | {tuner.refit_rows_ if retrained else len(tuner.seen_texts_)} | "
              f"{'yes' if retrained else 'no'} | {total:.2f} | {ask:.2f} | {upd:.2f} |")
    print(f"rounds that train on: median {np.median(short):.2f} s; "
          f"rounds that retrain: median {np.median(long):.2f} s; load {os.getloadavg()}")
