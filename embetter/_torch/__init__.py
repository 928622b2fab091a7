"""Torch plumbing shared by every torch-backed estimator, one concern a module:

- `device`: device choice, the one `seed_from`, seeded runs, CPU threads while training;
- `replay`: the replay memory of a stream;
- `stream`: how the heads' `partial_fit` trains (budget, replay, retraining as it grows);
- `engine`: the one mini-batch training engine of the small heads (`TorchHeadMixin`), with
  the parameter constraints the heads share;
- `fit`: how the engine's `fit` trains (epochs, stopping rules, early stopping's split);
- `rollback`: a snapshot to put a head back as it was when a call fails;
- `progress`: the engine's epoch progress bar;
- `unit`: rows scaled to unit length, safe from float32's overflow.
"""

from embetter._torch.device import (
    available_device,
    device_name,
    resolve_device,
    seed_from,
    seeded,
    to_cpu,
)
from embetter._torch.engine import TorchHeadMixin
from embetter._torch.replay import new_replay, replay_add

__all__ = [
    "TorchHeadMixin",
    "available_device",
    "device_name",
    "new_replay",
    "replay_add",
    "resolve_device",
    "seed_from",
    "seeded",
    "to_cpu",
]
