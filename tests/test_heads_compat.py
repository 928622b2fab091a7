"""Heads saved by embetter 0.10.0 (pickle and skops, fitted then streamed) still load, transform
as they did, and carry their stream on (tests/data/heads-0.10.0, written by make.py there with
that release). "As they did" is to float32 rounding: the expected arrays were written on one
CPU, and another CPU's matrix kernels (AVX2 or AVX-512, AMD or Intel) round the last bit
differently."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from embetter.utils import load_skops

HERE = Path(__file__).resolve().parent / "data" / "heads-0.10.0"
#: float32 rounding across CPUs' kernels; a changed weight or formula moves far more
EXACT = dict(rtol=1e-5, atol=1e-6)
EXPECTED = np.load(HERE / "expected.npz")


def load(name, kind):
    if kind == "pickle":
        with open(HERE / f"{name}.pkl", "rb") as f:
            return pickle.load(f)
    return load_skops(HERE / f"{name}.skops")


def more(head, name):
    X, y = EXPECTED["X"], EXPECTED["y"]
    if name == "cl":
        return head.partial_fit(X[80:], X[80:][::-1], np.ones(10, dtype=np.float32))
    return head.partial_fit(X[80:], y[80:])


@pytest.mark.parametrize("kind", ["pickle", "skops"])
@pytest.mark.parametrize("name", ["ff", "ct", "cl"])
def test_saved_heads_load_and_transform_exactly(name, kind):
    head = load(name, kind)
    np.testing.assert_allclose(head.transform(EXPECTED["X"]), EXPECTED[f"{name}_transform"],
                               **EXACT)
    # the stream state is in one place: the engine's module, optimizer, RNG and replay memory
    assert not hasattr(head, "learner_")
    assert head._replay["seen"] == 40 and head.module_ is not None
    if name == "ct":  # saved before identity_penalty existed: it carries on without one
        assert head.get_params()["identity_penalty"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing deprecated in what the old release saved
        more(head, name)
    out = head.transform(EXPECTED["X"])
    if name == "ct":
        # the tuner now draws pairs and shuffles from one RNG (0.10.0 had two): a continued
        # stream trains as much, on other draws
        assert out.shape == EXPECTED["ct_continued"].shape and np.isfinite(out).all()
        assert head._replay["seen"] == 50 and head.n_iter_ > load(name, kind).n_iter_
    else:
        np.testing.assert_allclose(out, EXPECTED[f"{name}_continued"], **EXACT)
