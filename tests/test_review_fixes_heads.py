"""Fixes from a review of the heads and the sentence-model learners (session 27): each test
failed on the code before its fix."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from embetter.finetune import (
    ContrastiveLearner,
    ContrastiveTuner,
    FeedForwardTuner,
    SbertLearner,
    pairs_from_records,
)
from tests._sbert_helpers import learner, tuner

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 6)).astype(np.float32)
Y = np.array(["a", "b"] * 20)


@pytest.fixture
def float64_default():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_heads_train_and_load_under_a_float64_default_dtype(float64_default):
    # the network was built in the caller's default dtype, the rows are float32:
    # "mat1 and mat2 must have the same dtype" from deep inside torch
    saved = pickle.dumps(FeedForwardTuner(n_epochs=2, random_state=0).fit(X, Y))
    for head in (FeedForwardTuner(n_epochs=2, random_state=0),
                 ContrastiveTuner(max_steps=5, random_state=0)):
        out = head.fit(X, Y).partial_fit(X[:10], Y[:10]).transform(X)
        assert out.dtype == np.float32 and np.isfinite(out).all()
    assert ContrastiveLearner(epochs=2).fit(X, X, np.ones(40)).transform(X).dtype == np.float32
    assert pickle.loads(saved).transform(X).dtype == np.float32
    assert torch.get_default_dtype() == torch.float64  # the caller's setting stays


def test_heads_train_inside_inference_mode():
    # enable_grad does not lift inference mode: "element 0 of tensors does not require grad"
    with torch.inference_mode():
        fitted = FeedForwardTuner(n_epochs=2, random_state=0).fit(X, Y)
        ContrastiveTuner(max_steps=5, random_state=0).fit(X, Y)
        loaded = pickle.loads(pickle.dumps(fitted))
        assert torch.is_inference_mode_enabled()
    before = loaded.transform(X)
    loaded.partial_fit(X, Y)  # weights rebuilt under inference mode still train
    assert not np.array_equal(loaded.transform(X), before)


def test_early_stopping_without_validation_pairs_among_the_held_out_rows():
    # n_neg=0 and no two held-out rows of one class: ZeroDivisionError in the validation loss
    rows = np.random.default_rng(0).normal(size=(100, 6)).astype(np.float32)
    for seed in (0, 5):  # seed 5 drew no pair
        fitted = ContrastiveTuner(n_neg=0, early_stopping=True, random_state=seed)
        fitted.fit(rows, np.repeat(np.arange(20), 5))
        assert np.isfinite([h["valid_loss"] for h in fitted.history_]).all()


@pytest.mark.parametrize("seed", [9, 13])
def test_early_stopping_with_a_class_of_one_row(seed):
    # seed 9: ZeroDivisionError; seed 13: the lone row held out, "y has only one class (0 x 18)"
    y = ["a"] * 19 + ["b"]
    fitted = ContrastiveTuner(early_stopping=True, random_state=seed).fit(X[:20], y)
    assert fitted.n_iter_ >= 1 and np.isfinite(fitted.history_[-1]["valid_loss"])


def test_early_stopping_on_too_few_rows_says_what_it_needs():
    # "needs at least 4 rows (validation_fraction=0.1 of 10)": ten rows are more than four
    with pytest.raises(ValueError, match=r"1 of 10 here, and needs at least 2 held out"):
        ContrastiveTuner(early_stopping=True).fit(X[:10], list("ab") * 5)


def test_a_failed_partial_fit_puts_the_weights_back():
    rows = RNG.normal(size=(400, 6)).astype(np.float32)
    y = np.array(["a", "b"] * 200)
    fitted = ContrastiveTuner(epochs=20, batch_size=4, max_steps=None, random_state=0)
    fitted.fit(rows, y)
    before = fitted.transform(rows)
    fitted.set_params(learning_rate=1e30)
    with pytest.raises(FloatingPointError, match="lower learning_rate"):
        fitted.partial_fit(rows[:100], y[:100])
    # NaN weights were kept, with 21 records and n_iter_ 20
    assert np.array_equal(fitted.transform(rows), before)
    assert fitted.n_iter_ == len(fitted.loss_curve_) == len(fitted.history_) == 20
    fitted.set_params(learning_rate="auto").partial_fit(rows[:100], y[:100])
    assert fitted.n_iter_ > 20


def test_a_read_only_matrix_trains_without_a_torch_warning(tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, X)
    rows = np.load(path, mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "The given NumPy array is not writable"
        FeedForwardTuner(n_epochs=2, random_state=0).fit(rows, Y)
        ContrastiveTuner(max_steps=5, random_state=0).fit(rows, Y)


def test_pair_widths_are_compared_with_each_other_not_with_a_fit():
    with pytest.raises(ValueError, match="X2 has 3 features but X1 has 6"):
        ContrastiveLearner().fit(X, X[:, :3], np.ones(40))


def test_missing_labels_in_a_string_column_are_called_missing():
    y = pd.Series(["a", "b"] * 19 + [pd.NA, "a"], dtype="string")
    for head in (FeedForwardTuner(), ContrastiveTuner()):
        with pytest.raises(ValueError, match="y contains missing values"):
            head.fit(X, y)  # "y mixes kinds of labels (string ..., NAType ...)"


def test_a_head_on_a_torch_device_saves_and_loads_with_skops(tmp_path):
    from embetter.utils import load_skops, save_skops

    fitted = FeedForwardTuner(n_epochs=2, device=torch.device("cpu"), random_state=0).fit(X, Y)
    path = save_skops(fitted, tmp_path / "head.skops")
    loaded = load_skops(path)  # UntrustedTypesError: torch.device
    np.testing.assert_array_equal(loaded.transform(X), fitted.transform(X))


def test_pairs_from_records_refuses_one_label_as_a_string():
    records = [{"text": "a", "cats": {"x": 1}}, {"text": "b", "cats": {"x": 0}}]
    with pytest.raises(TypeError, match=r"pass \['x'\] for one label"):
        pairs_from_records(records, labels="x")  # split into characters before


def _batches_before(rows, batch_size, generator):
    """The batch plan as it was (every batch scanned every remaining row)."""
    order = torch.randperm(len(rows), generator=generator).numpy()
    columns = np.stack(rows.columns, axis=1)
    out, remaining = [], list(order)
    while remaining:
        batch, seen, later = [], set(), []
        for r in remaining:
            texts = set(columns[r].tolist())
            if len(batch) < batch_size and not texts & seen:
                batch.append(r)
                seen |= texts
            else:
                later.append(r)
        out.append(np.asarray(batch))
        remaining = later
    return out


def test_no_duplicate_batches_stop_scanning_when_full_and_plan_the_same():
    from embetter.finetune._trainer import Rows, batches

    rng = np.random.default_rng(0)
    rows = Rows([str(i) for i in range(50)], [rng.integers(0, 50, 300), rng.integers(0, 50, 300)])
    new = batches(rows, 16, torch.Generator().manual_seed(0), True)
    old = _batches_before(rows, 16, torch.Generator().manual_seed(0))
    assert len(new) == len(old) and all(np.array_equal(a, b) for a, b in zip(new, old))
    plan = np.concatenate(new)
    assert sorted(plan.tolist()) == list(range(300))  # every row once
    # scanning stops at a full batch: 40,000 rows plan in well under the quadratic minutes
    big = Rows([str(i) for i in range(80_000)], [np.arange(40_000), np.arange(40_000, 80_000)])
    assert sum(map(len, batches(big, 16, torch.Generator().manual_seed(0), True))) == 40_000


def test_a_sentence_encoder_whose_settings_would_be_lost_is_refused(tiny_model_path, labelled):
    from embetter.text import MatryoshkaEncoder, SentenceEncoder

    texts, y = labelled
    for encoder, named in [
        (SentenceEncoder(tiny_model_path, prompt="query: "), "prompt='query: '"),
        (SentenceEncoder(tiny_model_path, truncate_dim=8), "truncate_dim=8"),
        (SentenceEncoder(tiny_model_path, normalize_embeddings=True), "normalize_embeddings"),
        (MatryoshkaEncoder(tiny_model_path, dim=8), "dim=8"),
    ]:
        with pytest.raises(ValueError, match=f"with {named}.*would be lost"):
            tuner(encoder).fit(texts, y)  # trained and transformed without them, silently
    # settings that only choose speed are not refused
    fitted = tuner(SentenceEncoder(tiny_model_path, batch_size=4, backend="torch"), epochs=1)
    assert fitted.fit(texts, y).transform(texts[:2]).shape[0] == 2


@pytest.mark.parametrize("params", [{"max_seq_length": True}, {"learning_rate": True},
                                    {"epochs": True}, {"batch_size": True}])
def test_a_bool_is_not_a_number_for_the_learners(tiny_model_path, params):
    # True passed as 1: one token per text, a step size of 1.0, ...
    with pytest.raises(TypeError, match=f"{next(iter(params))} must be a number, got the bool"):
        learner(tiny_model_path, **params).fit(["a b", "c d"], ["c d", "a b"], [1.0, 0.0])


def test_a_bool_is_not_a_number_for_the_heads():
    with pytest.raises(TypeError, match="batch_size must be a number"):
        FeedForwardTuner(batch_size=True).fit(X, Y)
    with pytest.raises(TypeError, match="epochs must be a number"):
        ContrastiveTuner(epochs=True).fit(X, Y)


def test_a_bool_in_matryoshka_dims_is_refused(tiny_model_path):
    # np.asarray turned [True, 8] into [1, 8] before the bool check saw it
    fitted = SbertLearner(tiny_model_path, matryoshka_dims=[True, 8])
    with pytest.raises(ValueError, match="matryoshka_dims must be None or a non-empty list"):
        fitted.fit(["a b", "c d"], ["c d", "a b"], [1.0, 0.0])


def test_a_sparse_multi_label_y_is_read(tiny_model_path, labelled):
    import scipy.sparse

    texts, y = labelled
    dense = (y[:, None] == np.unique(y)[None, :2]).astype(int)
    dense[:, 0] |= np.arange(len(y)) % 2
    fitted = tuner(tiny_model_path, epochs=1).fit(texts, scipy.sparse.csr_matrix(dense))
    assert fitted.transform(texts[:2]).shape[0] == 2  # "y must be 1-D, got shape ()"
    head = ContrastiveTuner(max_steps=5, random_state=0)
    head.fit(RNG.normal(size=(len(y), 6)).astype(np.float32), scipy.sparse.csr_matrix(dense))


def test_loading_a_sentence_model_first_keeps_pythons_random_sequence(tiny_model_path):
    # sentence-transformers' first import draws from `random` (rich, at import time)
    code = (
        "import random, sklearn.base, sys\n"
        "sys.modules.pop('rich.style', None)\n"
        "import embetter._st as st\n"
        "assert 'sentence_transformers' not in sys.modules\n"
        "random.seed(0); expected = random.random(); random.seed(0)\n"
        f"st.load({tiny_model_path!r}, 'cpu')\n"
        "print(random.random() == expected)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.strip() == "True", done.stderr[-2000:]


def _interrupt_the_next_run(monkeypatch, head):
    original = type(head)._run

    def run_then_stop(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C after some steps

    monkeypatch.setattr(type(head), "_run", run_then_stop)
    return original


def test_a_partial_fit_interrupted_inside_inference_mode_trains_on(monkeypatch):
    rows, y = np.random.RandomState(0).randn(200, 8).astype(np.float32), np.arange(200) % 3
    head = FeedForwardTuner(hidden_dim=16, n_epochs=20, batch_size=16, refit_growth=None,
                            random_state=0).partial_fit(rows[:40], y[:40], classes=[0, 1, 2])
    original = _interrupt_the_next_run(monkeypatch, head)
    with torch.inference_mode(), pytest.raises(KeyboardInterrupt):
        head.partial_fit(rows[40:80], y[40:80])
    monkeypatch.setattr(type(head), "_run", original)
    # the put-back optimizer state was made of inference tensors: "Inplace update to
    # inference tensor outside InferenceMode" at every later call
    head.partial_fit(rows[80:120], y[80:120])


def test_an_interrupted_retrain_after_set_params_raises_the_interruption(monkeypatch):
    rows, y = np.random.RandomState(0).randn(200, 8).astype(np.float32), np.arange(200) % 3
    head = FeedForwardTuner(hidden_dim=16, n_epochs=2, random_state=0)
    head.partial_fit(rows[:40], y[:40], classes=[0, 1, 2])
    head.set_params(hidden_dim=32)  # a stream refuses it now (session 28): fit takes it
    with pytest.raises(ValueError, match="hidden_dim was set to 32"):
        head.partial_fit(rows[40:100], y[40:100])
    head.set_params(hidden_dim=16)
    before = {k: v.clone() for k, v in head.module_.state_dict().items()}
    monkeypatch.setattr(type(head), "_run", lambda self, *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        head.partial_fit(rows[40:100], y[40:100])  # 100 >= 1.5 x 40 rows: retrains
    assert head.module_.hidden.out_features == 16  # the old network, untouched
    assert all(torch.equal(v, head.module_.state_dict()[k]) for k, v in before.items())


# -- a review of the heads and learners (session 29) --------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: FeedForwardTuner(n_epochs=2, hidden_dim=16, random_state=0),
    lambda: ContrastiveLearner(shape_out=4, epochs=2, random_state=0),
])
def test_the_seed_alone_decides_the_start_whatever_the_default_dtype(make):
    """The layers were built in torch's default dtype: under float64 the random start drew
    other numbers, and the same random_state gave another model."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)).astype(np.float32)
    y = np.arange(60) % 3

    def fitted():
        model = make()
        if isinstance(model, ContrastiveLearner):
            return model.fit(X[:30], X[30:], (y[:30] == y[30:]).astype(float)).transform(X)
        return model.fit(X, y).transform(X)

    expected = fitted()
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = fitted()
    finally:
        torch.set_default_dtype(before)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("y", [np.arange(4), np.eye(4, dtype=int)])
def test_contrastive_tuner_fit_without_any_positive_pair_says_so(y):
    X = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="no training pairs: n_neg=0"):
        ContrastiveTuner(n_pos=1, n_neg=0, random_state=0).fit(X, y)


def test_contrastive_learner_predicts_zero_pairs_as_it_transforms_zero_rows():
    rng = np.random.default_rng(0)
    X1, X2 = rng.normal(size=(2, 40, 8)).astype(np.float32)
    learner = ContrastiveLearner(epochs=1, random_state=0).fit(X1, X2, np.ones(40))
    empty = np.zeros((0, 8), dtype=np.float32)
    assert learner.transform(empty).shape == (0, 8)
    out = learner.predict(empty, empty)
    assert out.shape == (0,) and out.dtype == np.float32
