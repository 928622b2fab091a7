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
import ast
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
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

from embetter.finetune import SbertTuner  # noqa: E402
from embetter.text._models import bundled_model_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
SETFIT_VENV = ROOT / ".bench-venvs" / "setfit"
TORCH_WHEEL = "/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
SHARED_PINS = ("sentence-transformers", "transformers", "datasets", "accelerate", "numpy",
               "scikit-learn", "pandas")


def load(data_dir: Path, name: str, seed: int, per_class=8, n_test=1000, validation=False):
    """8 texts per class from train; test rows from test, or (validation) from the rest of train."""
    train = pd.read_csv(data_dir / name / "train.csv")  # columns: text, label
    few = train.groupby("label", group_keys=False).sample(n=per_class, random_state=seed)
    few = few.sample(frac=1.0, random_state=seed)  # no class-sorted order
    if validation:
        test = train.drop(few.index).sample(n=600, random_state=1000 + seed)
    else:
        test = pd.read_csv(data_dir / name / "test.csv")
        test = test.sample(n=min(n_test, len(test)), random_state=0)
    return few.text.tolist(), few.label.to_numpy(), test.text.tolist(), test.label.to_numpy()


def parse_params(items):
    params = {}
    for item in items or []:
        key, _, value = item.partition("=")
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value
    return params


def setup_setfit(torch_wheel: str):
    """SetFit 1.2 in its own venv: torch from the local wheel first, then SetFit with our pins.

    SetFit 1.2 asks for sentence-transformers[train]>=3 and transformers>=4.41: no clash with
    our versions, which are pinned so that both tools run the same library code.
    """
    from importlib.metadata import version

    py = SETFIT_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SETFIT_VENV)], check=True)
    torch = torch_wheel if Path(torch_wheel).exists() else "torch==2.13.0"
    subprocess.run([str(py), "-m", "pip", "install", "-q", torch], check=True)
    pins = [f"{name}=={version(name)}" for name in SHARED_PINS]
    subprocess.run([str(py), "-m", "pip", "install", "-q", "setfit==1.2.0", "torch==2.13.0",
                    *pins], check=True)
    print(f"SetFit environment ready: {SETFIT_VENV}")


def run_setfit(X, y, X_test, y_test, seed, timeout):
    """Accuracy, wall and CPU seconds of SetFit's fit, in its own venv (NaN on timeout)."""
    classes = {c: i for i, c in enumerate(sorted(set(y)))}
    job = {"model": str(bundled_model_path()), "seed": int(seed),
           "train": [[t, classes[c]] for t, c in zip(X, y)],
           "test": [[t, classes.get(c, -1)] for t, c in zip(X_test, y_test)]}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [str(SETFIT_VENV / "bin" / "python"), str(ROOT / "benchmarks" / "setfit_run.py"),
             f.name], capture_output=True, text=True, timeout=timeout, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"acc": np.nan, "fit_s": time.perf_counter() - start, "cpu_s": np.nan}
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"SetFit failed:\n{error.stderr[-3000:]}") from None
    finally:
        os.unlink(f.name)


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


def frozen_lr(model, X, y, X_test, y_test):
    emb = model.encode(X, convert_to_numpy=True)
    return LogisticRegression(max_iter=1000).fit(emb, y).score(
        model.encode(X_test, batch_size=64, convert_to_numpy=True), y_test)


def few_shot(args, params):
    from embetter.text._models import load_sentence_transformer

    minilm = load_sentence_transformer("all-MiniLM-L6-v2", "cpu")
    static = static_model() if args.static else None
    use_setfit = args.setfit and (SETFIT_VENV / "bin" / "python").exists()
    if args.setfit and not use_setfit:
        print(f"no SetFit environment at {SETFIT_VENV}: run --setup-setfit first; skipped")
    # the first fit of a process pays one-off imports (trainer, accelerate): not timed
    SbertTuner(random_state=0, **params).fit(["good", "fine", "bad", "awful"], [1, 1, 0, 0])
    rows = []
    for name in args.data:
        for seed in args.seeds:
            X, y, X_test, y_test = load(args.data_dir, name, seed, validation=args.validation)
            row = {"data": name, "seed": seed, "n_train": len(X),
                   "frozen_lr": frozen_lr(minilm, X, y, X_test, y_test)}
            if use_setfit and name not in args.skip_setfit:
                out = run_setfit(X, y, X_test, y_test, seed, args.setfit_timeout)
                row |= {"setfit": out["acc"], "setfit_s": out["fit_s"],
                        "setfit_cpu_s": out["cpu_s"]}
            tuner = SbertTuner(minilm, random_state=seed, **params)
            lr, knn, wall, cpu = tuned_scores(tuner, X, y, X_test, y_test)
            row |= {"tuned_lr": lr, "tuned_knn": knn, "tuned_s": wall, "tuned_cpu_s": cpu,
                    "steps": tuner.learner_.n_steps_}
            if args.plain and tuner.label_texts_:  # what the label names bring
                plain = SbertTuner(minilm, random_state=seed, **(params | {"label_texts": None}))
                row["plain_lr"] = tuned_scores(plain, X, y, X_test, y_test)[0]
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
    acc = [c for c in table.columns if c not in ("data", "seed", "n_train", "load1")]
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


def knn_acc(tuner, X, y, X_held, y_held):
    knn = KNeighborsClassifier(5, metric="cosine").fit(tuner.transform(X), y)
    return knn.score(tuner.transform(X_held), y_held)


def stream_one(X, y, X_held, y_held, classes, batches, params, seed=0):
    one, wall, cpu = timed(lambda: SbertTuner(random_state=seed, **params).fit(X, y))
    fit_acc = knn_acc(one, X, y, X_held, y_held)
    row = {"rows": len(X), "fit": fit_acc, "fit_s": wall, "fit_cpu_s": cpu}
    for batch in batches:
        tuner = SbertTuner(random_state=seed, **params)
        cpu = time.process_time()
        for start in range(0, len(X), batch):
            tuner.partial_fit(X[start:start + batch], y[start:start + batch], classes=classes)
        cpu = time.process_time() - cpu
        acc = knn_acc(tuner, X, y, X_held, y_held)
        row |= {f"b{batch}": acc, f"b{batch}_diff": 100 * (acc - fit_acc),
                f"b{batch}_cpu_s": cpu}
    return row


def stream(args, params):
    """5-NN accuracy after one fit vs a partial_fit stream over the same rows, per batch size."""
    rows = []
    for name in args.data:
        train = pd.read_csv(args.data_dir / name / "train.csv")
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
    parser.add_argument("--data", nargs="+", default=["sst2", "ag_news", "emotion", "banking77"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--param", action="append", help="SbertTuner parameter, key=value")
    parser.add_argument("--validation", action="store_true",
                        help="score on other train rows (for choosing defaults), not test")
    parser.add_argument("--no-setfit", dest="setfit", action="store_false")
    parser.add_argument("--skip-setfit", nargs="*", default=[], help="sets to run without SetFit")
    parser.add_argument("--setfit-timeout", type=float, default=1800.0)
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
