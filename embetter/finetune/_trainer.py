"""The training loop of the SBERT learners: rows of positions into distinct texts, one pass each.

A training row is a pair (or a triplet) of positions into a list of distinct texts, with a
target. Each batch encodes its distinct texts once, hands the loss their embeddings gathered
by position, and takes one AdamW step (linear warm-up, then linear decay to zero; gradients
clipped to norm 1), as sentence-transformers' Trainer trains with its defaults. The texts are
tokenised once per call; a batch takes its rows, trimmed to its longest text. Dropout and the
data order are seeded without touching the caller's random state.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from embetter import _st

_TOKEN_KEYS = {"input_ids", "attention_mask", "token_type_ids"}
#: Gradients are clipped to this norm (the Trainer's `max_grad_norm`).
MAX_GRAD_NORM = 1.0


@dataclass
class Rows:
    """Training rows: `columns` of positions into `texts` (anchor, other[, negative]) and the
    rows' `targets` (`None` where the loss needs none, e.g. in-batch negatives)."""

    texts: list
    columns: list
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.columns[0])


@dataclass
class Schedule:
    """How to train: epochs, batch size, peak learning rate and its warm-up, the seed."""

    epochs: int
    batch_size: int
    learning_rate: float
    warmup_ratio: float
    seed: int
    device: object = None
    #: no batch holds one text twice (in-batch negatives: a copy would be a false negative)
    no_duplicates: bool = False
    frozen: list = field(default_factory=list)
    progress: bool = False
    #: the optimizer state a previous call left (AdamW's moments): continue it, no warm-up
    optimizer_state: dict | None = None


@contextlib.contextmanager
def frozen(parameters):
    """Exclude `parameters` from training and restore them afterwards."""
    changed = [p for p in parameters if p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


def batches(rows: Rows, batch_size: int, generator, no_duplicates: bool) -> list:
    """The row numbers of each batch of one epoch, in a random order.

    With `no_duplicates`, a batch skips a row whose texts it already holds (the row waits for
    a later batch), as sentence-transformers' `NoDuplicatesBatchSampler` does.
    """
    order = torch.randperm(len(rows), generator=generator).numpy()
    if not no_duplicates:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    columns = np.stack(rows.columns, axis=1)
    out, remaining = [], list(order)
    while remaining:
        batch, seen, later = [], set(), []
        for k, r in enumerate(remaining):
            if len(batch) == batch_size:  # full: the rest wait, in order (linear per batch)
                later.extend(remaining[k:])
                break
            texts = set(columns[r].tolist())
            if texts & seen:
                later.append(r)
            else:
                batch.append(r)
                seen |= texts
        out.append(np.asarray(batch))
        remaining = later
    return out


class Tokens:
    """The texts' model inputs: tokenised once and sliced per batch, or (for inputs that do not
    slice, such as a static model's offsets) tokenised per batch."""

    def __init__(self, model, texts, device):
        self.model, self.texts, self.device = model, texts, device
        self.all = None
        tokenizer = getattr(model, "tokenizer", None)
        if getattr(tokenizer, "padding_side", None) == "right":
            inputs = _st.model_inputs(model, texts)
            tensors = {k for k, v in inputs.items() if isinstance(v, torch.Tensor)}
            if ({"input_ids", "attention_mask"} <= tensors <= _TOKEN_KEYS
                    and all(inputs[k].ndim == 2 for k in tensors)):
                self.all = inputs  # kept on the CPU: a batch's rows go to the device
                self.lengths = inputs["attention_mask"].sum(dim=1)

    def take(self, positions: np.ndarray) -> dict:
        if self.all is None:
            inputs = _st.model_inputs(self.model, [self.texts[i] for i in positions])
            return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                    for k, v in inputs.items()}
        rows = torch.as_tensor(positions)
        width = int(self.lengths[rows].max())
        return {k: v[rows, :width].to(self.device) if isinstance(v, torch.Tensor) else v
                for k, v in self.all.items()}


def _adamw(params, learning_rate: float):
    """AdamW without weight decay, fused where torch has it for these tensors (the Trainer's
    default optimizer since torch 2.8; one kernel per step instead of one per tensor)."""
    try:
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0, fused=True)
    except (RuntimeError, ValueError):  # an older torch, or a device without the fused kernel
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)


def _schedule(optimizer, warmup: int, total: int):
    """Linear warm-up over `warmup` steps, then linear decay to 0 at `total` (the Trainer's)."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batch_loss(model, tokens: Tokens, rows: Rows, batch, loss):
    """The loss of the rows `batch`: their distinct texts encoded once, gathered per column."""
    picked = [c[batch] for c in rows.columns]
    positions, inverse = np.unique(np.concatenate(picked), return_inverse=True)
    embedded = model(tokens.take(positions))["sentence_embedding"]
    where = torch.as_tensor(inverse, device=tokens.device).split(len(batch))
    targets = None if rows.targets is None else torch.as_tensor(rows.targets[batch],
                                                                 device=tokens.device)
    return loss.compute_loss_from_embeddings([embedded[w] for w in where], targets)


#: Texts per forward pass when a loss's `prepare` encodes the rows (no gradients kept).
PREPARE_BATCH = 64


def embedder(model, tokens: Tokens):
    """`embed(positions)`: the embeddings of those texts on `model` in eval mode, without
    gradients, for a loss's `prepare` (such as `PrototypeLoss`'s class means)."""

    def embed(positions) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return torch.cat([
                model(tokens.take(positions[i:i + PREPARE_BATCH]))["sentence_embedding"]
                for i in range(0, len(positions), PREPARE_BATCH)])

    return embed


def train(model, rows: Rows, loss, schedule: Schedule, on_epoch_end=None) -> tuple[int, list, dict]:
    """Train `model` in place on `rows` with `loss` (its `compute_loss_from_embeddings` takes
    one embedding tensor per column and the targets; its `prepare(embed, rows)`, if any, runs
    first); return the optimizer steps taken, one dict per epoch and the optimizer's final
    state (on the CPU), for a later call to continue.

    Each dict holds `epoch` (counted within this call), `step` and `train_loss` (the mean
    loss of the epoch), plus whatever `on_epoch_end(model)` returns (e.g. validation scores).
    With `schedule.optimizer_state` the optimizer resumes from it (a stream of calls keeps
    Adam's moments instead of restarting them with a full-size first step each call) and
    skips the warm-up; a state that does not fit the trained parameters is ignored.
    """
    from tqdm.auto import tqdm

    from embetter._torch import available_device, seeded, to_cpu

    device = available_device(schedule.device)
    model.to(device)
    size = schedule.batch_size
    generator = torch.Generator().manual_seed(schedule.seed)
    history, steps = [], 0
    # enable_grad: a caller's torch.no_grad() must not stop training (and is back after)
    with frozen(schedule.frozen), seeded(schedule.seed, device), torch.enable_grad():
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = _adamw(params, schedule.learning_rate)
        _st.resume_optimizer(optimizer, schedule.optimizer_state)
        plan = [batches(rows, size, generator, schedule.no_duplicates)
                for _ in range(schedule.epochs)]
        # the warm-up's share of the steps taken (batches without duplicate texts can take
        # more than rows / batch size); its first step runs at rate 0 (as the Trainer's): a
        # fit of one step (16 pairs at the defaults) has none, or it would train nothing
        n_steps = sum(len(p) for p in plan)
        warmup = 0 if schedule.optimizer_state is not None else max(0, min(
            math.ceil(schedule.warmup_ratio * n_steps), n_steps - 1))
        scheduler = _schedule(optimizer, warmup, n_steps)
        tokens = Tokens(model, rows.texts, device)
        if hasattr(loss, "prepare"):  # e.g. the prototypes: the model before this call trains
            loss.prepare(embedder(model, tokens), rows)
        progress = tqdm(total=n_steps, desc="Training", disable=not schedule.progress)
        try:
            for epoch, plan_epoch in enumerate(plan, start=1):
                model.train()
                total_loss = 0.0
                for batch in plan_epoch:
                    value = batch_loss(model, tokens, rows, batch, loss)
                    value.backward()
                    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    total_loss += float(value.detach())
                    steps += 1
                    progress.update(1)
                entry = {"epoch": epoch, "step": steps,
                         "train_loss": total_loss / max(1, len(plan_epoch))}
                if on_epoch_end is not None:
                    model.eval()
                    entry.update(on_epoch_end(model))
                history.append(entry)
        finally:
            # a step that fails part-way (an interrupt, out of memory) leaves no gradients
            # for the next call to add to (nor their memory)
            optimizer.zero_grad(set_to_none=True)
            progress.close()
    model.eval()
    return steps, history, to_cpu(optimizer.state_dict())

