"""Run sentence-transformers' `SentenceTransformerTrainer` the way our learners need it.

One call trains a model on a dataset with a loss and hands back what happened, epoch by
epoch. Around the Trainer: checkpoints go to a temporary directory (nothing is saved), the
caller's global random state is given back, the end-of-training garbage sweep only visits
what training made, and frozen parameters are restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import tempfile
from dataclasses import dataclass, field

import numpy as np
from sklearn.utils import check_random_state


def seed_from(random_state) -> int:
    """An int seed for torch/transformers; `None` draws a fresh one, like sklearn does."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state) % (2**32)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


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
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from transformers import PrinterCallback, TrainerCallback

    from embetter._torch import resolve_device, to_cpu

    class _Trainer(SentenceTransformerTrainer):
        # The model card callback stores datasets and losses on the model (and tokenizes
        # samples for statistics); we save no card, so skip that work and those references.
        def add_model_card_callback(self, default_args_dict):
            pass

        def create_optimizer(self, *args, **kwargs):
            optimizer = super().create_optimizer(*args, **kwargs)
            resume_optimizer(optimizer, schedule.optimizer_state, schedule.learning_rate)
            return optimizer

    epochs = []

    class _History(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            entry = {"epoch": int(round(state.epoch or 0)), "step": int(state.global_step)}
            if on_epoch_end is not None:
                was_training = model.training
                entry.update(on_epoch_end(model))
                model.train(was_training)
            epochs.append(entry)

    steps_per_epoch = math.ceil(len(dataset) / schedule.batch_size)
    warmup = math.ceil(schedule.warmup_ratio * steps_per_epoch * schedule.epochs)
    if schedule.optimizer_state is not None:
        warmup = 0
    device = resolve_device(schedule.device)
    with (
        global_rng_kept(),
        old_objects_frozen(),
        tempfile.TemporaryDirectory(prefix="embetter-sbert-") as tmp,
    ):
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=schedule.epochs,
            per_device_train_batch_size=schedule.batch_size,
            learning_rate=schedule.learning_rate,
            warmup_steps=warmup,
            lr_scheduler_type="linear",
            seed=schedule.seed,
            data_seed=schedule.seed,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="epoch",
            report_to="none",
            disable_tqdm=not schedule.progress,
            use_cpu=device.type == "cpu",
            dataloader_num_workers=0,
            batch_sampler=schedule.batch_sampler,
        )
        trainer = _Trainer(
            model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[_History()]
        )
        # without progress bars, transformers prints every log dict to stdout instead
        trainer.remove_callback(PrinterCallback)
        with frozen(schedule.frozen):
            trainer.train()
        steps = int(trainer.state.global_step)
        # the epoch loss is logged after on_epoch_end: attach the last one per epoch
        losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
        for entry, value in zip(epochs, losses):
            entry["train_loss"] = value
        state = to_cpu(trainer.optimizer.state_dict()) if trainer.optimizer else None
        del trainer
    model.eval()
    return steps, epochs, state


def resume_optimizer(optimizer, state, learning_rate: float) -> None:
    """Load `state` into `optimizer` when its parameter groups have the same sizes; the
    learning rate stays `learning_rate` (a state saved at the end of a decay holds 0)."""
    if state is None:
        return
    sizes = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != [len(g["params"]) for g in state["param_groups"]]:
        return  # e.g. freeze_embeddings changed between calls: start afresh
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = float(learning_rate)
