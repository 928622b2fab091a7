"""Encoding speed, memory and accuracy of every SentenceEncoder path, side by side.

Prints three tables:

1. Paths (torch reference, thread setting, torch dynamic int8, pipelined fp32/bf16, ONNX
   fp32/int8): texts/s (median and best of interleaved rounds over the same texts), first-use
   seconds (load, plus the ONNX export into a fresh cache), peak RSS of a fresh process that
   loads the path and encodes the speed texts, mean/min cosine to the torch fp32 embeddings,
   and LogisticRegression accuracy on SST-2 and AG News embeddings.
2. Our overhead: SentenceEncoder vs calling `SentenceTransformer.encode` directly on the same
   sentences, interleaved, best and median (target: within 3 %).
3. The disk cache: a second pass over seen texts vs the first pass, which encodes them
   (target: >= 50x faster).
4. `backend="auto"`: which path the probe picked on this machine, from which timings, what the
   probe cost (first use into an empty cache, then a cached second use), and auto vs the
   default `SentenceEncoder()` in texts/s, side by side over the same texts.

Timings on a shared machine are noisy: every comparison is interleaved in one run, so all paths
see the same load. Data are read from ../shared/data (never copied into the repo).

    python benchmarks/encode_speed.py            # the full run (tens of minutes on 2 cores)
    python benchmarks/encode_speed.py --quick    # a few minutes, smaller sizes
    python benchmarks/encode_speed.py --device cuda --paths torch,pipelined,pipelined-fp16
    python benchmarks/encode_speed.py --only auto        # just the auto probe vs the default
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
from encode_common import DATA, MODEL, cosines, load_texts, log, table, timed  # beside it

# name -> SentenceEncoder keyword arguments (special cases handled in make_encoder)
PATHS = {
    "torch": dict(backend="torch"),
    "default": dict(),
    "torch-1thread": dict(backend="torch"),
    "torch-qint8": dict(backend="torch"),
    "pipelined": dict(backend="pipelined", precision="float32"),
    "pipelined-bf16": dict(backend="pipelined", precision="bfloat16"),
    "pipelined-fp16": dict(backend="pipelined", precision="float16"),
    "onnx-fp32": dict(backend="onnx", precision="float32"),
    "onnx-int8": dict(backend="onnx"),
    "openvino-fp32": dict(backend="openvino", precision="float32"),
    "auto": dict(backend="auto"),
    "textencoder": dict(backend="static"),
}
CPU_DEFAULT = ("torch,torch-qint8,pipelined,pipelined-bf16,onnx-fp32,onnx-int8,openvino-fp32,"
               "auto,textencoder")
GPU_DEFAULT = "torch,default,pipelined-fp16,pipelined-bf16,auto"
DESCRIBE = {
    "torch": "backend='torch' = ST encode, fp32 (reference; SentenceEncoder() on CPUs)",
    "default": "SentenceEncoder() with no arguments (CUDA: pipelined, token budget, fp16)",
    "torch-1thread": "same, torch.set_num_threads(1)",
    "torch-qint8": "torch.ao quantize_dynamic(Linear, qint8)",
    "pipelined": "backend='pipelined', fp32",
    "pipelined-bf16": "backend='pipelined', bf16 autocast",
    "pipelined-fp16": "backend='pipelined', fp16 autocast",
    "onnx-fp32": "backend='onnx', precision='float32'",
    "onnx-int8": "backend='onnx' (int8, the default)",
    "openvino-fp32": "backend='openvino', precision='float32'",
    "auto": "backend='auto' (measured on this machine)",
    "textencoder": "TextEncoder() (static model2vec, not the same space)",
}


BATCH_SIZE = [32]  # set from --batch-size
EXPLICIT_BATCH = [False]  # --batch-size given: every path uses it, "default" and "auto" too


class Threads:
    """Run a block with a given torch thread count (restored afterwards)."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import torch

        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.old)


def make_encoder(path: str, device: str):
    """The encoder for one path, and the torch thread count it runs with (None: default)."""
    from embetter.text import SentenceEncoder

    kw = dict(PATHS[path], batch_size=BATCH_SIZE[0])
    if path in ("default", "auto") and not EXPLICIT_BATCH[0]:
        kw["batch_size"] = None  # their own batching (a token budget on CUDA)
    if path == "default":
        return SentenceEncoder(MODEL, device=device, **{k: v for k, v in kw.items()
                                                        if k == "batch_size"}), None
    if kw["backend"] == "static":
        from embetter.text import TextEncoder

        return TextEncoder(), None
    if kw["backend"] in ("onnx", "openvino", "auto"):
        return SentenceEncoder(MODEL, **kw), None
    if path == "torch-qint8":
        import torch
        from sentence_transformers import SentenceTransformer

        from embetter.text._models import resolve_model

        model = SentenceTransformer(resolve_model(MODEL), device="cpu")
        model = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
        )
        return SentenceEncoder(model, **kw), None
    return SentenceEncoder(MODEL, device=device, **kw), (1 if path == "torch-1thread" else None)


def load_task(name: str, n_train: int, n_test: int | None):
    rng = np.random.default_rng(1)
    train = pd.read_csv(DATA / name / "train.csv")
    train = train.iloc[rng.permutation(len(train))[:n_train]]
    test = pd.read_csv(DATA / name / "test.csv")
    if n_test:
        test = test.iloc[rng.permutation(len(test))[:n_test]]
    return train.text.tolist(), train.label.to_numpy(), test.text.tolist(), test.label.to_numpy()


def accuracy(enc, threads, task) -> float:
    from sklearn.linear_model import LogisticRegression

    xtr, ytr, xte, yte = task
    with Threads(threads):
        Xtr, Xte = enc.transform(xtr), enc.transform(xte)
    clf = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
    return 100.0 * float((clf.predict(Xte) == yte).mean())


def proc_status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MiB. Not ru_maxrss: Linux carries that
    over from the parent across fork + exec, so a child would report the parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(path: str, device: str, n: int) -> None:
    """Child process: peak RSS above the post-import baseline while loading and encoding."""
    import embetter.text  # noqa: F401  (the baseline includes our own imports)

    before = proc_status_mb("VmRSS")
    enc, threads = make_encoder(path, device)
    with Threads(threads):
        enc.transform(load_texts(n))
    out = {"peak_mb": proc_status_mb("VmHWM") - before}
    if device.startswith("cuda"):
        import torch

        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def peak_memory(path: str, device: str, n: int) -> str:
    """Peak host MB of a fresh process running the path (and peak GPU MB on CUDA)."""
    # Bucketed batches run longest first, so a few hundred texts already show the peak.
    batch = ["--batch-size", str(BATCH_SIZE[0])] if EXPLICIT_BATCH[0] else []
    out = subprocess.run(
        [sys.executable, __file__, "--memory-probe", path, "--device", device, *batch,
         "--speed-texts", str(min(n, 500))],
        capture_output=True, text=True, check=True, env=os.environ.copy(),
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    gpu = f" / GPU {got['gpu_peak_mb']:.0f}" if "gpu_peak_mb" in got else ""
    return f"{got['peak_mb']:.0f}{gpu}"


def bench_paths(args) -> None:
    paths = args.paths.split(",")
    texts = load_texts(args.speed_texts)
    tasks = {name: load_task(name, args.train, args.test) for name in ("sst2", "ag_news")}
    encoders, first_use = {}, {}
    for p in paths:
        log(f"load: {p}")
        t, (enc, threads) = timed(lambda p=p: make_encoder(p, args.device))
        with Threads(threads):
            t2, _ = timed(lambda enc=enc: enc.transform(texts[:2]))
        encoders[p], first_use[p] = (enc, threads), t + t2
    # Interleaved rounds: every path sees the same machine load, round by round.
    times = {p: [] for p in paths}
    embeddings = {}
    for r in range(args.rounds):
        log(f"speed round {r + 1}/{args.rounds}")
        for p in paths:
            enc, threads = encoders[p]
            with Threads(threads):
                t, embeddings[p] = timed(lambda enc=enc: enc.transform(texts))
            times[p].append(t)
    ref = embeddings[paths[0]]
    rows, ref_acc = [], None
    for p in paths:
        log(f"accuracy and memory: {p}")
        enc, threads = encoders[p]
        same_space = embeddings[p].shape == ref.shape and p != "textencoder"
        cos = cosines(embeddings[p], ref) if same_space else np.full(1, np.nan)
        if ref_acc is not None and cos.min() >= 0.99999 and not args.all_accuracy:
            # The same numbers as the reference up to float noise: the same accuracy, so skip
            # re-encoding thousands of texts (marked "=" in the table).
            acc = {k: f"{v}=" for k, v in ref_acc.items()}
        else:
            acc = {name: f"{accuracy(enc, threads, task):.1f}" for name, task in tasks.items()}
            ref_acc = ref_acc or acc
        mem = "-" if args.no_memory else peak_memory(p, args.device, args.speed_texts)
        speed = len(texts) / np.median(times[p])
        rows.append([
            p, f"{speed:.0f}", f"{len(texts) / min(times[p]):.0f}",
            f"{min(times[paths[0]]) / min(times[p]):.2f}x",
            f"{first_use[p]:.1f}", mem, f"{cos.mean():.4f}" if same_space else "-",
            f"{cos.min():.4f}" if same_space else "-",
            acc["sst2"], acc["ag_news"], DESCRIBE[p],
        ])
    n_test = {k: len(v[3]) for k, v in tasks.items()}
    print(f"\n## Paths: {len(texts)} texts (half SST-2, half AG News), {args.rounds} interleaved "
          f"rounds, device={args.device}, batch_size={args.batch_size}; accuracy: "
          f"LogisticRegression on {args.train} train texts, tested on {n_test['sst2']} (SST-2) / "
          f"{n_test['ag_news']} (AG News)\n")
    print("first use: build + first transform (the ONNX rows export into an empty cache); "
          "peak MB: VmHWM of a fresh process loading the path and encoding <= 500 of the texts, "
          "above its RSS after `import embetter.text`; accuracy '=': numerically the reference "
          "(cos min >= 0.99999), not re-measured.\n")
    print(f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} after the paths\n")
    print(table(["path", "texts/s med", "best", "best vs ref", "first use s", "peak MB",
                 "cos mean", "cos min", "SST-2 %", "AG News %", "what"], rows))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32, help="for every path (GPUs: 256+)")
    ap.add_argument("--paths", default=None, help=f"comma-separated, from: {','.join(PATHS)}")
    ap.add_argument("--speed-texts", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train", type=int, default=1500, help="train texts per dataset")
    ap.add_argument("--test", type=int, default=None, help="test texts per dataset (all)")
    ap.add_argument("--overhead-texts", type=int, default=2000)
    ap.add_argument("--overhead-rounds", type=int, default=4)
    ap.add_argument("--cache-texts", type=int, default=10000)
    ap.add_argument("--cache-plain-encode", action="store_true",
                    help="also time encoding the cache texts without the cache")
    ap.add_argument("--only", default="paths,overhead,cache,auto")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    ap.add_argument("--all-accuracy", action="store_true",
                    help="also measure accuracy for paths numerically equal to the reference")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if "--quick" in argv:  # smaller defaults; sizes given explicitly still win
        ap.set_defaults(speed_texts=200, rounds=2, train=300, test=200, overhead_texts=200,
                        overhead_rounds=2, cache_texts=500)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    BATCH_SIZE[0] = args.batch_size
    EXPLICIT_BATCH[0] = any(a.startswith("--batch-size") for a in argv)
    if args.memory_probe:
        return memory_probe(args.memory_probe, args.device, args.speed_texts)
    if args.paths is None:
        args.paths = GPU_DEFAULT if args.device.startswith("cuda") else CPU_DEFAULT
    # A fresh export cache, so "first use" includes the one-off ONNX export of this recipe.
    cache = tempfile.TemporaryDirectory(prefix="embetter-bench-")
    os.environ["EMBETTER_CACHE_DIR"] = cache.name
    import torch

    print(f"# encode_speed: {os.cpu_count()} CPUs, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at start")
    from encode_auto import bench_auto  # beside this script
    from encode_wrapper import bench_cache, bench_overhead

    only = args.only.split(",")
    if "paths" in only:
        bench_paths(args)
    if "overhead" in only:
        bench_overhead(args)
    if "cache" in only:
        bench_cache(args)
    if "auto" in only:
        bench_auto(args)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    cache.cleanup()


if __name__ == "__main__":
    main()
