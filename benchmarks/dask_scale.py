"""Texts per second: local `transform` vs `embetter.dask.transform` on 1 and 2 Dask workers.

Encodes N texts (default 20,000, from the CSVs in ../shared/data) with the bundled
all-MiniLM-L6-v2, first locally, then on a LocalCluster of 1 and of 2 worker processes
(1 thread each). The Dask time includes each worker loading the model on its first
partition (`--passes 2` adds a second pass, which reuses it). Also counts, in each worker
process, how many times a sentence model was loaded from disk (must be 1), and checks the
cluster's embeddings against the local ones.

    python benchmarks/dask_scale.py             # 20,000 texts
    python benchmarks/dask_scale.py --n 2000    # a quick run

Worker startup (spawning processes, importing torch) is not timed: a real cluster is up
before the job. Worker processes run torch on 1 thread each (Dask's nanny sets
OMP_NUM_THREADS=1); the local run uses torch's default thread count, printed below.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from distributed import WorkerPlugin

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SOURCES = ["emotion/train.csv", "banking77/train.csv", "ag_news/train.csv"]


def load_texts(n: int, data: Path) -> list[str]:
    texts: list[str] = []
    for name in SOURCES:
        path = data / name
        if path.is_file():
            texts += pd.read_csv(path)["text"].astype(str).tolist()
        if len(texts) >= n:
            return texts[:n]
    if not texts:
        raise SystemExit(f"no benchmark CSVs under {data}; pass --data")
    return (texts * (n // len(texts) + 1))[:n]  # fewer CSVs than texts asked for: repeat


class CountModelLoads(WorkerPlugin):
    """A worker plugin counting calls that load a sentence model from disk, per process."""

    name = "count-model-loads"

    def setup(self, worker):
        from embetter.text import _models

        real = _models.load_sentence_transformer
        if getattr(real, "_counting", False):
            return

        def counting(*args, **kwargs):
            _models._bench_load_count += 1
            return real(*args, **kwargs)

        counting._counting = True
        _models._bench_load_count = 0
        _models.load_sentence_transformer = counting


def loads_in_worker() -> int:
    from embetter.text import _models

    return _models._bench_load_count


def run_dask(pipe, frame, n_workers: int, n_partitions: int, expected: np.ndarray,
             n_passes: int) -> dict:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from embetter.dask import transform

    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                     dashboard_address=None, silence_logs=40) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(CountModelLoads())
        # Import torch & co. on the workers before timing, as a running cluster would have.
        client.run(__import__, "embetter.text._sbert")
        texts = dd.from_pandas(frame, npartitions=n_partitions).persist()
        passes = []
        results = []
        for _ in range(n_passes):
            t0 = time.perf_counter()
            X = transform(pipe, texts, column="text", dim=expected.shape[1])
            got = client.compute(X, sync=True)
            passes.append(time.perf_counter() - t0)
            results.append(X)  # keep it alive: the second pass reuses the workers' copy
        loads = client.run(loads_in_worker)
    diff = float(np.abs(got - expected).max())
    return {"passes": passes, "loads": sorted(loads.values()), "max_abs_diff": diff}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of texts")
    parser.add_argument("--partitions", type=int, default=8, help="Dask partitions")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--passes", type=int, default=1, help="Dask passes per cluster")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    import torch

    from embetter.text import SentenceEncoder

    texts = load_texts(args.n, args.data)
    frame = pd.DataFrame({"text": texts})
    pipe = SentenceEncoder("all-MiniLM-L6-v2", device="cpu")
    pipe.transform(texts[:64])  # load the model and warm up before timing

    t0 = time.perf_counter()
    expected = pipe.transform(texts)
    local_s = time.perf_counter() - t0

    rows = [("local transform", f"{torch.get_num_threads()} torch threads", local_s, None, "-")]
    for k in args.workers:
        r = run_dask(pipe, frame, k, args.partitions, expected, args.passes)
        loads = "/".join(str(v) for v in r["loads"])
        for i, secs in enumerate(r["passes"]):
            note = "incl. model load" if i == 0 else f"pass {i + 1}, model kept"
            rows.append((f"dask, {k} worker(s)", note, secs, r["max_abs_diff"], loads))
        assert all(v == 1 for v in r["loads"]), f"a worker loaded the model {r['loads']} times"

    print(f"\n{args.n} texts, all-MiniLM-L6-v2 on CPU, {os.cpu_count()} cores, "
          f"{args.partitions} partitions\n")
    print(f"| {'run':<20} | {'':<24} | {'seconds':>8} | {'texts/s':>8} | "
          f"{'max |diff|':>10} | {'loads/worker':>12} |")
    print(f"|{'-' * 22}|{'-' * 26}|{'-' * 9}:|{'-' * 9}:|{'-' * 11}:|{'-' * 13}:|")
    for name, note, secs, diff, loads in rows:
        d = "-" if diff is None else f"{diff:.1e}"
        print(f"| {name:<20} | {note:<24} | {secs:8.1f} | {args.n / secs:8.0f} | {d:>10} | "
              f"{loads:>12} |")


if __name__ == "__main__":
    main()
