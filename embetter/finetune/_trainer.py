"""Run sentence-transformers' `SentenceTransformerTrainer` the way our learners need it.

One call trains a model on a dataset with a loss and hands back what happened, epoch by
epoch. Around the Trainer: checkpoints go to a temporary directory (nothing is saved), the
caller's global random state is given back, the end-of-training garbage sweep only visits
what training made, and frozen parameters are restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from dataclasses import dataclass, field

import numpy as np


@contextlib.contextmanager
def old_objects_frozen():
    """Keep the objects that exist now out of the garbage collector's sweeps for a while.

    The Trainer (through accelerate) runs a full `gc.collect()` when training ends, which walks
    every object of the process: about 0.4 s with torch and transformers loaded, a large share
    of a few-shot fit. Objects made before training are not garbage of the training, so they
    are frozen (`gc.freeze`) and the sweep only visits what training made. A caller's own
    freeze is left as it is.
    """
    import gc

    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def frozen(parameters):
    """Exclude `parameters` from training (the optimizer is built inside) and restore them."""
    changed = [p for p in parameters if p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


@contextlib.contextmanager
def global_rng_kept():
    """The Trainer seeds python, numpy and torch globally; give the caller its state back."""
    import random

    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@dataclass
class Schedule:
    """How to train: epochs, batch size, peak learning rate and its warm-up, the seed."""

    epochs: int
    batch_size: int
    learning_rate: float
    warmup_ratio: float
    seed: int
    device: object = None
    batch_sampler: str = "batch_sampler"
    frozen: list = field(default_factory=list)
    progress: bool = False
    #: the optimizer state a previous call left (AdamW's moments): continue it, no warm-up
    optimizer_state: dict | None = None


def train(model, dataset, loss, schedule: Schedule, on_epoch_end=None) -> tuple[int, list, dict]:
    """Train `model` in place; return the optimizer steps taken, one dict per epoch and the
    optimizer's final state (on the CPU), for a later call to continue.

    Each dict holds `epoch` (counted within this call), `step` and `train_loss` (the mean
    loss of the epoch), plus whatever `on_epoch_end(model)` returns (e.g. validation scores).
    With `schedule.optimizer_state` the optimizer resumes from it (a stream of calls keeps
    Adam's moments instead of restarting them with a full-size first step each call) and
    skips the warm-up; a state that does not fit the trained parameters is ignored.
    """
    from embetter import _st
    from embetter._torch import resolve_device, to_cpu

    steps_per_epoch = math.ceil(len(dataset) / schedule.batch_size)
    warmup = math.ceil(schedule.warmup_ratio * steps_per_epoch * schedule.epochs)
    if schedule.optimizer_state is not None:
        warmup = 0
    with (
        global_rng_kept(),
        old_objects_frozen(),
        tempfile.TemporaryDirectory(prefix="embetter-sbert-") as tmp,
        frozen(schedule.frozen),
    ):
        run = _st.run_trainer(
            model, dataset, loss, output_dir=tmp, device=resolve_device(schedule.device),
            epochs=schedule.epochs, batch_size=schedule.batch_size,
            learning_rate=schedule.learning_rate, warmup_steps=warmup, seed=schedule.seed,
            batch_sampler=schedule.batch_sampler, progress=schedule.progress,
            optimizer_state=schedule.optimizer_state, on_epoch_end=on_epoch_end,
        )
    model.eval()
    state = to_cpu(run.optimizer_state) if run.optimizer_state is not None else None
    return run.steps, run.epochs, state
