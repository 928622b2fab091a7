"""Few-shot classification: SbertTuner vs SetFit 1.2, side by side, on one machine in one run.

Protocol (issue 11): with each seed, 8 labelled texts per class drawn from the train split;
1,000 test texts (one fixed sample). Per sample, the same texts go to:

- frozen LR: `LogisticRegression` on the bundled all-MiniLM-L6-v2's embeddings;
- SetFit 1.2 (its defaults, batch 16, 1 epoch, its LR head) on the same model folder, run in
  its own virtual environment (`.bench-venvs/setfit`, made by `--setup-setfit`);
- SbertTuner (defaults, or `--param`) followed by LR, and by 5-NN on cosine (both heads on one
  tuner fit; the fit time is the tuner's); and, when the labels are words, the same without
  label texts (`label_texts=None`: `plain_lr`), to show what the label names bring;
- with `--static`, the same for a static model (MiniLM's own token embeddings, averaged: a
  `StaticEmbedding`): frozen static LR vs SbertTuner(static) + LR.

Times are the wall seconds of `fit` (model loading included for SbertTuner, excluded for
SetFit) and their CPU seconds (all threads; on a busy shared machine wall time is inflated:
compare CPU time, and rerun on a quiet machine). The load average is printed beside them.

`--validation` swaps the test split for 600 other rows of the train split: that is the only
protocol used to choose SbertTuner's defaults (never the test split).

    python benchmarks/sbert.py --setup-setfit      # once: SetFit's own venv (torch wheel first)
    python benchmarks/sbert.py                     # all four sets, seeds 0-4, with SetFit
    python benchmarks/sbert.py --data emotion --seeds 0 --no-setfit --param epochs=10
    python benchmarks/sbert.py --stream            # partial_fit grid (batches of 50..2,000)
    python benchmarks/sbert.py --stream --stream-seeds 0 1 2   # per seed, then their mean

SetFit at its defaults trains on every pair of texts (oversampled): on banking77 (616 texts,
77 classes) that is ~375,000 pairs, hours on 2 cores: `--setfit-timeout` stops a run, which is
then printed as `nan` with the seconds spent.

The data live outside the repository (`../shared/data`, or `--data-dir`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from params import parse_params  # noqa: E402  (beside this script)
from setfit_run import setfit_steps  # noqa: E402  (beside this script)
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from splits import read_split  # noqa: E402  (beside this script)

from embetter.finetune import FeedForwardTuner, SbertTuner  # noqa: E402
from embetter.text._models import bundled_model_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
SETFIT_VENV = ROOT / ".bench-venvs" / "setfit"
TORCH_WHEEL = "/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
SHARED_PINS = ("sentence-transformers", "transformers", "datasets", "accelerate", "numpy",
               "scikit-learn", "pandas")


def load(data_dir: Path, name: str, seed: int, per_class=8, n_test=1000, validation=False):
    """8 texts per class from train; test rows from test, or (validation) from the rest of train."""
    train = read_split(data_dir, name, "train")  # columns: text, label
    if train.label.value_counts().min() >= per_class:
        few = train.groupby("label", group_keys=False).sample(n=per_class, random_state=seed)
    else:  # a class with fewer rows (trec_fine) gives all it has
        few = train.groupby("label").sample(frac=1.0, random_state=seed)
        few = few.groupby("label").head(per_class)
    few = few.sample(frac=1.0, random_state=seed)  # no class-sorted order
    if validation:
        test = train.drop(few.index).sample(n=600, random_state=1000 + seed)
    else:
        test = read_split(data_dir, name, "test")
        test = test.sample(n=min(n_test, len(test)), random_state=0)
    return few.text.tolist(), few.label.to_numpy(), test.text.tolist(), test.label.to_numpy()


def setup_setfit(torch_wheel: str):
    """SetFit 1.2 in its own venv: torch from the local wheel first, then SetFit with our pins.

    SetFit 1.2 asks for sentence-transformers[train]>=3 and transformers>=4.41: no clash with
    our versions, which are pinned so that both tools run the same library code.
    """
    from importlib.metadata import PackageNotFoundError, version

    py = SETFIT_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SETFIT_VENV)], check=True)
    torch = torch_wheel if Path(torch_wheel).exists() else "torch==2.13.0"
    subprocess.run([str(py), "-m", "pip", "install", "-q", torch], check=True)
    def have(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    # ours where we have them (datasets/accelerate may be SetFit's own)
    pins = [f"{name}=={have(name)}" for name in SHARED_PINS if have(name)]
    subprocess.run([str(py), "-m", "pip", "install", "-q", "setfit==1.2.0", "torch==2.13.0",
                    *pins], check=True)
    print(f"SetFit environment ready: {SETFIT_VENV}")


def run_setfit(X, y, X_test, y_test, seed, timeout, max_steps=None):
    """Accuracy, wall and CPU seconds of SetFit's fit, in its own venv (NaN on timeout), and
    its steps: with `max_steps` below the `full_steps` its defaults train, the run stops
    there, its seconds are extrapolated to the full run and its accuracy is NaN."""
    classes = {c: i for i, c in enumerate(sorted(set(y)))}
    job = {"model": str(bundled_model_path()), "seed": int(seed), "max_steps": max_steps,
           "train": [[t, classes[c]] for t, c in zip(X, y)],
           "test": [[t, classes.get(c, -1)] for t, c in zip(X_test, y_test)]}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [str(SETFIT_VENV / "bin" / "python"), str(ROOT / "benchmarks" / "setfit_run.py"),
             f.name], capture_output=True, text=True, timeout=timeout, check=True)
        out = json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"acc": np.nan, "fit_s": time.perf_counter() - start, "cpu_s": np.nan,
                "extrapolated": False}
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"SetFit failed:\n{error.stderr[-3000:]}") from None
    finally:
        os.unlink(f.name)
    capped = out["steps"] < out["full_steps"]
    if capped:  # seconds per step of the capped run, times the steps of the full one
        scale = out["full_steps"] / out["steps"]
        out |= {"acc": np.nan, "fit_s": out["fit_s"] * scale, "cpu_s": out["cpu_s"] * scale}
    return out | {"extrapolated": capped}




def static_model():
    """MiniLM's own token embeddings as a static model: `StaticEmbedding`, mean pooled."""
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import StaticEmbedding

    from embetter.text._models import load_sentence_transformer

    minilm = load_sentence_transformer("all-MiniLM-L6-v2", "cpu")
    weights = minilm[0].auto_model.get_input_embeddings().weight.detach().clone()
    static = StaticEmbedding(minilm.tokenizer, embedding_weights=weights)
    return SentenceTransformer(modules=[static], device="cpu")


def timed(fn):
    t, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - cpu


def tuned_scores(tuner, X, y, X_test, y_test):
    """Accuracy of LR and 5-NN (cosine) on the tuned space; fit seconds of the tuner + LR."""
    def fit():
        Z = tuner.fit(X, y).transform(X)
        return Z, LogisticRegression(max_iter=1000).fit(Z, y)

    (Z, lr), wall, cpu = timed(fit)
    Z_test = tuner.transform(X_test)
    knn = KNeighborsClassifier(5, metric="cosine").fit(Z, y)
    return lr.score(Z_test, y_test), knn.score(Z_test, y_test), wall, cpu


def frozen_lr(model, X, y, X_test, y_test, ff_seed=None):
    """LR on the frozen model's embeddings; with `ff_seed`, also LR after a FeedForwardTuner
    (defaults) on them: the head that tunes without touching the model."""
    emb = model.encode(X, convert_to_numpy=True)
    emb_test = model.encode(X_test, batch_size=64, convert_to_numpy=True)
    acc = LogisticRegression(max_iter=1000).fit(emb, y).score(emb_test, y_test)
    if ff_seed is None:
        return acc
    ff = FeedForwardTuner(random_state=ff_seed).fit(emb, y)
    ff_acc = LogisticRegression(max_iter=1000).fit(ff.transform(emb), y).score(
        ff.transform(emb_test), y_test)
    return acc, ff_acc


def few_shot(args, params):
    from embetter.text._models import load_sentence_transformer

    minilm = load_sentence_transformer("all-MiniLM-L6-v2", "cpu")
    static = static_model() if args.static else None
    use_setfit = args.setfit and (SETFIT_VENV / "bin" / "python").exists()
    if args.setfit and not use_setfit:
        print(f"no SetFit environment at {SETFIT_VENV}: run --setup-setfit first; skipped")
    # the first fit of a process pays one-off imports (torch optimizers, tokenizer): not timed
    SbertTuner(random_state=0, **params).fit(["good", "fine", "bad", "awful"], [1, 1, 0, 0])
    rows = []
    for name in args.data:
        for seed in args.seeds:
            X, y, X_test, y_test = load(args.data_dir, name, seed, validation=args.validation)
            frozen, ff = frozen_lr(minilm, X, y, X_test, y_test, ff_seed=seed)
            row = {"data": name, "seed": seed, "n_train": len(X), "classes": len(set(y)),
                   "frozen_lr": frozen, "ff_lr": ff}
            # a capped run only gives SetFit's time (extrapolated): one seed tells it
            capped = setfit_steps(y.tolist()) > args.setfit_max_steps
            if (use_setfit and name not in args.skip_setfit
                    and not (capped and seed != args.seeds[0])):
                out = run_setfit(X, y, X_test, y_test, seed, args.setfit_timeout,
                                 args.setfit_max_steps)
                row |= {"setfit": out["acc"], "setfit_s": out["fit_s"],
                        "setfit_cpu_s": out["cpu_s"], "setfit_est": out["extrapolated"]}
            tuner = SbertTuner(minilm, random_state=seed, **params)
            lr, knn, wall, cpu = tuned_scores(tuner, X, y, X_test, y_test)
            row |= {"tuned_lr": lr, "tuned_knn": knn, "tuned_s": wall, "tuned_cpu_s": cpu,
                    "steps": tuner.learner_.n_steps_}
            if args.plain and tuner.label_texts_:  # what the label names bring
                plain = SbertTuner(minilm, random_state=seed, **(params | {"label_texts": None}))
                row["plain_lr"] = tuned_scores(plain, X, y, X_test, y_test)[0]
            elif args.plain:  # no names were used: the run above is the plain one
                row["plain_lr"] = lr
            if static is not None:
                row["static_frozen_lr"] = frozen_lr(static, X, y, X_test, y_test)
                tuner = SbertTuner(static, random_state=seed, **params)
                lr, knn, wall, cpu = tuned_scores(tuner, X, y, X_test, y_test)
                row |= {"static_tuned_lr": lr, "static_tuned_knn": knn, "static_s": wall,
                        "static_cpu_s": cpu}
            row["load1"] = os.getloadavg()[0]
            rows.append(row)
            print(pd.DataFrame([row]).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    acc = [c for c in table.columns if c not in ("data", "seed", "load1")]
    summary = table.groupby("data", sort=False)[acc].mean()
    summary["tuned_gain"] = 100 * (summary.tuned_lr - summary.frozen_lr)
    if "plain_lr" in summary:
        summary["plain_gain"] = 100 * (summary.plain_lr - summary.frozen_lr)
    if "setfit" in summary:
        summary["setfit_gain"] = 100 * (summary.setfit - summary.frozen_lr)
        summary["tuned_vs_setfit"] = summary.tuned_gain - summary.setfit_gain
        summary["time_ratio"] = summary.tuned_s / summary.setfit_s
    if "static_tuned_lr" in summary:
        summary["static_gain"] = 100 * (summary.static_tuned_lr - summary.static_frozen_lr)
    print(f"\nSbertTuner params: {params or 'defaults'}; "
          f"{'train-split validation' if args.validation else 'test split'}; "
          f"load average now {tuple(round(v, 2) for v in os.getloadavg())}")
    print(f"\nper run:\n{table.round(3).to_string(index=False)}")
    print(f"\nmean over seeds {args.seeds}:\n{summary.round(3).to_string()}")
    means = summary.mean(numeric_only=True)
    print(f"\nmean over sets:\n{means.round(3).to_string()}")
    targets(summary)


def targets(summary):
    """Issue 23's figures: few classes (<= 20) against SetFit, many classes against the
    frozen model and FeedForwardTuner, and 5-NN in the tuned space against frozen LR."""
    few, many = summary[summary.classes <= 20], summary[summary.classes > 20]
    lines = []
    if len(few) and "setfit_gain" in few and few.setfit_gain.notna().all():
        lines += [
            f"few classes ({', '.join(few.index)}): mean LR gain {few.tuned_gain.mean():+.1f} "
            f"vs SetFit {few.setfit_gain.mean():+.1f} (ahead by "
            f"{few.tuned_gain.mean() - few.setfit_gain.mean():+.1f}; target >= +2)",
            f"  worst set vs SetFit: {few.tuned_vs_setfit.min():+.1f} "
            f"({few.tuned_vs_setfit.idxmin()}; target >= -1)",
            f"  fit time: {few.tuned_s.sum():.0f} s vs SetFit {few.setfit_s.sum():.0f} s "
            f"({few.tuned_s.sum() / few.setfit_s.sum():.2f}; target <= 0.33)",
        ]
        if "plain_gain" in few:
            lines.append(f"  label_texts=None: mean gain {few.plain_gain.mean():+.1f} vs SetFit "
                         f"{few.setfit_gain.mean():+.1f} (target >=)")
    for name, row in many.iterrows():
        best = max(row.frozen_lr, row.ff_lr)
        lines.append(f"{name}: SbertTuner LR {row.tuned_lr:.3f} vs max(frozen {row.frozen_lr:.3f}"
                     f", FF {row.ff_lr:.3f}) {100 * (row.tuned_lr - best):+.1f} (target >= +2), "
                     f"fit {row.tuned_s:.0f} s (target <= 180)"
                     + (f"; SetFit {row.setfit_s:.0f} s (extrapolated from a capped run)"
                        if "setfit_s" in row and row.get("setfit_est") else ""))
    knn = 100 * (summary.tuned_knn.mean() - summary.frozen_lr.mean())
    lines.append(f"5-NN in the tuned space vs frozen LR, mean over {len(summary)} sets: "
                 f"{knn:+.1f} (target >= +3)")
    print("\ntargets:\n" + "\n".join(lines))


def knn_acc(tuner, X, y, X_held, y_held):
    knn = KNeighborsClassifier(5, metric="cosine").fit(tuner.transform(X), y)
    return knn.score(tuner.transform(X_held), y_held)


def stream_one(X, y, X_held, y_held, classes, batches, params, seed=0):
    one, wall, cpu = timed(lambda: SbertTuner(random_state=seed, **params).fit(X, y))
    fit_acc = knn_acc(one, X, y, X_held, y_held)
    row = {"rows": len(X), "fit": fit_acc, "fit_s": wall, "fit_cpu_s": cpu}
    # each result as it comes (a long stream killed half-way keeps what finished)
    print(f"  seed {seed}: fit {fit_acc:.3f} ({cpu:.0f} CPU s)", flush=True)
    for batch in batches:
        tuner = SbertTuner(random_state=seed, **params)
        cpu = time.process_time()
        for start in range(0, len(X), batch):
            tuner.partial_fit(X[start:start + batch], y[start:start + batch], classes=classes)
        cpu = time.process_time() - cpu
        acc = knn_acc(tuner, X, y, X_held, y_held)
        row |= {f"b{batch}": acc, f"b{batch}_diff": 100 * (acc - fit_acc),
                f"b{batch}_cpu_s": cpu}
        print(f"  seed {seed}: stream of {batch}s {acc:.3f} ({100 * (acc - fit_acc):+.1f} "
              f"points, {cpu:.0f} CPU s, load {os.getloadavg()[0]:.1f})", flush=True)
    return row


def stream(args, params):
    """5-NN accuracy after one fit vs a partial_fit stream over the same rows, per batch size."""
    rows = []
    for name in args.data:
        train = read_split(args.data_dir, name, "train")
        seen = train.sample(n=min(args.stream_rows, len(train)), random_state=0)
        rest = train.drop(seen.index)
        # held out of the stream, from the train split (the test split is never used here)
        held = rest.sample(n=min(1000, len(rest)), random_state=1)
        for seed in args.stream_seeds:  # the rows stay; the tuner's random_state changes
            row = {"data": name, "seed": seed} | stream_one(
                seen.text.tolist(), seen.label.to_numpy(), held.text.tolist(),
                held.label.to_numpy(), np.unique(train.label), args.stream_batches, params,
                seed)
            row["load1"] = os.getloadavg()[0]
            rows.append(row)
            print(pd.DataFrame([row]).round(3).to_string(index=False), flush=True)
    print(f"\nSbertTuner params: {params or 'defaults'}; 5-NN accuracy on 1,000 held-out train "
          f"rows; load average now {tuple(round(v, 2) for v in os.getloadavg())}")
    table = pd.DataFrame(rows)
    print(table.round(3).T.to_string(header=False))
    if len(args.stream_seeds) > 1:
        print(f"\nmean over seeds {args.stream_seeds}:")
        print(table.drop(columns="seed").groupby("data", sort=False).mean().round(3).T
              .to_string())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=[
        "sst2", "mr", "subj", "sms_spam", "ag_news", "emotion", "banking77", "clinc150"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--param", action="append", help="SbertTuner parameter, key=value")
    parser.add_argument("--validation", action="store_true",
                        help="score on other train rows (for choosing defaults), not test")
    parser.add_argument("--no-setfit", dest="setfit", action="store_false")
    parser.add_argument("--skip-setfit", nargs="*", default=[], help="sets to run without SetFit")
    parser.add_argument("--setfit-timeout", type=float, default=1800.0)
    parser.add_argument("--setfit-max-steps", type=int, default=400,
                        help="cap SetFit's steps; a capped run's time is extrapolated")
    parser.add_argument("--setup-setfit", action="store_true")
    parser.add_argument("--torch-wheel", default=TORCH_WHEEL)
    parser.add_argument("--static", action="store_true", help="add the static-model columns")
    parser.add_argument("--no-plain", dest="plain", action="store_false",
                        help="skip the SbertTuner(label_texts=None) column")
    parser.add_argument("--stream", action="store_true", help="run the partial_fit grid")
    parser.add_argument("--stream-rows", type=int, default=2000)
    parser.add_argument("--stream-batches", nargs="+", type=int, default=[50, 100, 500, 2000])
    parser.add_argument("--stream-seeds", nargs="+", type=int, default=[0],
                        help="SbertTuner random_state values for the grid (the rows stay)")
    args = parser.parse_args()
    params = parse_params(args.param)
    if args.setup_setfit:
        setup_setfit(args.torch_wheel)
    elif args.stream:
        stream(args, params)
    else:
        few_shot(args, params)


if __name__ == "__main__":
    main()
