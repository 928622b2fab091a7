"""Torch plumbing shared by every torch-backed estimator: device choice and seeding."""

from __future__ import annotations

import torch


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


def device_name(device=None) -> str:
    """The resolved device as a string, as sentence-transformers expects it."""
    return str(resolve_device(device))
