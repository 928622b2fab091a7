"""SbertTuner.partial_fit: streams of labelled batches, the weight average, retraining."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tests._sbert_helpers import tuner


def test_tuner_partial_fit_keeps_training_one_model(tiny_model_path, labelled):
    texts, y = labelled
    classes = np.unique(y)
    # an exact count: every text has negatives; no retrain, so one model trains on
    stream = tuner(tiny_model_path, n_neg=2, n_pos=0, refit_growth=None)
    stream.partial_fit(texts[:12], y[:12], classes=classes)
    model = stream.model_
    first = stream.transform(texts)
    assert stream.n_pairs_ == 12 * 2 and stream.n_iter_ == 1
    stream.partial_fit(texts[12:], y[12:])
    assert stream.model_ is model and not np.allclose(stream.transform(texts), first, atol=1e-5)
    # pairs follow the rows a call brings: n_pos + n_neg per new text
    assert stream.n_pairs_ == len(texts) * 2 and stream.n_iter_ == 2
    assert len(stream.loss_curve_) == 2 and [h["epoch"] for h in stream.history_] == [1, 2]
    with pytest.raises(ValueError, match="labels not seen before"):
        stream.partial_fit(texts[:2], np.array(["flies", "unknown"]))
    assert stream.fit(texts, y).n_iter_ == 1 and stream.model_ is not model  # fit starts over


def test_stream_average_trains_on_raw_weights_and_serves_their_tail_average():
    import torch

    from embetter.finetune._stream_average import StreamAverage

    layer = torch.nn.Linear(2, 2)
    params = dict(layer.named_parameters())

    def values():
        return {float(v) for p in params.values() for v in p.detach().ravel()}

    def train_to(value):
        with torch.no_grad():
            for p in params.values():
                p.fill_(value)

    average = StreamAverage()
    average.start(params)
    train_to(1.0)
    average.end(params, n_new=10, n_seen=10)  # one call: its weights are the model's
    assert values() == {1.0}
    average.start(params)
    train_to(4.0)
    average.end(params, n_new=10, n_seen=20)  # weights 10 * 10 and 10 * 20
    assert values() == {3.0}  # (100 * 1 + 200 * 4) / 300: the model serves the average
    average.start(params)
    assert values() == {4.0}  # ... and the next call trains on from its own weights
    average.end(params, n_new=0, n_seen=20)  # no new rows: no weight in the average
    assert values() == {3.0}
    restored = pickle.loads(pickle.dumps(average))
    assert restored.weight == 300 and restored._raw is None  # the raw copy is not pickled
    restored.start(params)  # after loading, training carries on from the average
    assert values() == {3.0}


def test_tuner_stream_serves_the_row_weighted_average_of_its_calls(tiny_model_path, labelled):
    import torch

    texts, y = labelled
    stream = tuner(tiny_model_path, refit_growth=None)
    stream.partial_fit(texts[:12], y[:12], classes=np.unique(y))
    assert stream._average._raw is None  # one call (a fit): no second copy of the weights
    after_one = {k: p.detach().clone() for k, p in stream.model_.named_parameters()}
    stream.partial_fit(texts[12:], y[12:])
    raw, served = stream._average._raw, dict(stream.model_.named_parameters())
    first, second = 12 * 12, (len(texts) - 12) * len(texts)  # new rows * rows seen
    assert "embeddings.word_embeddings.weight" not in "".join(raw)  # frozen: not copied
    for name, p in raw.items():
        expected = (first * after_one[name] + second * p) / (first + second)
        torch.testing.assert_close(served[name], expected)
    assert any(not torch.equal(p, served[name]) for name, p in raw.items())
    again = pickle.loads(pickle.dumps(stream))
    np.testing.assert_allclose(again.transform(texts[:3]), stream.transform(texts[:3]),
                               atol=1e-6)

    def fail_midway(*args):  # a call that trains the raw weights, then fails
        with torch.no_grad():
            for p in raw:
                served[p].fill_(0.5)
        raise KeyboardInterrupt

    before = stream.transform(texts[:3])
    stream._train_pairs = fail_midway
    with pytest.raises(KeyboardInterrupt):
        stream.partial_fit(texts[:4], y[:4])
    del stream._train_pairs
    np.testing.assert_array_equal(stream.transform(texts[:3]), before)  # the average again
    assert again.partial_fit(texts[:4], y[:4]).n_iter_ == 3


def test_tuner_stream_retrains_when_the_texts_seen_have_grown(tiny_model_path, labelled):
    """`refit_growth=2`: a call that brings the texts seen to twice those the model was last
    trained from the start on retrains a fresh copy on all of them, which is exactly `fit` on
    those texts; calls in between keep training the same model."""
    import torch

    texts, y = labelled
    classes = np.unique(y)
    stream = tuner(tiny_model_path, refit_growth=2.0)
    stream.partial_fit(texts[:10], y[:10], classes=classes)
    assert stream.refit_rows_ == 10
    stream.partial_fit(texts[10:15], y[10:15])  # 15 < 2 * 10: the same model trains on
    model, pairs = stream.model_, stream.n_pairs_
    stream.partial_fit(texts[15:20], y[15:20])  # 20 texts: a fresh copy trains on all 20
    assert stream.refit_rows_ == 20 and stream.model_ is not model
    fitted = tuner(tiny_model_path, refit_growth=2.0).fit(texts[:20], y[:20])
    np.testing.assert_array_equal(stream.transform(texts), fitted.transform(texts))
    assert stream.n_pairs_ == pairs + fitted.n_pairs_ and stream.n_iter_ == fitted.n_iter_ == 1
    stream.partial_fit(texts[20:30], y[20:30])  # 30 < 40: continues the retrained model
    assert stream.refit_rows_ == 20 and len(stream.seen_texts_) == 30
    with pytest.raises(ValueError, match="labels not seen before"):
        stream.partial_fit(texts[:30], np.array(["unknown"] * 30))  # a retrain's batch is checked
    with pytest.raises(ValueError, match="differs from the classes this stream started with"):
        stream.partial_fit(texts[:30], y[:30], classes=classes[:2])

    def fail_midway(*args):
        raise KeyboardInterrupt

    before, learner = stream.transform(texts[:3]), stream.learner_
    stream._train_pairs = fail_midway
    with pytest.raises(KeyboardInterrupt):  # a retrain that fails leaves the stream as it was
        stream.partial_fit(texts[:30], y[:30])
    del stream._train_pairs
    assert stream.learner_ is learner and len(stream.seen_texts_) == 30
    assert stream.refit_rows_ == 20 and stream.classes_ is not None
    np.testing.assert_array_equal(stream.transform(texts[:3]), before)
    with pytest.raises(ValueError, match="y has 29 entries"):  # a refused fit keeps it too
        stream.fit(texts[:30], y[:29])
    assert stream.learner_ is learner and len(stream.seen_texts_) == 30
    # a tuner pickled before refit_growth existed streams on without retraining
    old = pickle.loads(pickle.dumps(stream))
    del old.__dict__["refit_growth"], old.__dict__["refit_rows_"]
    assert old.refit_growth is None and not old._refit_due(10**6)
    with pytest.raises(ValueError, match="refit_growth"):
        tuner(tiny_model_path, refit_growth=1.0).fit(texts, y)
    with pytest.raises(ValueError, match="refit_growth"):
        tuner(tiny_model_path, refit_growth="2").fit(texts, y)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("loss", ["contrastive", "supcon"])
def test_tuner_one_partial_fit_call_is_fit(tiny_model_path, labelled, loss):
    """A stream whose first batch holds every row (batches of 2,000 over 1,000 rows in the
    streaming grid) trains exactly what one fit trains, label texts included."""
    texts, y = labelled
    names = {label: f"they {label}" for label in np.unique(y)}
    kw = dict(loss=loss, label_texts=names, batch_size=8)
    fitted = tuner(tiny_model_path, **kw).fit(texts, y)
    streamed = tuner(tiny_model_path, **kw).partial_fit(texts, y, classes=np.unique(y))
    assert streamed.n_pairs_ == fitted.n_pairs_ > len(texts)
    np.testing.assert_array_equal(streamed.transform(texts), fitted.transform(texts))


def test_tuner_supcon_streams_positive_pairs_of_new_rows(tiny_model_path, labelled):
    from embetter.finetune._pairs import pairs_for_new_rows

    texts, y = labelled
    stream = tuner(tiny_model_path, loss="supcon", batch_size=8, n_pos=2)
    stream.partial_fit(texts[:12], y[:12])
    first = stream.n_pairs_
    stream.partial_fit(texts[12:16], y[12:16])
    # the same positive pairs the tuner draws: its new rows, partners from every row so far
    expected = [pairs_for_new_rows(y[:n], n_old, 2, 0, stream._pair_seed + n_old)[2].size
                for n_old, n in ((0, 12), (12, 16))]
    assert (first, stream.n_pairs_ - first) == tuple(expected) and 0 < expected[1] <= 4 * 2
    assert stream.learner_.n_steps_ == sum(-(-n // 8) for n in expected)


def test_stream_pairs_replay_earlier_rows_within_the_new_rows_budget():
    from embetter.finetune._pairs import generate_pairs, pairs_for_new_rows

    y = np.repeat(np.arange(4), 10)
    fresh = pairs_for_new_rows(y[:20], 0, 2, 2, random_state=0)  # a first call: fit's pairs
    expected = generate_pairs(y[:20], n_neg=2, n_pos=2, random_state=0)
    assert all(np.array_equal(a, b) for a, b in zip(fresh, expected))
    i, j, sim = pairs_for_new_rows(y, 20, 2, 2, random_state=0)
    assert len(i) == 20 * 4  # the budget of the 20 new rows ...
    assert (i < 20).any() and (i >= 20).any()  # ... spent on them and on replayed rows
    assert np.array_equal(sim == 1, y[i] == y[j])  # partners from every row so far


def test_a_later_batch_of_another_label_type_is_refused_by_name(tiny_model_path, labelled):
    # joined with earlier int labels, the strings made every int a string: new classes
    texts, _ = labelled
    stream = tuner(tiny_model_path, refit_growth=None)
    stream.partial_fit(texts[:8], np.array([0, 1] * 4))
    with pytest.raises(ValueError, match="y holds strings but earlier batches held numbers"):
        stream.partial_fit(texts[8:12], np.array(["0", "1"] * 2))
    assert stream.seen_y_.tolist() == [0, 1] * 4
