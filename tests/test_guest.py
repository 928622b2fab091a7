"""A library is a guest in its user's process (issue 25, point 2): after every public operation
the process-wide state it could touch is what it was before.

Each operation runs twice: once to import and initialise whatever it uses (libraries may set
their own loggers up on import), then again after every logger, torch's thread count and the
rest were set to unusual values. A change that is not put back shows up as a difference.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import warnings

import numpy as np
import pandas as pd
import pytest

SENTINEL_LEVEL = 37  # between WARNING and ERROR: no library picks it on its own


def _loggers():
    found = [logging.getLogger()]
    found += [lg for lg in logging.Logger.manager.loggerDict.values()
              if isinstance(lg, logging.Logger)]
    return found


def _snapshot():
    import torch

    return {
        "loggers": {lg.name: (lg.level, tuple(lg.handlers), lg.propagate, lg.disabled)
                    for lg in _loggers()},
        "gc": (gc.isenabled(), gc.get_freeze_count() > 0, gc.get_threshold()),
        "torch": (torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled(),
                  torch.is_inference_mode_enabled(),
                  torch.are_deterministic_algorithms_enabled()),
        "env": dict(os.environ),
        "python random": random.getstate(),
        "numpy random": np.random.get_state()[1].tobytes(),
        "torch random": torch.get_rng_state().numpy().tobytes(),
        "warnings": list(warnings.filters),
        "matplotlib": _matplotlib_state(),
    }


def _matplotlib_state():
    import sys

    if "matplotlib" not in sys.modules:
        return None
    import matplotlib

    return (matplotlib.get_backend(), dict(matplotlib.rcParams))


def _diff(before, after) -> list[str]:
    out = []
    for key in ("gc", "torch", "python random", "numpy random", "torch random", "warnings",
                "matplotlib"):
        if before[key] != after[key]:
            out.append(f"{key}: {before[key]!r:.150} -> {after[key]!r:.150}")
    env_keys = set(before["env"]) | set(after["env"])
    out += [f"env {k}: {before['env'].get(k)!r} -> {after['env'].get(k)!r}"
            for k in sorted(env_keys) if before["env"].get(k) != after["env"].get(k)]
    out += [f"logger {name!r}: {state} -> {after['loggers'].get(name)}"
            for name, state in before["loggers"].items() if after["loggers"].get(name) != state]
    return out


def _run_as_guest(operation):
    """Run `operation` with every setting at a sentinel; return what it left changed."""
    import torch

    # what the session had before anything ran: put back at the end, whatever the
    # operation (or the check's own sentinels) left
    threads = torch.get_num_threads()
    levels_before = {lg.name: lg.level for lg in _loggers()}
    saved_levels = dict(levels_before)
    try:
        operation()  # imports, lazily built state, first-use caches
        # garbage of earlier tests (a closed dask cluster removes its loggers' handlers when
        # collected) is swept now, not during the operation
        gc.collect()
        # loggers the first run created keep the level their library gave them
        saved_levels = {lg.name: lg.level for lg in _loggers()} | levels_before
        for lg in _loggers():
            lg.setLevel(SENTINEL_LEVEL)
        torch.set_num_threads(threads + 1)
        before = _snapshot()
        operation()
        return _diff(before, _snapshot())
    finally:
        torch.set_num_threads(threads)
        for lg in _loggers():
            lg.setLevel(saved_levels.get(lg.name, logging.NOTSET))


# -- the operations ------------------------------------------------------------------------------
def _labelled(corpus, n=42):
    texts = corpus[:n]
    return texts, [t.split()[1] for t in texts]  # label: the subject's noun


def _encode(backend):
    def op(ctx):
        from embetter.text import SentenceEncoder

        # a fresh cache folder per run: the ONNX export (and its quantiser) runs every time
        previous = os.environ.get("EMBETTER_CACHE_DIR")
        os.environ["EMBETTER_CACHE_DIR"] = str(ctx["tmp"] / f"cache-{ctx['run']}")
        try:
            SentenceEncoder(ctx["model"], device="cpu", backend=backend).transform(ctx["texts"])
        finally:  # the session's own value (conftest sets one) comes back
            if previous is None:
                del os.environ["EMBETTER_CACHE_DIR"]
            else:
                os.environ["EMBETTER_CACHE_DIR"] = previous
    return op


def _head(kind, stream):
    def op(ctx):
        from embetter.finetune import ContrastiveLearner, ContrastiveTuner, FeedForwardTuner

        rng = np.random.default_rng(0)
        X = rng.normal(size=(60, 8)).astype(np.float32)
        y = np.arange(60) % 3
        if kind == "learner":
            est = ContrastiveLearner(epochs=2, random_state=0)
            if stream:
                est.partial_fit(X[:30], X[30:], y[:30] % 2)
            else:
                est.fit(X[:30], X[30:], y[:30] % 2)
            return
        est = (FeedForwardTuner(n_epochs=2, random_state=0) if kind == "ff"
               else ContrastiveTuner(epochs=2, random_state=0))
        if stream:
            est.partial_fit(X, y, classes=[0, 1, 2])
        else:
            est.fit(X, y)
    return op


def _sbert(kind, stream):
    def op(ctx):
        from embetter.finetune import SbertLearner, SbertTuner

        texts, labels = _labelled(ctx["texts"], 24)
        if kind == "tuner":
            est = SbertTuner(ctx["model"], epochs=1, batch_size=8, device="cpu",
                             random_state=0)
            if stream:
                est.partial_fit(texts, labels, classes=sorted(set(labels)))
            else:
                est.fit(texts, labels)
            return
        est = SbertLearner(ctx["model"], epochs=1, batch_size=8, device="cpu", random_state=0)
        y = [float(a == b) for a, b in zip(labels[:12], labels[12:])]
        if stream:
            est.partial_fit(texts[:12], texts[12:], y)
        else:
            est.fit(texts[:12], texts[12:], y)
    return op


def _distil(ctx):
    from embetter.text import TextEncoder, _distill

    folder = ctx["tmp"] / f"m2v-{ctx['run']}"
    _distill.distill(ctx["model"], pca_dims=16).save_pretrained(str(folder))
    TextEncoder(str(folder), train_on_fit=True, teacher=ctx["model"],
                random_state=0).fit(ctx["texts"])


def _cli(*args):
    def op(ctx):
        from embetter.cli import main

        texts, labels = _labelled(ctx["texts"])
        d = ctx["tmp"] / f"cli-{ctx['run']}"
        d.mkdir()
        pd.DataFrame({"text": texts, "label": labels}).to_csv(d / "train.csv", index=False)
        names = {"MODEL": ctx["model"], "DIR": str(d)}
        argv = [a.format(**names) for a in args]
        assert main(argv) == 0, argv
        if argv[0] == "finetune":
            assert main(["transform", f"{d}/ff.skops", f"{d}/train.csv", "--text-col", "text",
                         "--out", f"{d}/t.npy"]) == 0
    return op


OPERATIONS = {
    "encode-torch": _encode("torch"),
    "encode-pipelined": _encode("pipelined"),
    "encode-onnx": _encode("onnx"),
    "encode-openvino": _encode("openvino"),
    "encode-auto": _encode("auto"),
    "feedforward-fit": _head("ff", False),
    "feedforward-partial_fit": _head("ff", True),
    "contrastive-tuner-fit": _head("ct", False),
    "contrastive-tuner-partial_fit": _head("ct", True),
    "contrastive-learner-fit": _head("learner", False),
    "contrastive-learner-partial_fit": _head("learner", True),
    "sbert-tuner-fit": _sbert("tuner", False),
    "sbert-tuner-partial_fit": _sbert("tuner", True),
    "sbert-learner-fit": _sbert("learner", False),
    "sbert-learner-partial_fit": _sbert("learner", True),
    "text-encoder-distil-and-train": _distil,
    "cli-embed": _cli("embed", "{DIR}/train.csv", "--text-col", "text", "--model", "{MODEL}",
                      "--out", "{DIR}/x.npy"),
    "cli-finetune-transform": _cli("finetune", "{DIR}/train.csv", "--text-col", "text",
                                   "--label-col", "label", "--model", "{MODEL}", "--out",
                                   "{DIR}/ff.skops"),
    "cli-demo": _cli("demo", "--data", "{DIR}/train.csv", "--model", "{MODEL}", "--out",
                     "{DIR}/plots", "--seed", "0"),
    "cli-project": _cli("project", "{DIR}/train.csv", "--text-col", "text", "--model",
                        "{MODEL}", "--out", "{DIR}/map.csv"),
}


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_public_operations_leave_global_state_as_they_found_it(name, tiny_model_path, corpus,
                                                               tmp_path):
    ctx = {"model": tiny_model_path, "texts": corpus[::8][:40], "tmp": tmp_path, "run": 0}

    def operation():
        ctx["run"] += 1
        OPERATIONS[name](ctx)

    changed = _run_as_guest(operation)
    assert not changed, f"{name} left global state changed:\n" + "\n".join(changed)


def test_the_check_sees_a_logger_left_changed():
    def rude():
        logging.getLogger("some.library").setLevel(logging.CRITICAL)

    import torch

    logging.getLogger("some.library")
    threads = torch.get_num_threads()
    assert any("some.library" in d for d in _run_as_guest(rude))
    assert any("torch" in d for d in _run_as_guest(lambda: torch.set_num_threads(1)))
    # and the check itself leaves the session as it found it
    assert logging.getLogger("some.library").level == logging.NOTSET
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("transformers_on", [True, False])
@pytest.mark.parametrize("hub_on", [True, False])
def test_progress_bars_off_puts_both_switches_back_as_they_were(transformers_on, hub_on):
    """transformers' switch also flips huggingface_hub's: each comes back to its own state,
    whatever the combination was (the hub's stayed off when only transformers' was off)."""
    from huggingface_hub import utils as hub
    from transformers.utils import logging as hf_logging

    from embetter._st import progress_bars_off

    was = hf_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled()
    try:
        (hf_logging.enable_progress_bar if transformers_on else hf_logging.disable_progress_bar)()
        (hub.enable_progress_bars if hub_on else hub.disable_progress_bars)()
        with progress_bars_off():
            assert not hf_logging.is_progress_bar_enabled() and hub.are_progress_bars_disabled()
        assert hf_logging.is_progress_bar_enabled() == transformers_on
        assert hub.are_progress_bars_disabled() == (not hub_on)
    finally:
        (hf_logging.enable_progress_bar if was[0] else hf_logging.disable_progress_bar)()
        (hub.disable_progress_bars if was[1] else hub.enable_progress_bars)()
