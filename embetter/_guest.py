"""Quieting noisy libraries the way a guest does: change a setting for one call, put it back.

A library runs inside its user's process. Whatever process-wide state a call has to change
(a logger's level, an environment variable) is changed inside one of these contexts, which
restore exactly what they found, also when the call fails.

The state is the process's. A change that belongs to one computation (a seed, torch's
threads) is made by one call at a time (`GUEST_LOCK`): two threads that train at once run
one after the other, and each puts back what it found (interleaved, the second one's
restore put back the first one's change: a seed was reused). A switch that several calls
may want at once (a logger raised, the Hub's progress bars off) is shared instead
(`SHARED`): the first call in makes it, the last one out puts back what was there, and
nobody waits. What a call writes to `sys.stderr` is dropped per thread (`quiet_stderr`),
and a library's root-logger records are filtered per thread (`quiet_root_records`):
other threads write, warn and log as ever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
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
    """Raise a library's named loggers to at least `level` for the call (never the root
    logger, which every logger without a level of its own follows: see
    `quiet_root_records`). Only used around third-party code whose loggers we cannot
    otherwise reach; handlers the call adds to them are removed."""
    if "" in names or "root" in names:
        raise ValueError("quiet_loggers does not raise the root logger; use quiet_root_records")
    with contextlib.ExitStack() as stack:
        for name in names:
            logger = logging.getLogger(name or None)
            stack.enter_context(SHARED.hold(("logger", logger.name),
                                            lambda lg=logger: _raise(lg, level), _lower))
        yield


@contextlib.contextmanager
def quiet_root_records(level: int = logging.ERROR):
    """Drop the records below `level` that this thread logs on the root logger (onnxruntime's
    quantiser logs its progress with `logging.info`/`logging.warning`): a filter for this
    thread's records only, so other threads log as ever (raising the root logger's level
    silenced every thread's loggers that inherit it). A handler that logging's module
    functions add to a root logger that had none (`basicConfig`) is taken out again (one
    that another thread adds to it in that window goes too: they cannot be told apart)."""
    root = logging.getLogger()
    me = threading.get_ident()

    def keep(record) -> bool:
        return record.thread != me or record.levelno >= level

    had_handlers = bool(root.handlers)
    before = list(root.handlers)
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
        if not had_handlers:
            for handler in [h for h in root.handlers if h not in before]:
                root.removeHandler(handler)


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
    """Swallow what this thread writes to `sys.stderr` during the call (a library's own
    progress bars, which no argument turns off); the warnings it shows are held and raised
    again after it (also when it fails), so nothing but the bars is lost. Other threads
    write and warn as ever. `enabled=False` changes nothing.

    Process-wide objects are not swapped for the call and put back (another thread's
    `catch_warnings` or `redirect_stderr` that began inside it would put back ours after
    it: the warnings of the whole process lost, `sys.stderr` a dead buffer): `sys.stderr`
    and `warnings.showwarning` get a pass-through that drops only what quiet threads
    write; each is taken out again when the last quiet thread leaves and it is still in
    place (if another's restore put it back later, it keeps passing everything through).
    One limit: while another thread's `catch_warnings` has put back the hook it found
    (it began before the call and ends inside it), a warning of the quiet thread is shown
    the plain way, into the dropped output."""
    if not enabled:
        yield
        return
    import warnings

    me = threading.get_ident()
    with _GATE_LOCK:
        if not _HELD:
            if not isinstance(sys.stderr, _StderrGate):
                sys.stderr = _StderrGate(sys.stderr)
            if warnings.showwarning is not _hold_warning:
                _PREVIOUS_SHOW[:] = [warnings.showwarning]
                warnings.showwarning = _hold_warning
        outer = me in _HELD  # (nested in a quiet block of this thread: that one re-raises)
        _HELD.setdefault(me, [])
    try:
        yield
    finally:
        with _GATE_LOCK:
            held = [] if outer else _HELD.pop(me, [])
            if not _HELD:
                _open_gate()
        for message, category, filename, lineno in held:  # the user's own filters apply
            warnings.warn_explicit(message, category, filename, lineno)


#: the quiet threads (`quiet_stderr`), each with the warnings it held back
_HELD: dict = {}
_GATE_LOCK = threading.Lock()
_PREVIOUS_SHOW: list = []  # what `warnings.showwarning` was before ours came in
_SHOWING = threading.local()  # a thread inside `_hold_warning` (a hook chained back to ours)


def _open_gate() -> None:
    """The last quiet thread is out: take the pass-throughs out where they still are."""
    import warnings

    if isinstance(sys.stderr, _StderrGate):
        sys.stderr = sys.stderr.target
    if warnings.showwarning is _hold_warning and _PREVIOUS_SHOW:
        warnings.showwarning = _PREVIOUS_SHOW[0]


def _after_fork_in_child() -> None:
    """A forked child holds only the forking thread: the others' quiet blocks never end
    there (and a new thread could get a dead one's id)."""
    me = threading.get_ident()
    for ident in [i for i in _HELD if i != me]:
        del _HELD[ident]
    if not _HELD:
        _open_gate()


reopen_after_fork(_GATE_LOCK)  # (first: the hook below takes it)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _StderrGate:
    """`sys.stderr` as it was, except that a quiet thread's writes go nowhere."""

    def __init__(self, target):
        self.target = target

    def write(self, text):
        if threading.get_ident() in _HELD:
            return len(text)
        return self.target.write(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        if threading.get_ident() not in _HELD:
            self.target.flush()

    def __getattr__(self, name):  # encoding, isatty, fileno, ...
        return getattr(self.target, name)


def _hold_warning(message, category, filename, lineno, file=None, line=None):
    """`warnings.showwarning` while a thread is quiet: its warnings are held for after."""
    import warnings

    held = _HELD.get(threading.get_ident())
    if held is not None and file is None:
        held.append((message, category, filename, lineno))
        return
    if getattr(_SHOWING, "active", False):  # a hook set after ours called "the previous
        # one", which is ours again: show it plainly instead of going round for ever
        stream = file if file is not None else sys.stderr
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    _SHOWING.active = True
    try:
        _PREVIOUS_SHOW[0](message, category, filename, lineno, file, line)  # (set before ours)
    finally:
        _SHOWING.active = False


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
