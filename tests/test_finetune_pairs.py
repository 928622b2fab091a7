"""Negative strategies of generate_pairs, and text pairs from bulk-labelling records."""

import numpy as np
import pytest

from embetter.finetune import generate_pairs, pairs_from_records


def test_balanced_strategy_spreads_negatives_over_classes():
    y = np.array([0] * 900 + [1] * 50 + [2] * 50)
    i, j, sim = generate_pairs(y, n_neg=4, n_pos=0, strategy="balanced", random_state=0)
    assert (y[i] != y[j]).all() and (sim == 0).all()
    from_zero = y[j][y[i] == 0]
    # class 1 and 2 are each drawn half of the time, not 5%
    assert 0.4 < np.mean(from_zero == 1) < 0.6
    random = generate_pairs(y, n_neg=4, n_pos=0, random_state=0)
    assert np.mean(y[random[1]][y[random[0]] == 0] == 1) < 0.6
    again = generate_pairs(y, n_neg=4, n_pos=0, strategy="balanced", random_state=0)
    assert np.array_equal(again[1], j)


def test_strategy_errors():
    with pytest.raises(ValueError, match="strategy"):
        generate_pairs([0, 1], strategy="hardest")
    with pytest.raises(ValueError, match="single-label"):
        generate_pairs(np.eye(3, dtype=int), strategy="balanced")


RECORDS = [
    {"text": "our code and dataset are public", "cats": {"new-dataset": 1, "dev-research": 0}},
    {"text": "we release a corpus", "cats": {"new-dataset": 1}},
    {"text": "a new benchmark of 10k questions", "cats": {"new-dataset": 1}},
    {"text": "we tune the learning rate", "cats": {"new-dataset": 0, "dev-research": 1}},
    {"text": "faster training on GPUs", "cats": {"new-dataset": 0}},
    {"text": "an unlabelled abstract", "cats": {}},
    {"text": "a study of developers", "cats": {"dev-research": 1}},
]


def test_pairs_from_records_respect_partial_labels():
    t1, t2, sim = pairs_from_records(RECORDS, n_neg=2, n_pos=1, random_state=0)
    assert len(t1) == len(t2) == len(sim)
    cats = {r["text"]: r["cats"] for r in RECORDS}
    for a, b, s in zip(t1, t2, sim):
        assert a != b
        shared = [k for k in cats[a] if cats[a][k] == 1 and k in cats[b]]
        # the anchor is positive for some label that its partner is labelled for
        assert shared, (a, b)
        assert s == float(any(cats[b][k] == 1 for k in shared))
    assert "an unlabelled abstract" not in set(t1) | set(t2)
    # new-dataset: 3 positives x (1 pos + 2 neg); dev-research: 2 positives x (1 pos + 1... neg)
    assert (sim == 1).sum() == 3 + 2


def test_pairs_from_records_options_and_errors():
    t1, _, sim = pairs_from_records(RECORDS, labels=["new-dataset"], n_neg=3, random_state=1)
    assert len(t1) == 3 * 4
    again = pairs_from_records(RECORDS, labels=["new-dataset"], n_neg=3, random_state=1)
    assert again[0] == t1
    with pytest.raises(ValueError, match="occur in no record"):
        pairs_from_records(RECORDS, labels=["nope"])
    with pytest.raises(ValueError, match="0 or 1"):
        pairs_from_records([{"text": "a", "cats": {"x": 2}}])
    with pytest.raises(ValueError, match="'text' str"):
        pairs_from_records([{"cats": {"x": 1}}])
    with pytest.raises(ValueError, match="no pairs"):
        pairs_from_records([{"text": "a", "cats": {"x": 1}}])


def test_pairs_from_many_records():
    rng = np.random.default_rng(0)
    flags = rng.integers(0, 3, size=(100_000, 2))  # 2 = label not given
    records = [{"text": f"t{i}", "cats": {k: int(v) for k, v in zip("ab", row) if v < 2}}
               for i, row in enumerate(flags)]
    t1, t2, sim = pairs_from_records(records, n_neg=3, random_state=0)
    n_pos = (flags == 1).sum()
    assert len(t1) == 4 * n_pos and (sim == 1).sum() == n_pos
