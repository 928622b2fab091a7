"""Where and how repeatably torch runs: device choice, seeds, CPU threads, moving state off a
device. Used by every torch-backed estimator (the small heads and the sentence models)."""

from __future__ import annotations

import contextlib
import copy
import numbers

import torch

from embetter._guest import GUEST_LOCK
from embetter._validation import as_random_state


def resolve_device(device=None) -> torch.device:
    """Pick the device: an explicit value wins; `None` means cuda, then mps, then cpu."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device must be None, 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device, got {device!r}"
        ) from e


def available_device(device=None) -> torch.device:
    """`resolve_device`, refusing a device this machine does not have: a clear error where
    torch would fail deep inside ("Torch not compiled with CUDA enabled")."""
    resolved = resolve_device(device)
    if not usable(resolved):
        raise ValueError(
            f"device={device!r}, but torch has no {resolved.type} device on this machine; "
            "use device=None (the best one there is) or 'cpu'")
    return resolved


def restored_device(device=None) -> torch.device:
    """Where a saved model is restored: its device when this machine has it, else the CPU (a
    model trained on a GPU loads on a CPU-only machine)."""
    resolved = resolve_device(device)
    return resolved if usable(resolved) else torch.device("cpu")


def device_name(device=None) -> str:
    """The resolved device as a string, as sentence-transformers expects it; one this machine
    lacks is refused (a saved model is restored with `restored_device` instead)."""
    return str(available_device(device))


def usable(device: torch.device) -> bool:
    """Whether this machine has `device` (a model saved on a GPU may load on a CPU-only one)."""
    if device.type == "cuda":
        return torch.cuda.is_available()
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return mps is not None and mps.is_available()
    if device.type == "cpu":
        return True
    # another kind (xpu, or hpu / npu where their plugin is loaded) where torch says it runs;
    # "meta" (no data) or one without its plugin failed inside torch
    backend = getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    return bool(callable(available) and available())


def seed_from(random_state) -> int:
    """The one int seed of a `random_state` (None, int or RandomState, as sklearn takes it).

    An int is its own seed (modulo 2**32: what numpy, torch and transformers accept), so
    `random_state=0` seeds everything with 0; `None` or a RandomState draws a fresh seed.
    """
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state) % (2**32)
    return int(as_random_state(random_state).randint(0, 2**31 - 1))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Run torch code under `seed` without touching the caller's global RNG state.

    Weight initialisation and dropout draw from torch's global generator; forking it makes two
    fits with the same `random_state` bit-identical on CPU and leaves the user's RNG alone.
    The generator is the process's: fits in two threads take turns (`GUEST_LOCK`).
    """
    with GUEST_LOCK, _seeded(seed, device):
        yield


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    mps = device.type == "mps"
    mps_state = torch.mps.get_rng_state() if mps else None
    # only the generators forked here are seeded: torch.manual_seed would also seed every GPU
    # (queued for later where CUDA has not started), and those would stay seeded afterwards
    try:
        with torch.random.fork_rng(devices=devices):
            torch.default_generator.manual_seed(seed)
            if devices:
                with torch.cuda.device(devices[0]):
                    torch.cuda.manual_seed(seed)
            if mps:
                torch.mps.manual_seed(seed)
            yield
    finally:
        if mps:
            torch.mps.set_rng_state(mps_state)


#: Intra-op threads while a small head trains on the CPU. Its matrices are a few hundred wide:
#: splitting each op over threads costs more than it saves, and on a busy machine the extra
#: threads spin against each other (measured: 10x slower with 2 threads than with 1 under
#: load). Private and constant: the user's own `torch.set_num_threads` is put back after
#: every fit (`train_threads`), never changed for good.
_CPU_TRAIN_THREADS = 1


@contextlib.contextmanager
def train_threads(device: torch.device):
    """Train with `_CPU_TRAIN_THREADS` threads on the CPU; restore torch's setting afterwards
    (one fit at a time changes it: `GUEST_LOCK`)."""
    with GUEST_LOCK:
        before = torch.get_num_threads()
        if device.type != "cpu" or before <= _CPU_TRAIN_THREADS:
            yield
            return
        torch.set_num_threads(_CPU_TRAIN_THREADS)
        try:
            yield
        finally:
            torch.set_num_threads(before)


@contextlib.contextmanager
def grad_enabled():
    """Autograd on for one training call, whatever the caller wrapped it in: `torch.no_grad()`
    or `torch.inference_mode()` (under which new weights could never be trained). Both are
    thread-local and back as they were afterwards."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def to_cpu(obj):
    """Deep-copy a (nested) state dict with every tensor moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return copy.deepcopy(obj)
