"""Putting a head back as it was when a `partial_fit` call fails half-way (a NaN loss, Ctrl-C):
the weights, optimizer state, records, RNG and replay memory it changes in place."""

from __future__ import annotations

import copy


def snapshot(head) -> dict:
    """What a `partial_fit` call of `head` changes in place, copied."""
    return {"module_object": head.module_,
            "module": copy.deepcopy(head.module_.state_dict()),
            "optimizer": copy.deepcopy(head.optimizer_.state_dict()),
            "loss_curve_": list(head.loss_curve_), "history_": list(head.history_),
            "rng": head._rng.get_state(), "replay": copy.deepcopy(head._replay)}


def roll_back(head, saved: dict) -> None:
    """Put `saved` back in place, into the objects `all_or_nothing` restores; nothing when
    the call had retrained from the start (new objects, which `all_or_nothing` replaces with
    the untouched old ones)."""
    if head.module_ is not saved["module_object"]:
        return
    head.module_.load_state_dict(saved["module"])
    head.optimizer_.load_state_dict(saved["optimizer"])
    head.loss_curve_[:] = saved["loss_curve_"]
    head.history_[:] = saved["history_"]
    head._rng.set_state(saved["rng"])
    head._replay.clear()
    head._replay.update(saved["replay"])
