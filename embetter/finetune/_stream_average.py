"""The weights a stream of `partial_fit` calls serves: a running average of each call's end.

Each call of a stream trains its own rows (and replayed ones) with a learning rate that
decays from the peak to 0 within the call: a cyclic schedule. The weights at the end of the
last call lean towards the last batch; averaging the ends of the cycles (Izmailov et al.,
2018, "Averaging Weights Leads to Wider Optima and Better Generalization"), with later calls
weighing more (polynomial-decay averaging, Shamir and Zhang, 2013), gives a model that holds
the whole stream. Training carries on from the raw weights; the model holds the average.
"""

from __future__ import annotations


class StreamAverage:
    """Row-weighted tail average of a model's trained weights across stream calls.

    Call `k` brings `n_k` new rows when `N_k` rows have been seen in all (its own included):
    its end weights count `n_k * N_k` in the average. After one call the average is that
    call's weights (one call is `fit`). `start(params)` puts the raw weights back into the
    model before a call; `end(params, n_new, n_seen)` records the call's weights and loads
    the average into the model. Pickling keeps the average (it is the model) and drops the
    raw weights: after loading, training carries on from the average. From the second call
    on, the raw weights are one extra copy of the trained parameters in memory.
    """

    def __init__(self):
        self.weight = 0.0
        self._raw = None
        self._average = None

    def start(self, params: dict) -> None:
        """Before a call: remember the average the model holds, give it the raw weights."""
        if not self.weight:
            return
        self._average = _copy(params)
        _load(params, self._raw)

    def end(self, params: dict, n_new: int, n_seen: int) -> None:
        """After a call: keep its weights as the raw ones, load the new average."""
        weight = float(n_new) * float(n_seen)
        self.weight += weight
        average, self._average = self._average, None
        if average is None or average.keys() != params.keys():
            # the first call (or a model that changed shape): its weights are the average,
            # and the model holds them already (no copy kept: a `fit` costs no extra memory)
            self._raw = None
            return
        self._raw = _copy(params)
        share = weight / self.weight
        # (a set_params of the device between calls: the average moves where the model went)
        _load(params, {name: average[name].to(self._raw[name].device).lerp_(
            self._raw[name], share) for name in params})

    def undo(self, params: dict) -> None:
        """A call that failed: the model gets back the average it held before the call (the
        raw weights stay those of the previous call)."""
        average, self._average = self._average, None
        _load(params, average)

    def __getstate__(self):
        return {"weight": self.weight, "_raw": None, "_average": None}


def _copy(params: dict) -> dict:
    return {name: p.detach().clone() for name, p in params.items()}


def _load(params: dict, values) -> None:
    """Copy `values` (name -> tensor) into the parameters; nothing when there are none, or
    when they are not the same parameters (`freeze_embeddings` changed between calls)."""
    import torch

    if values is None or values.keys() != params.keys():
        return
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(values[name])
