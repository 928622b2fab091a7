"""Rows scaled to unit length, the heads' outputs (and their cosines' inputs)."""

from __future__ import annotations

import torch

#: rows whose largest magnitude is beyond these are divided by it before normalising: their
#: squared length could overflow float32 (a length past ~1.8e19), or their length be under
#: normalize's floor (1e-12, below which it does not reach unit length)
_LARGE, _SMALL = 1e15, 1e-12


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row of `x` at unit length, as `torch.nn.functional.normalize` scales it, also
    where its squared length overflows or underflows float32 (normalize turned a row of
    length 1e19 into a zero vector): such a row is divided by its largest magnitude first
    (the others are left as they are: bit for bit normalize's). A zero row stays zero."""
    big = x.detach().abs().amax(dim=1, keepdim=True)
    odd = (big > _LARGE) | ((big < _SMALL) & (big > 0))
    return torch.nn.functional.normalize(x / torch.where(odd, big, torch.ones_like(big)), dim=1)
