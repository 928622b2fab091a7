"""Fixes from a second review of the heads and their engine: each test failed on the code
before its fix."""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest
import torch

from embetter.finetune import ContrastiveLearner, ContrastiveTuner, FeedForwardTuner

RNG = np.random.default_rng(0)
X = RNG.normal(size=(300, 4)).astype(np.float32)
X2 = RNG.normal(size=(300, 4)).astype(np.float32)
Y = np.arange(300) % 3
SIMILAR = (np.arange(300) % 2).astype(float)

HEADS = {
    "ff": lambda **kw: FeedForwardTuner(hidden_dim=8, n_epochs=3, batch_size=8,
                                        random_state=0, **kw),
    "ct": lambda **kw: ContrastiveTuner(epochs=3, batch_size=8, random_state=0, **kw),
    "cl": lambda **kw: ContrastiveLearner(epochs=3, batch_size=8, random_state=0, **kw),
}


def _fit(name, head, rows):
    if name == "cl":
        return head.fit(X[rows], X2[rows], SIMILAR[rows])
    return head.fit(X[rows], Y[rows])


def _stream(name, head, rows):
    if name == "cl":
        return head.partial_fit(X[rows], X2[rows], SIMILAR[rows])
    return head.partial_fit(X[rows], Y[rows])


@pytest.mark.parametrize("name", HEADS)
def test_a_head_loaded_under_inference_mode_streams_on(name):
    # the optimizer's moments were loaded as inference tensors: the next step could not
    # update them in place
    blob = pickle.dumps(_fit(name, HEADS[name](), slice(0, 30)))
    with torch.inference_mode():
        loaded = pickle.loads(blob)
    # (10 rows: no retrain from the start, which would build a new optimizer)
    assert _stream(name, loaded, slice(30, 40)).n_iter_ >= 1


@pytest.mark.parametrize("name", HEADS)
def test_a_memory_mapped_head_streams_without_touching_its_file(name, tmp_path):
    # the replay memory was written in place: read-only after mmap_mode="r", and the saved
    # file itself changed under mmap_mode="r+"
    path = tmp_path / "head.joblib"
    joblib.dump(_fit(name, HEADS[name](replay_size=50), slice(0, 200)), path)
    before = path.read_bytes()
    for mode in ("r", "r+"):
        _stream(name, joblib.load(path, mmap_mode=mode), slice(200, 260))
    assert path.read_bytes() == before


@pytest.mark.parametrize("device", ["meta", "hpu", "vulkan"])
def test_a_device_kind_that_cannot_train_here_is_refused(device):
    # they passed the check and failed inside torch
    with pytest.raises(ValueError, match=f"torch has no {device} device"):
        FeedForwardTuner(device=device).fit(X[:30], Y[:30])


def test_the_loss_record_does_not_follow_torchs_default_dtype():
    reference = FeedForwardTuner(hidden_dim=8, n_epochs=5, batch_size=16, random_state=0)
    reference.fit(X, Y)
    torch.set_default_dtype(torch.float16)
    try:
        half = FeedForwardTuner(hidden_dim=8, n_epochs=5, batch_size=16, random_state=0)
        half.fit(X, Y)
    finally:
        torch.set_default_dtype(torch.float32)
    assert half.loss_curve_ == reference.loss_curve_


def test_early_stopping_that_leaves_no_positive_pair_is_refused():
    # 10 classes of 4 rows, three quarters held out: one row per class left, n_neg=0 drew
    # no pair, and fit returned with nothing trained
    labels = np.repeat(np.arange(10), 4)
    with pytest.raises(ValueError, match="no training pairs"):
        ContrastiveTuner(n_neg=0, n_pos=1, early_stopping=True, validation_fraction=0.75,
                         random_state=0).fit(X[:40], labels)


@pytest.mark.parametrize("name, change", [("ff", {"optimizer": "adam"}),
                                          ("cl", {"optimizer": "adam"}),
                                          ("cl", {"loss": "infonce"})])
def test_a_stream_refuses_a_new_optimizer_or_loss(name, change):
    # ignored until a retrain took it silently; a new loss replayed pairs labelled for the old
    stream = _stream(name, HEADS[name](), slice(0, 30))
    key = next(iter(change))
    with pytest.raises(ValueError, match=f"{key} was set to"):
        _stream(name, stream.set_params(**change), slice(30, 60))


def test_loading_a_file_that_is_not_a_learners_names_it(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not a model")
    with pytest.raises(ValueError, match="is not a file written by ContrastiveLearner.save"):
        ContrastiveLearner.load(junk)


def test_heads_build_on_the_cpu_whatever_torchs_default_device():
    # the network was built on torch's default device ("meta" here: nothing to copy out)
    reference = FeedForwardTuner(hidden_dim=8, n_epochs=2, random_state=0, device="cpu")
    expected = reference.fit(X[:60], Y[:60]).transform(X[:5])
    torch.set_default_device("meta")
    try:
        head = FeedForwardTuner(hidden_dim=8, n_epochs=2, random_state=0, device="cpu")
        head.fit(X[:60], Y[:60])
    finally:
        torch.set_default_device(None)
    np.testing.assert_array_equal(head.transform(X[:5]), expected)


def test_a_stream_of_the_deprecated_loss_name_goes_on_after_pickling_and_saving(tmp_path):
    # the stream's settled loss kept "contrastive" while loading renamed the parameter
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        stream = _stream("cl", HEADS["cl"](loss="contrastive"), slice(0, 30))
    again = pickle.loads(pickle.dumps(stream))
    assert _stream("cl", again, slice(30, 40)).loss == "cosine_margin"
    loaded = ContrastiveLearner.load(stream.save(tmp_path / "learner.pt"))
    assert _stream("cl", loaded, slice(30, 40)).n_iter_ >= 1


def test_a_contrastive_stream_without_pairs_at_a_retrain_waits_for_them():
    # n_neg=0 and a retrain whose rows hold no two of a class: it drew nothing before, and
    # must not raise (later batches bring pairs)
    stream = ContrastiveTuner(hidden_dim=4, n_neg=0, n_pos=1, random_state=0)
    stream.partial_fit(X[:2], [0, 1], classes=[0, 1, 2, 3])
    assert stream.partial_fit(X[2:4], [2, 3]).n_features_in_ == 4


@pytest.mark.parametrize("multilabel", [False, True])
def test_a_retrain_whose_early_stopping_split_is_unusable_streams_on(multilabel):
    # one class holds two rows, every other one: no split of the 24 rows at the retrain
    # gives pairs on both sides; the stream's second call raised, and so would every later one
    labels = np.r_[0, np.arange(23)]
    y = np.eye(23, dtype=int)[labels] if multilabel else labels
    head = ContrastiveTuner(hidden_dim=4, n_neg=0, n_pos=1, early_stopping=True,
                            random_state=0)
    head.partial_fit(X[:12], y[:12], **({} if multilabel else {"classes": np.arange(23)}))
    before = head.transform(X[:5])
    head.partial_fit(X[12:24], y[12:24])
    assert head.refit_rows_ == 12  # no retrain: the stream went on
    assert head.transform(X[:5]).shape == before.shape
    with pytest.raises(ValueError, match="validation pairs|cannot be trained on"):
        ContrastiveTuner(hidden_dim=4, n_neg=0, n_pos=1, early_stopping=True,
                         random_state=0).fit(X[:24], y[:24])  # fit still says why


@pytest.mark.parametrize("head", [ContrastiveTuner, FeedForwardTuner])
def test_a_first_stream_call_of_fewer_rows_than_a_batch_trains_as_fit(head):
    # fit takes a step a pass however few the rows; a stream's first 10 rows earned 10/128
    # of a step a pass (0 or 1 steps: a first labelling round predicted one class)
    rows, labels = X[:10], np.arange(10) % 5
    fitted = head(random_state=0).fit(rows, labels)
    streamed = head(random_state=0).partial_fit(rows, labels, classes=np.arange(5))
    assert streamed._n_steps == fitted._n_steps >= 10


def test_a_stream_after_a_small_first_call_trains_as_one_fit_on_its_rows():
    # the first call trains as fit (a step a pass); later calls earn what fit's steps grow
    # beyond that, so the stream still trains as much as one fit (FeedForwardTuner's "auto"
    # epochs fall as classes fill: a floor on the whole budget dipped and was earned twice)
    head = FeedForwardTuner(refit_growth=None, random_state=0)
    for start, stop in ((0, 44), (44, 64), (64, 120), (120, 200)):
        head.partial_fit(X[start:stop], Y[start:stop] % 2, classes=[0, 1])
    assert head._n_steps == int(max(head._first_steps(44), head._stream_budget(200)) + 1e-9)
    before = head._n_steps
    head.set_params(batch_size=256)  # the budget counted afresh in the new settings
    head.partial_fit(X[200:300], Y[200:300] % 2)
    assert head._n_steps > before


def test_a_stream_whose_first_call_holds_one_class_trains_as_fit_at_its_second():
    # the first call draws no pair: the second, the first that can train, takes fit's steps
    # on the rows so far (it took its rows' share only: 14 rows of 3 classes, 0 steps)
    head = ContrastiveTuner(refit_growth=None, random_state=0)
    head.partial_fit(X[:10], np.zeros(10, dtype=int), classes=[0, 1, 2])
    assert head._n_steps == 0
    head.partial_fit(X[10:14], [0, 1, 2, 1])
    assert head._n_steps == ContrastiveTuner(random_state=0).fit(
        X[:14], np.r_[np.zeros(10, dtype=int), [0, 1, 2, 1]])._n_steps


def test_an_address_keeps_its_host_when_its_query_holds_an_at_sign():
    from embetter.external._core import _shown

    assert _shown("api.example.com/v1?user=me@x.org") == "api.example.com/v1"
    assert _shown("user:pa?SECRET@host/v1?k=SECRET") == "***@host/v1"
