"""What runs on a Dask worker for `embetter.dask.transform`: the pipeline unpickled from its
task's bytes, the one copy of it each worker process runs every partition with (so its
sentence model loads once), and the embedding of one partition."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from embetter._guest import reopen_after_fork


def unpickle(blob: bytes):
    """Runs on a worker: the pipeline, from the bytes the scheduler keeps in the task."""
    import pickle

    return pickle.loads(blob)


#: Per worker process: the pipelines its partitions ran with, newest last, by content key.
#: Dask may drop a worker's copy between jobs (its memory manager keeps one copy of data no
#: task waits for) and send it again later as a new object, whose model would load again;
#: partitions run with the copy kept here instead. Two are kept: this job's and the last.
KEPT: OrderedDict = OrderedDict()
KEEP = 2
kept_lock = threading.Lock()
reopen_after_fork(kept_lock)  # (held by another thread at a fork)


def worker_copy(key: str, pipeline):
    """The copy of pipeline `key` this worker process already runs with, else `pipeline`."""
    with kept_lock:
        kept = KEPT.setdefault(key, pipeline)
        KEPT.move_to_end(key)
        while len(KEPT) > KEEP:
            KEPT.popitem(last=False)
    return kept


def forget_kept() -> int:
    with kept_lock:
        n = len(KEPT)
        KEPT.clear()
    return n


def count_rows(part) -> int:
    return len(part) if hasattr(part, "__len__") else sum(1 for _ in part)


def encode_partition(part, pipeline, key: str, dim: int, expected_rows):
    """Runs on a worker: embed one partition with the worker's copy of the pipeline.

    The worker runs every partition of pipeline `key` with one object (`worker_copy`): the
    sentence model it loads on first use stays attached to it, so each worker process loads
    the model once, also when Dask hands it the pipeline again.
    """
    pipeline = worker_copy(key, pipeline)
    if not hasattr(part, "__len__"):  # a Bag partition can be a lazy iterator
        part = list(part)
    n = len(part)
    if expected_rows is not None and n != expected_rows:
        raise ValueError(
            f"lengths says this partition has {expected_rows} rows, but it has {n}"
        )
    if n == 0:
        # Not every step accepts zero rows (PCA refuses them); the answer is known anyway.
        return np.zeros((0, dim), dtype=np.float32)
    try:
        out = pipeline.transform(part)
    except (ValueError, TypeError) as e:
        # a DataFrame's or Series' index (a Bag's partition is a list: `list.index` is a
        # method, and its rows count from the partition's first anyway)
        index = getattr(part, "index", None)
        if index is None or callable(index) or not len(index):
            raise
        # "X[5] is missing" counts rows within this partition: say which one it is
        where = (f"in the partition of index {index[0]!r} to {index[-1]!r} ({n} rows; "
                 "positions count from its first)")
        if type(e) in (ValueError, TypeError):
            raise type(e)(f"{where}: {e}") from e
        if hasattr(e, "add_note"):  # a subclass (NotFittedError...) keeps its type
            e.add_note(where)
        raise
    if hasattr(out, "toarray"):  # a sparse last step
        out = out.toarray()
    out = np.asarray(out, dtype=np.float32)
    if out.shape != (n, dim):
        raise ValueError(
            f"pipeline.transform returned shape {out.shape} for a partition of {n} rows; "
            f"expected ({n}, {dim}) (dim={dim})"
        )
    return out
