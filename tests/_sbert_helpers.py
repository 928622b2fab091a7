"""Helpers shared by the SbertLearner / SbertTuner tests."""

from __future__ import annotations

import numpy as np

from embetter.finetune import SbertLearner, SbertTuner


def cosine(encoder, X1, X2):
    a, b = encoder.transform(X1), encoder.transform(X2)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def small(pairs, n=32):
    X1, X2, y = pairs
    return X1[:n], X2[:n], y[:n]


def learner(path, **kw):
    kw.setdefault("random_state", 0)
    kw.setdefault("learning_rate", 1e-3)  # a random tiny model needs big steps to move at all
    return SbertLearner(path, **kw)


def torch_equal(a, b):
    import torch

    return torch.equal(a.detach().cpu(), b.detach().cpu())  # the fitted model may be on a GPU


def tuner(path, **kw):
    kw.setdefault("random_state", 0)
    kw.setdefault("learning_rate", 1e-3)
    kw.setdefault("label_texts", None)  # the pair counts below are the texts' own
    return SbertTuner(path, **kw)
