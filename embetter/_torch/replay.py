"""The replay memory of a stream: a uniform sample of the rows `partial_fit` has seen.

A stream seen once trains each batch while it is there; without replay, the gradient steps a
small batch earns pull the head towards that batch and away from the earlier ones. Mixing as
many remembered rows as new ones into each `partial_fit` call keeps the stream close to one fit
on everything it has seen. The memory is plain data (a dict of aligned numpy arrays and a
count), so estimators holding it pickle, and store in skops files, like any other state.
"""

from __future__ import annotations

import numpy as np


def new_replay() -> dict:
    """An empty memory: `rows` (aligned arrays: embeddings, label codes...) and `seen`."""
    return {"rows": None, "seen": 0}


def replay_len(memory: dict) -> int:
    return 0 if memory["rows"] is None else memory["rows"][0].shape[0]


def replay_pool(memory: dict, arrays) -> list:
    """The new rows followed by the remembered ones, as one set of arrays."""
    if not replay_len(memory):
        return list(arrays)
    return [np.concatenate([a, m]) for a, m in zip(arrays, memory["rows"])]


def replay_count(memory: dict, n_new: int, at_least: int = 0) -> int:
    """Remembered rows `replay_subsets` adds to `n_new` new ones on each draw: as many as
    new ones, or enough to make `at_least` rows in all, as far as the memory holds them."""
    return min(replay_len(memory), max(n_new, at_least - n_new))


def replay_subsets(memory: dict, n_new: int, rng, at_least: int = 0):
    """A function drawing, on each call, the new rows plus as many remembered ones (fresh ones
    each time; with `at_least`, enough to make that many rows in all), as indices into
    `replay_pool`'s arrays."""
    new = np.arange(n_new)
    k = replay_count(memory, n_new, at_least)
    if not k:
        return lambda: new
    stored = replay_len(memory)
    return lambda: np.concatenate([new, n_new + rng.choice(stored, k, replace=False)])


def replay_add(memory: dict, arrays, size: int, rng) -> None:
    """Remember new rows as a reservoir sample: every row of the stream is kept with the same
    probability, `size / seen`."""
    size = int(size)
    n = arrays[0].shape[0]
    if 0 < size < replay_len(memory):
        # replay_size lowered between calls: a uniform subsample of the reservoir is one too
        kept = np.sort(rng.choice(replay_len(memory), size, replace=False))
        memory["rows"] = [m[kept] for m in memory["rows"]]
    if size > 0:
        free = min(max(size - replay_len(memory), 0), n)
        if free:
            head = [np.array(a[:free]) for a in arrays]
            memory["rows"] = head if memory["rows"] is None else [
                np.concatenate([m, h]) for m, h in zip(memory["rows"], head)]
        rest = np.arange(free, n)
        if rest.size:
            keep = rng.random_sample(rest.size) < size / (memory["seen"] + rest + 1)
            slots = rng.randint(0, size, size=int(keep.sum()))
            # arrays of our own to write into (one loaded with mmap_mode is read-only, or
            # would write the change into the saved file)
            memory["rows"] = [m if m.flags.writeable and not isinstance(m, np.memmap)
                              else np.array(m) for m in memory["rows"]]
            for m, a in zip(memory["rows"], arrays):
                m[slots] = a[rest[keep]]
    memory["seen"] += n
