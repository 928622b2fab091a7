"""Quieting noisy libraries the way a guest does: change a setting for one call, put it back.

A library runs inside its user's process. Whatever process-wide state a call has to change
(a logger's level, an environment variable) is changed inside one of these contexts, which
restore exactly what they found, also when the call fails.

The state is the process's. A change that belongs to one computation (a seed, torch's
threads, `sys.stderr` caught around a library's bars) is made by one call at a time
(`GUEST_LOCK`): two threads that train at once run one after the other, and each puts back
what it found (interleaved, the second one's restore put back the first one's change:
`sys.stderr` stayed a dead buffer, a seed was reused). A switch that several calls may want
at once (a logger raised, the Hub's progress bars off) is shared instead (`SHARED`): the
first call in makes it, the last one out puts back what was there, and nobody waits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

#: Held while a call has process-wide state changed (re-entrant: the contexts nest). Code
#: under it (a fit) must not load an encoder's model or build its engine (text/_paths.py's
#: `BUILDING`, `_MEASURING`): those never take it, so no two locks wait on each other.
GUEST_LOCK = threading.RLock()


class _Shared:
    """Process-wide switches several threads may want at once: the first one in makes the
    change (remembering what was there), the last one out puts that back."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count: dict = {}
        self.saved: dict = {}

    @contextlib.contextmanager
    def hold(self, key, apply, restore):
        with self.lock:
            if not self.count.get(key):
                self.saved[key] = apply()
            self.count[key] = self.count.get(key, 0) + 1
        try:
            yield
        finally:
            with self.lock:
                self.count[key] -= 1
                if not self.count[key]:
                    del self.count[key]
                    restore(self.saved.pop(key))


SHARED = _Shared()


def reopen_after_fork(*locks) -> None:
    """Open `locks` again in a forked child: one another thread held at the fork would stay
    shut for ever there (no thread of the child owns it)."""
    def reopen():
        for lock in locks:
            reinit = getattr(lock, "_at_fork_reinit", None)
            if reinit is not None:
                reinit()

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=reopen)


# the shared switches keep their counts: the forking thread's own blocks still put theirs back
reopen_after_fork(GUEST_LOCK, SHARED.lock)


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.ERROR):
    """Raise the named loggers (`""` is the root logger) to at least `level` for the call.

    Only used around third-party code that logs through loggers we cannot otherwise reach
    (onnxruntime's quantiser logs on the root logger). Handlers the call adds to them are
    removed (`logging.warning(...)` adds a stderr handler to a root logger that has none).
    """
    with contextlib.ExitStack() as stack:
        for name in names:
            logger = logging.getLogger(name or None)
            stack.enter_context(SHARED.hold(("logger", logger.name),
                                            lambda lg=logger: _raise(lg, level), _lower))
        yield


def _raise(logger, level):
    before = (logger, logger.level, list(logger.handlers))
    if logger.getEffectiveLevel() < level:
        logger.setLevel(level)
    return before


def _lower(before):
    logger, was, handlers = before
    logger.setLevel(was)
    for handler in [h for h in logger.handlers if h not in handlers]:
        logger.removeHandler(handler)


@contextlib.contextmanager
def quiet_stderr(enabled: bool = True):
    """Swallow what the call writes to `sys.stderr` (a library's own progress bars, which no
    argument turns off); the warnings it raises are recorded and raised again after it (also
    when it fails), so nothing but the bars is lost. `enabled=False` changes nothing."""
    if not enabled:
        yield
        return
    import io
    import warnings

    caught: list = []
    with GUEST_LOCK:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with contextlib.redirect_stderr(io.StringIO()):
                    yield
        finally:
            for w in caught:  # outside catch_warnings: the user's own filters apply again
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@contextlib.contextmanager
def kept_random_state():
    """Put Python's, numpy's and torch's global random generators back as they were after
    the block: for libraries that seed them globally (model2vec's trainer seeds all three)."""
    with GUEST_LOCK, _kept_random_state():
        yield


@contextlib.contextmanager
def _kept_random_state():
    import random

    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    # before CUDA starts, torch.manual_seed queues the GPUs' seed for when it does (private
    # to torch, hence guarded): that queue is put back too, or the caller's seed is lost
    queue = None if devices else getattr(torch.cuda, "_lazy_seed_tracker", None)
    queued = None if queue is None else {k: (list(v) if isinstance(v, list) else v)
                                         for k, v in vars(queue).items()}
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if queued is not None:
            vars(queue).clear()
            vars(queue).update(queued)
