"""Findings of a second review of the heads on frozen embeddings (FeedForwardTuner,
ContrastiveTuner, ContrastiveLearner) as a scikit-learn user; each test failed before its
fix."""

from __future__ import annotations

import numpy as np
import pytest

from embetter.finetune import ContrastiveLearner, ContrastiveTuner, FeedForwardTuner

rng = np.random.default_rng(0)
X = rng.normal(size=(160, 16)).astype(np.float32)
Y = rng.integers(0, 3, 160)


@pytest.mark.parametrize("make", [
    lambda: FeedForwardTuner(hidden_dim=8, n_epochs=3, random_state=0),
    lambda: ContrastiveTuner(epochs=3, random_state=0),
])
def test_a_stream_saved_on_a_gpu_retrains_on_the_cpu_it_was_loaded_on(make):
    """Its calls ran on the CPU until a retrain came due: that one, and every call after it,
    refused device='cuda' (a machine without one)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA (the state says device='cuda')")
    head = make().partial_fit(X[:100], Y[:100], classes=[0, 1, 2])
    import copy

    state = copy.deepcopy(head.__getstate__())  # (its own replay memory, not the head's)
    # (what a pickle or skops file made on a GPU holds: the device set and started with)
    state["device"] = state["_started_device"] = "cuda"
    loaded = type(head).__new__(type(head))
    loaded.__setstate__(state)
    loaded.partial_fit(X[100:130], Y[100:130])
    loaded.partial_fit(X[130:160], Y[130:160])  # 160 >= 1.5 x 100 rows: a retrain
    assert loaded.refit_rows_ == 160 and loaded.device_.type == "cpu"
    assert np.isfinite(loaded.transform(X[:3])).all()
    # a device set since the stream started must be there (the fix's first version ran
    # such a stream's retrains on the CPU, silently)
    head.set_params(device="cuda")
    head.partial_fit(X[100:130], Y[100:130])
    with pytest.raises(ValueError, match="device='cuda', but torch has no cuda device"):
        head.partial_fit(X[130:160], Y[130:160])


def test_rows_too_long_for_float32_squares_still_come_out_unit_length():
    """Past a length of ~1.8e19 the squared length overflows: normalize gave zero vectors
    (and ContrastiveTuner learned nothing, its loss flat)."""
    tuner = ContrastiveTuner(epochs=3, random_state=0).fit(X * 1e19, Y)
    assert len(set(np.round(tuner.loss_curve_, 6))) > 1
    np.testing.assert_allclose(np.linalg.norm(tuner.transform(X[:5] * 1e19), axis=1), 1.0,
                               rtol=1e-5)
    head = FeedForwardTuner(hidden_dim=8, n_epochs=3, random_state=0).fit(X, Y)
    np.testing.assert_allclose(np.linalg.norm(head.transform(X[:5] * 1e20), axis=1), 1.0,
                               rtol=1e-5)
    # ordinary rows: bit for bit what torch's normalize gives
    import torch

    from embetter._torch.unit import unit_rows

    t = torch.from_numpy(X)
    assert torch.equal(unit_rows(t), torch.nn.functional.normalize(t, dim=1))
    for scale in (1e-11, 1e-13, 1e-15, 1e-20):  # (normalize's floor is 1e-12)
        np.testing.assert_allclose(torch.linalg.norm(unit_rows(t[:3] * scale), dim=1), 1.0,
                                   rtol=1e-5)


@pytest.mark.parametrize("cls", [FeedForwardTuner, ContrastiveTuner, ContrastiveLearner])
def test_refit_rows_exists_only_once_fitted(cls):
    assert not hasattr(cls(), "refit_rows_")
