"""Torch plumbing shared by every torch-backed estimator, one concern a module:

- `device`: device choice, the one `seed_from`, seeded runs, CPU threads while training;
- `replay`: the replay memory of a stream;
- `stream`: how the heads' `partial_fit` trains (budget, replay, retraining as it grows);
- `engine`: the one mini-batch training engine of the small heads (`TorchHeadMixin`), with
  the parameter constraints every head shares;
- `progress`: the engine's epoch progress bar.
"""

from embetter._torch.device import (
    available_device,
    device_name,
    resolve_device,
    seed_from,
    seeded,
    to_cpu,
    train_threads,
    usable,
)
from embetter._torch.engine import TorchHeadMixin
from embetter._torch.replay import new_replay, replay_add, replay_pool, replay_subsets

__all__ = [
    "TorchHeadMixin",
    "available_device",
    "device_name",
    "new_replay",
    "replay_add",
    "replay_pool",
    "replay_subsets",
    "resolve_device",
    "seed_from",
    "seeded",
    "to_cpu",
    "train_threads",
    "usable",
]
