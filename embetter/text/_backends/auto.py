"""`backend="auto"`: time the paths this machine can run, keep the fastest one that stays within
cosine 0.99 of float32, and remember the choice per machine and model.

The probe encodes 16 to 256 bundled texts on a CPU, more on a GPU (the support inbox, sized
from the default path's speed) with every candidate, in
interleaved rounds (best time of each, so a busy neighbour slows all candidates alike), and
keeps the default path unless another is clearly faster: `auto` is never slower than the default
beyond the probe's noise. The choice is saved as a small JSON file under
`$EMBETTER_CACHE_DIR/auto/` (written atomically), keyed by the CPU and GPU model, library
versions and the model's fingerprint; a corrupt or foreign file is ignored and measured again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np

from embetter.text._backends import _choices, row_cosines
from embetter.text._backends._choices import cache_file, cache_key, cpu_model, model_fingerprint

__all__ = ["Plan", "candidates", "choose", "run_probe", "resolve", "read_choice",
           "write_choice", "cache_file", "cache_key", "cpu_model", "model_fingerprint"]

log = logging.getLogger("embetter")

#: A candidate must keep this mean cosine to float32 on the probe texts.
MIN_COSINE = 0.99
#: A candidate replaces the default only when at least this much faster (probe noise).
MARGIN = 0.05
#: Seconds of timing the probe may spend (setup, such as a one-off ONNX export, not included).
BUDGET_S = 6.0
#: How long a process waits for another one's probe of the same model (exports included)
#: before it measures itself.
PROBE_WAIT_S = 180.0
#: A candidate whose warm-up ran this many times slower than the default's is not timed.
SCREEN = 2.0
#: Probe texts: at least this many, at most MAX_TEXTS[device kind] (sized to fit the budget).
MIN_TEXTS = 16
MAX_TEXTS = {"cpu": 256, "mps": 1024, "cuda": 8192}
MAX_ROUNDS = 3
#: The padded-token budgets per batch the probe tries on CUDA (the default among them).
CUDA_TOKEN_BUDGETS = (8192, 32768, 131072)


@dataclasses.dataclass(frozen=True)
class Plan:
    """One way to run the model: a backend, its precision (None: the backend's default) and,
    for the pipelined loop, a padded-token budget per batch (None: `batch_size` texts)."""

    backend: str
    precision: str | None = None
    max_tokens: int | None = None

    @property
    def label(self) -> str:
        words = [self.backend] + ([self.precision] if self.precision else [])
        if self.max_tokens:
            words.append(f"{self.max_tokens}-token batches")
        return " ".join(words)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data) -> Plan:
        """A plan from its dict, or a ValueError when it is not one this version can run."""
        from embetter.text._backends import PRECISIONS

        if not isinstance(data, dict) or set(data) != {"backend", "precision", "max_tokens"}:
            raise ValueError(f"not a plan: {data!r:.200}")
        plan = cls(data["backend"], data["precision"], data["max_tokens"])
        if not isinstance(plan.backend, str) or not isinstance(plan.precision, (str, type(None))):
            raise ValueError(f"not a plan: {data!r:.200}")  # (a list is no key to look up)
        if plan.backend not in PRECISIONS or plan.backend in ("auto", None):
            raise ValueError(f"unknown backend in plan: {plan.backend!r}")
        if plan.precision not in PRECISIONS[plan.backend]:
            raise ValueError(f"unknown precision in plan: {plan.precision!r}")
        tokens = plan.max_tokens
        if tokens is not None and (not isinstance(tokens, int) or isinstance(tokens, bool)
                                   or tokens < 1):
            raise ValueError(f"bad max_tokens in plan: {tokens!r}")
        return plan


REFERENCE = Plan("torch")  # float32 sentence-transformers: what every cosine is measured to


def default_plan(kind: str, batch_size) -> Plan:
    """What `backend=None` runs: sentence-transformers on CPUs (and MPS); on CUDA the
    pipelined loop (float16 when it holds cosine 0.999) fed by a token budget when
    `batch_size` is None."""
    from embetter.text._backends.pipelined import CUDA_MAX_TOKENS

    if kind == "cuda":
        return Plan("pipelined", None, CUDA_MAX_TOKENS if batch_size is None else None)
    return REFERENCE


def native_bfloat16(flags) -> bool:
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))


def candidates(kind: str, batch_size, flags=frozenset(), installed=frozenset()) -> list[Plan]:
    """The plans worth timing on a device of this kind, the default first.

    Arguments:
        kind: `"cpu"`, `"cuda"` or `"mps"`.
        batch_size: the encoder's `batch_size` (None: the device's default batching).
        flags: the CPU's instruction-set flags (bfloat16 is tried only where it is native).
        installed: the optional runtimes present (`"onnxruntime"`, `"onnx"`, `"openvino"`).
    """
    default = default_plan(kind, batch_size)
    if kind == "cuda":
        plans = [default, REFERENCE]
        if batch_size is None:
            plans += [Plan("pipelined", None, t) for t in CUDA_TOKEN_BUDGETS]
        plans.append(Plan("pipelined", "float32", default.max_tokens))
    elif kind == "mps":
        plans = [default, Plan("pipelined", "float32"), Plan("pipelined", "float16")]
    else:
        plans = [default, Plan("pipelined", "float32")]
        if native_bfloat16(flags):
            plans.append(Plan("pipelined", "bfloat16"))
        if {"onnxruntime", "onnx"} <= set(installed):
            plans.append(Plan("onnx", "int8"))
            if "openvino" in installed:
                plans.append(Plan("openvino", "float32"))
    return list(dict.fromkeys(plans))


def choose(default: Plan, seconds: dict, cosines: dict, min_cosine: float = MIN_COSINE,
           margin: float = MARGIN) -> Plan:
    """The fastest plan whose cosine to float32 is `>= min_cosine`; the default unless another
    takes less than `(1 - margin)` of its time (so ties and noise go to the default).

    Arguments:
        default: the plan that runs without `auto`; always allowed.
        seconds: plan -> its best time on the probe texts (plans missing here were not run).
        cosines: plan -> its mean cosine to the float32 reference on the same texts.
        min_cosine: the closeness a candidate must keep.
        margin: how much faster than the default a candidate must be.

    Usage:

    ```python
    from embetter.text._backends.auto import Plan, choose

    torch, onnx, bf16 = Plan("torch"), Plan("onnx", "int8"), Plan("pipelined", "bfloat16")
    seconds = {torch: 2.0, onnx: 0.5, bf16: 0.4}
    assert choose(torch, seconds, {torch: 1.0, onnx: 0.995, bf16: 0.98}) == onnx
    assert choose(torch, {torch: 2.0, onnx: 1.95}, {onnx: 0.995}) == torch  # a tie
    ```
    """
    if default not in seconds:
        return default
    limit = seconds[default] * (1.0 - margin)
    best, best_s = default, seconds[default]
    for plan, s in seconds.items():
        if plan == default or cosines.get(plan, -1.0) < min_cosine:
            continue
        if s < limit and s < best_s:
            best, best_s = plan, s
    return best


# -- the probe ------------------------------------------------------------------------------------
def probe_pool() -> list[str]:
    """The bundled probe texts: the support inbox (638 short messages, fixed order)."""
    from embetter.datasets import load_support_inbox

    return list(load_support_inbox()[0])


def _build_runners(build, plans, pool, report: dict, clock) -> tuple[dict, dict]:
    """Each plan that builds and runs here: `({plan: run}, {plan: warm-up seconds})`, its
    setup seconds (build and warm-up) or its error in `report`. The reference must build."""
    runners, warm = {}, {}
    for plan in plans:
        t0 = clock()
        try:
            run = build(plan)
            t1 = clock()
            run(pool[:8])  # first-call costs (sessions, thread pools) are setup, not speed
            warm[plan] = clock() - t1
        except Exception as e:
            if plan == REFERENCE:
                raise
            report["errors"][plan.label] = f"{type(e).__name__}: {str(e)[:200]}"
            log.debug("backend='auto': %s cannot run here: %s", plan.label, e)
            continue
        report["setup_seconds"][plan.label] = round(clock() - t0, 3)
        runners[plan] = run
    return runners, warm


def run_probe(build, plans, *, kind: str = "cpu", budget_s: float = BUDGET_S, pool=None,
              clock=time.perf_counter) -> tuple[Plan, dict]:
    """Time every plan on the probe texts and choose one; returns `(plan, report)`.

    `build(plan)` returns a function `texts -> embeddings` (building the engine: a one-off
    export counts as setup, reported apart from the timing). The float32 reference
    (`Plan("torch")`, what cosines compare to) must build; another plan that fails to build is
    left out (its error is reported), the default (`plans[0]`) too, which the reference then
    replaces. The number of texts is sized from the default's speed so that timing stays
    within `budget_s`; the first round goes fastest warm-up first; after it only the plans
    that could still win run again, and a later round runs only when it fits the budget.
    Leaving the default needs two rounds of both: a confirming round of the two may run past
    the budget.
    """
    plans = list(plans)
    default = plans[0]
    pool = probe_pool() if pool is None else list(pool)
    report = {"setup_seconds": {}, "errors": {}}
    runners, warm = _build_runners(build, plans, pool, report, clock)
    if default not in runners:  # e.g. no fast tokenizer for the pipelined CUDA default
        default = REFERENCE
    reference = REFERENCE if REFERENCE in runners else default  # what cosines compare to
    # Size the probe from the default's warm-up speed: a first round of every plan should
    # take about half the budget if all were as fast as the default.
    rate = 8 / max(warm[default], 1e-6)
    n = round(rate * budget_s / (2 * len(runners)))
    n = max(MIN_TEXTS, min(MAX_TEXTS.get(kind, MAX_TEXTS["cpu"]), n))
    texts = [pool[i % len(pool)] for i in range(n)]

    times: dict = {p: [] for p in runners}
    first: dict = {}
    # The first round goes fastest warm-up first (after the default and the reference): on a
    # loaded machine, the budget then runs out on the slow candidates, not the fast ones.
    order = list(dict.fromkeys([default, reference, *sorted(runners, key=warm.get)]))
    start = clock()
    for rnd in range(MAX_ROUNDS):
        # A later round runs whole or not at all (every plan in it gets the same number of
        # tries), and only when its expected length still fits the budget.
        if rnd and clock() - start + sum(min(times[p]) for p in order) > budget_s:
            break
        # Rotate who goes first, so no plan always runs right after the same neighbour.
        for plan in order[rnd % len(order):] + order[: rnd % len(order)]:
            if rnd == 0 and plan not in (default, reference):
                if warm[plan] > SCREEN * warm[default]:
                    report["errors"][plan.label] = (
                        f"not timed: its warm-up ran {warm[plan] / warm[default]:.1f}x slower "
                        "than the default's")
                    continue
                if clock() - start > budget_s:
                    report["errors"][plan.label] = "not timed: the probe's budget was spent"
                    continue
            t0 = clock()
            out = runners[plan](texts)
            times[plan].append(clock() - t0)
            if rnd == 0:
                first[plan] = np.asarray(out, dtype=np.float32)
        best = {p: min(t) for p, t in times.items() if t}
        ref = first[reference]
        rows = {p: row_cosines(e, ref) for p, e in first.items()}
        cosines = {p: float(c.mean()) for p, c in rows.items()}
        mins = {p: float(c.min()) for p, c in rows.items()}
        fastest = min([best[default]] + [s for p, s in best.items()
                                          if cosines.get(p, -1) >= MIN_COSINE])
        # Another round for the default and the plans that could still beat it.
        order = [p for p in order if p == default or (
            p in best and cosines.get(p, -1) >= MIN_COSINE and best[p] < best[default]
            and best[p] <= 1.3 * fastest)]
        if len(order) == 1:
            break
    choice = choose(default, best, cosines)
    if choice != default and min(len(times[default]), len(times[choice])) < 2:
        # Leaving the default takes two rounds of both (one round may have caught a busy
        # neighbour), even past the budget: one more round of just these two.
        for plan in (choice, default):
            t0 = clock()
            runners[plan](texts)
            times[plan].append(clock() - t0)
        best = {p: min(t) for p, t in times.items() if t}
        choice = choose(default, best, cosines)
    report.update({
        "choice": choice.to_dict(),
        "default": default.to_dict(),
        "texts": n,
        "rounds": max(len(t) for t in times.values()),
        "seconds": round(clock() - start, 3),
        "texts_per_second": {p.label: round(n / s, 1) for p, s in best.items()},
        "cosine_mean": {p.label: round(c, 5) for p, c in cosines.items()},
        "cosine_min": {p.label: round(c, 5) for p, c in mins.items()},
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    })
    return choice, report


# -- the cache (embetter/text/_backends/_choices.py) ---------------------------------------------
def read_choice(path: Path, key: dict, allowed) -> tuple[Plan, dict] | None:
    """The cached `(plan, report)` for `key`, or None when missing, unreadable, corrupt, made
    for another key, or naming a plan that is not a candidate here now."""
    data = _choices.load(path, key)
    if data is None:
        return None
    try:
        plan, report = Plan.from_dict(data["choice"]), data["probe"]
    except (KeyError, ValueError) as e:
        log.debug("backend='auto': ignoring the unusable choice cache %s: %s", path, e)
        return None
    return (plan, report) if plan in allowed and isinstance(report, dict) else None


def write_choice(path: Path, key: dict, plan: Plan, report: dict) -> bool:
    """Save the choice atomically; False (and a warning) when the cache is not writable."""
    return _choices.save(path, {"key": key, "choice": plan.to_dict(), "probe": report})


def resolve(name, kind: str, batch_size, build, *, gpu=None, flags=frozenset(),
            installed=frozenset(), budget_s: float | None = None, clock=time.perf_counter
            ) -> tuple[Plan, dict]:
    """The plan `backend="auto"` runs for this model here: cached, else measured and cached.

    Returns `(plan, report)`; the report holds the probe's timings, cosines and costs, plus
    `cached` and `cache_file`.
    """
    plans = candidates(kind, batch_size, flags, installed)
    key = cache_key(kind, batch_size, model_fingerprint(name), gpu, flags, plans)
    path = cache_file(key)
    hit = read_choice(path, key, plans)
    if hit is None:
        # processes that ask together (joblib's workers): the first measures, the others
        # wait for its choice instead of timing the paths against each other's load
        with _one_probe_at_a_time(path):
            hit = read_choice(path, key, plans)
            if hit is None:
                return _measure_and_keep(path, key, plans, build, kind, budget_s, clock)
    plan, report = hit
    log.info("backend='auto' runs %s (measured earlier on this machine: %s)", plan.label, path)
    return plan, {**report, "cached": True, "cache_file": str(path)}


@contextlib.contextmanager
def _one_probe_at_a_time(path: Path):
    """Hold the lock file beside the choice `path` (`filelock`) while measuring; where it
    cannot be taken (a cache folder this process cannot write) or is held longer than
    `PROBE_WAIT_S`, measure all the same."""
    from filelock import FileLock, Timeout

    lock, held = FileLock(f"{path}.lock"), False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=PROBE_WAIT_S)
        held = True
    except (Timeout, OSError, NotImplementedError) as e:  # (filelock < 4: a file system
        # without flock)
        log.debug("backend='auto': measuring without the probe lock %s: %s", lock.lock_file, e)
    try:
        yield
    finally:
        if held:
            lock.release()


def _measure_and_keep(path, key, plans, build, kind, budget_s, clock):
    """Measure the candidate paths, and keep the choice where the probe timed them all."""
    budget_s = BUDGET_S if budget_s is None else budget_s
    plan, report = run_probe(build, plans, kind=kind, budget_s=budget_s, clock=clock)
    untimed = [label for label, error in report["errors"].items() if "budget" in error]
    if untimed:
        # A probe that could not time every candidate (a loaded machine, a slow model) is
        # not remembered: the next process measures again.
        log.info("backend='auto' did not time %s within its budget: choice not cached",
                 ", ".join(untimed))
    else:
        write_choice(path, key, plan, report)
    speed = report["texts_per_second"]
    setup = sum(report["setup_seconds"].values())
    log.info(
        "backend='auto' measured %d paths on %d texts in %.1f s (setup, once per machine: "
        "%.1f s): runs %s at %.0f texts/s (default %s: %.0f texts/s)", len(speed),
        report["texts"], report["seconds"], setup, plan.label, speed[plan.label],
        plans[0].label, speed.get(plans[0].label, float("nan")),  # nan: the default failed
    )
    return plan, {**report, "cached": False, "cache_file": str(path)}
