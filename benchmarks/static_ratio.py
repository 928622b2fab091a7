"""Issue 24's ratio of benchmarks/static.py (`--only ratio`): TextEncoder against MiniLM on
dev and test rows of all nine sets; run it through static.py, whose docstring has the protocol."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_common import table  # noqa: E402
from static_common import fit_corpus, load_avg, minilm, torch_threads  # noqa: E402
from tuners import DATA, SEEDS, load_texts  # noqa: E402


# -- 3. issue 24's ratio on all nine sets, dev and test rows -------------------------------------
def _lr_dev_test(Xtr, ytr, Xdev, ydev, Xte, yte) -> tuple[float, float]:
    """tuners.lr_acc's model, fitted once and scored on the dev and the test rows, one thread."""
    from sklearn.linear_model import LogisticRegressionCV
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        model = LogisticRegressionCV(Cs=[0.1, 1, 10, 100], cv=3, max_iter=2000).fit(Xtr, ytr)
        return 100 * model.score(Xdev, ydev), 100 * model.score(Xte, yte)


def _ratio_splits(name: str):
    """Per seed: (labelled rows, dev rows, test rows) as DataFrames. The labelled and test rows
    are tuners.load_texts'; dev is tuner_defaults.dev_split's 2,000-row train pool (seed 100)
    minus the texts labelled for that seed."""
    pool = pd.read_csv(DATA / name / "train.csv").sample(2000, random_state=100)
    out = []
    for seed in SEEDS:
        train, test = load_texts(name, seed)
        out.append((train, pool[~pool.text.isin(set(train.text))], test))
    return out


def _candidate_models(specs: list[str]) -> dict:
    """Distil one StaticModel per `pca:sif` spec from the bundled MiniLM (the transformer pass
    over the vocabulary is shared, as in `select`)."""
    if not specs:
        return {}
    import model2vec.distill.distillation as distillation
    import torch
    from transformers import AutoModel, AutoTokenizer

    from embetter.text._models import bundled_model_path

    source = str(bundled_model_path())
    model, tok = AutoModel.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    original, memo = distillation.create_embeddings, {}

    def once(**kw):
        if "raw" not in memo:
            memo["raw"] = original(**kw)
        return memo["raw"].copy()

    parse = lambda v, f: None if v == "None" else f(v)  # noqa: E731
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    distillation.create_embeddings = once
    try:
        out = {}
        for spec in specs:
            pca, sif = spec.split(":")
            start = time.perf_counter()
            out[f"pca {pca}, sif {sif}"] = distillation.distill_from_model(
                model, tok, pca_dims=parse(pca, int), sif_coefficient=parse(sif, float),
                quantize_to="float32", device="cpu")
            print(f"[{time.strftime('%H:%M:%S')}] distilled {spec} in "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    finally:
        distillation.create_embeddings = original
        torch.set_num_threads(threads)
    return out


def _cached_teacher_encoder(backend=None):
    """TextEncoder whose teacher embeddings come from the benchmark's MiniLM disk cache (the
    same model, float32, as `SentenceEncoder("all-MiniLM-L6-v2")`, or run by `backend`); all
    else is the encoder's."""
    from embetter.text import TextEncoder

    class CachedTeacherTextEncoder(TextEncoder):
        def _teacher_embeddings(self, texts):
            assert self.teacher == "all-MiniLM-L6-v2", self.teacher
            return minilm(backend).transform(texts)

    return CachedTeacherTextEncoder


def _parse_setting(kv: str):
    key, value = kv.split("=")
    if value == "None":
        return key, None
    try:
        return key, float(value) if "." in value or "e" in value else int(value)
    except ValueError:
        return key, value


def ratio(args) -> None:
    from embetter.text import TextEncoder
    from embetter.text._distill import DEFAULT_SETTINGS, train_to_mimic

    enc = minilm()
    static = {"TextEncoder()": TextEncoder().transform}
    for label, model in _candidate_models(args.candidates.split(",") if args.candidates
                                          else []).items():
        static[label] = model.encode
    tuned_key = f"train_on_fit ({args.train_texts})"
    recipes = {f"recipe {r}": dict(_parse_setting(kv) for kv in r.split(","))
               for r in (args.recipes.split(";") if args.recipes else [])}
    train_seconds = {}
    # acc[model][name] = (dev mean, test mean) over the seeds
    fitted = [tuned_key, *recipes] if args.train_texts else []
    acc = {k: {} for k in ["MiniLM", *static, *fitted]}
    for name in args.datasets:
        per_set = {}
        if args.train_texts:
            corpus = fit_corpus(name, args.train_texts)
            # the teacher's embeddings, cached (not timed)
            targets = minilm(args.teacher_backend).transform(corpus)
            start = time.perf_counter()
            tuned = _cached_teacher_encoder(args.teacher_backend)(
                train_on_fit=True, random_state=0).fit(corpus)
            train_seconds[name] = (len(corpus), time.perf_counter() - start)
            per_set[tuned_key] = tuned.transform
            for label, settings in recipes.items():
                # The same start, texts, targets and seed as the encoder's own fit above.
                model = train_to_mimic(TextEncoder()._base_model(), corpus, targets,
                                       TextEncoder(random_state=0)._training_seed(), **settings)
                per_set[label] = model.encode
                print(f"[{time.strftime('%H:%M:%S')}] {name}: trained {label}", file=sys.stderr)
        scores = {k: [] for k in acc}
        for train, dev, test in _ratio_splits(name):
            for k, encode in [("MiniLM", enc.transform), *static.items(), *per_set.items()]:
                scores[k].append(_lr_dev_test(
                    encode(train.text.tolist()), train.label.to_numpy(),
                    encode(dev.text.tolist()), dev.label.to_numpy(),
                    encode(test.text.tolist()), test.label.to_numpy()))
        for k in acc:
            acc[k][name] = tuple(np.mean(scores[k], axis=0))
        print(f"[{time.strftime('%H:%M:%S')}] {name} done (load {load_avg()})", file=sys.stderr)
    names = args.datasets
    pct = lambda k, i: {n: 100 * acc[k][n][i] / acc["MiniLM"][n][i] for n in names}  # noqa: E731
    dev_pct, test_pct = pct("TextEncoder()", 0), pct("TextEncoder()", 1)
    rows = [[n, f"{acc['MiniLM'][n][0]:.1f}", f"{acc['TextEncoder()'][n][0]:.1f}",
             f"{dev_pct[n]:.1f} %", f"{acc['MiniLM'][n][1]:.1f}",
             f"{acc['TextEncoder()'][n][1]:.1f}", f"{test_pct[n]:.1f} %"] for n in names]
    rows.append(["min / mean", "", "", f"{min(dev_pct.values()):.1f} / "
                 f"{np.mean(list(dev_pct.values())):.1f} %", "", "",
                 f"{min(test_pct.values()):.1f} / {np.mean(list(test_pct.values())):.1f} %"])
    print(f"\n## TextEncoder() ({DEFAULT_SETTINGS}) as a share of MiniLM, LogisticRegressionCV "
          "accuracy, 200 labels (8 per class for banking77, clinc150), seeds 0-2; dev = train "
          "rows not labelled, test = tuners.py's test rows\n")
    print(table(["set", "dev MiniLM", "dev TextEncoder()", "dev %", "test MiniLM",
                 "test TextEncoder()", "test %"], rows))
    if args.train_texts:
        tuned_dev, tuned_test = pct(tuned_key, 0), pct(tuned_key, 1)
        rows = [[n, str(train_seconds[n][0]), f"{dev_pct[n]:.1f}", f"{acc[tuned_key][n][0]:.1f}",
                 f"{tuned_dev[n]:.1f} %", f"{test_pct[n]:.1f}", f"{acc[tuned_key][n][1]:.1f}",
                 f"{tuned_test[n]:.1f} %", f"{train_seconds[n][1]:.0f}"] for n in names]
        summary = lambda p: f"{min(p.values()):.1f} / {np.mean(list(p.values())):.1f}"  # noqa: E731
        rows.append(["min / mean", "", summary(dev_pct), "", summary(tuned_dev) + " %",
                     summary(test_pct), "", summary(tuned_test) + " %", ""])
        print(f"\n## TextEncoder(train_on_fit=True, random_state=0) fitted on up to "
              f"{args.train_texts} unlabelled train texts of each set (teacher backend "
              f"{args.teacher_backend or 'torch, float32'}), % of MiniLM's LR accuracy "
              "(same labels, dev and test rows as above; teacher embeddings from the disk cache, "
              f"training on {torch_threads()} torch thread(s))\n")
        print(table(["set", "fit texts", "dev % TextEncoder()", "dev fitted", "dev % fitted",
                     "test % TextEncoder()", "test fitted", "test % fitted", "train s"], rows))
    if len(static) + len(fitted) > 1:
        rows = []
        for k in [*static, *fitted]:
            p = pct(k, 0)
            rows.append([k, *(f"{p[n]:.1f}" for n in names), f"{min(p.values()):.1f}",
                         f"{np.mean(list(p.values())):.1f}"])
        print("\n## Candidate distillations and training recipes, DEV rows only: % of MiniLM's "
              "LR accuracy\n")
        print(table(["model", *names, "min %", "mean %"], rows))
    print(f"\nload average {load_avg()}")
