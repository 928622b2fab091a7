"""Synthetic embeddings for the head tests (unit-norm points around class centres), and the
heads with few epochs, for speed."""

from __future__ import annotations

import numpy as np

from embetter.finetune import ContrastiveTuner, FeedForwardTuner

FAST = {FeedForwardTuner: {"n_epochs": 10}, ContrastiveTuner: {"epochs": 3}}
#: the heads, for tests that run on each
TUNERS = list(FAST)


def clustered(n, seed, n_classes=4, dim=16, informative=4, spread=1.5):
    """Unit-norm points: class centres in a few dimensions, noise in all of them."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(n_classes, informative)) * spread
    y = rng.integers(0, n_classes, n)
    X = rng.normal(size=(n, dim))
    X[:, :informative] += centres[y]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y


def fast(cls, **params):
    """A head of class `cls` that trains a few epochs, seeded."""
    return cls(**{**FAST[cls], "random_state": 0, **params})
