"""Table 4 of benchmarks/encode_speed.py (`--only auto`): which path `backend="auto"` picked on
this machine, from which timings, at what cost, and auto against the default side by side;
run it through encode_speed.py, whose docstring has the protocol."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_common import MODEL, cosines, load_texts, log, table, timed  # noqa: E402


def bench_auto(args) -> None:
    """The auto probe on this machine, its cost, and auto vs the default over the same texts."""
    from embetter.text import SentenceEncoder

    texts = load_texts(args.speed_texts, seed=4)
    log("auto: first use (empty cache: the probe, plus one-off exports)")
    auto = SentenceEncoder(MODEL, device=args.device, backend="auto")
    t_first, _ = timed(lambda: auto.transform(texts[:2]))
    probe = auto.backend_probe_
    log("auto: second use (a new encoder in the same process reads the cached choice)")
    again = SentenceEncoder(MODEL, device=args.device, backend="auto")
    t_again, _ = timed(lambda: again.transform(texts[:2]))
    default = SentenceEncoder(MODEL, device=args.device)
    default.transform(texts[:2])
    times = {"default": [], "auto": []}
    out = {}
    for r in range(args.rounds):
        log(f"auto vs default, round {r + 1}/{args.rounds}")
        pair = [("default", default), ("auto", auto)]
        for name, enc in pair if r % 2 == 0 else pair[::-1]:
            t, out[name] = timed(lambda enc=enc: enc.transform(texts))
            times[name].append(t)
    cos = cosines(out["auto"], out["default"])
    cpu = _cpu_summary()
    print(f"\n## backend='auto' on this machine: {cpu}\n")
    rows = []
    for label, speed in probe["texts_per_second"].items():
        mark = " <- chosen" if label == _label(probe["choice"]) else ""
        mark += " (default)" if label == _label(probe["default"]) else ""
        rows.append([label + mark, f"{speed:.0f}", f"{probe['cosine_mean'][label]:.4f}",
                     f"{probe['cosine_min'][label]:.4f}",
                     f"{probe['setup_seconds'].get(label, 0):.1f}"])
    for label, error in probe["errors"].items():
        rows.append([label, "-", "-", "-", error[:60]])
    print(f"probe: {probe['texts']} support-inbox texts, {probe['rounds']} interleaved rounds "
          f"(best of each), {probe['seconds']:.1f} s timing + "
          f"{sum(probe['setup_seconds'].values()):.1f} s setup (model loads, one-off ONNX "
          f"exports); load average {probe['load_average']} during the probe\n")
    print(table(["candidate", "texts/s (probe)", "cos mean", "cos min", "setup s"], rows))
    print(f"\nfirst use (probe + setup + 2 texts): {t_first:.1f} s; a later encoder on this "
          f"machine (cached choice): {t_again:.2f} s, cached={again.backend_probe_['cached']}")
    rows = [[name, f"{len(texts) / np.median(t):.0f}", f"{len(texts) / min(t):.0f}",
             f"{min(times['default']) / min(t):.2f}x"] for name, t in times.items()]
    print(f"\nauto ({_label(probe['choice'])}) vs the default SentenceEncoder() on "
          f"{len(texts)} texts (half SST-2, half AG News), {args.rounds} interleaved rounds; "
          f"cosine auto to default: mean {cos.mean():.4f}, min {cos.min():.4f}; "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} after\n")
    print(table(["path", "texts/s med", "best", "best vs default"], rows))


def _label(plan: dict) -> str:
    from embetter.text._backends.auto import Plan

    return Plan.from_dict(plan).label


def _cpu_summary() -> str:
    """The CPU model and the instruction-set flags that decide the fast paths."""
    from embetter.text._backends import cpu_flags
    from embetter.text._backends.auto import cpu_model

    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
              "amx_int8"]
    flags = cpu_flags()
    have = [f for f in wanted if f in flags]
    return (f"{cpu_model()}, {os.cpu_count()} CPUs, flags: {' '.join(have) or 'none of'} "
            f"(of {', '.join(wanted)})")
