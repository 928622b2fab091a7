import numpy as np
import pytest

from embetter.finetune import generate_pairs


def test_pairs_are_correct_and_seeded():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    i, j, sim = generate_pairs(y, n_neg=3, random_state=1)
    assert ((y[i] == y[j]) == (sim == 1)).all()
    assert not (i == j).any()
    assert (sim == 1).sum() == len(y) and (sim == 0).sum() == 3 * len(y)
    again = generate_pairs(y, n_neg=3, random_state=1)
    assert all((a == b).all() for a, b in zip((i, j, sim), again))
    other = generate_pairs(y, n_neg=3, random_state=2)
    assert not (other[1] == j).all()


def test_singleton_class_gets_no_self_pair():
    y = np.array(["a", "b", "b"])
    i, j, sim = generate_pairs(y, n_neg=1, random_state=0)
    assert not (i == j).any()
    assert ((y[i] == y[j]) == (sim == 1)).all()


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match="only one class"):
        generate_pairs([1, 1, 1])


def test_multilabel_pairs():
    Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    i, j, sim = generate_pairs(Y, n_neg=2, random_state=0)
    shares = (Y[i] & Y[j]).any(axis=1)
    assert (shares == (sim == 1)).all()
    assert not (i == j).any()


def test_a_label_only_one_row_carries_costs_no_positive():
    """Row 0's third label is its own: all of its n_pos positives come from its first label."""
    Y = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 0], [0, 1, 0]])
    for seed in range(5):
        i, j, sim = generate_pairs(Y, n_neg=0, n_pos=4, random_state=seed)
        assert (i == 0).sum() == 4 and (j[i == 0] == 1).all()
        assert (Y[i] & Y[j]).any(axis=1).all() and not (i == j).any()


def test_large_label_vector():
    y = np.random.default_rng(0).integers(0, 50, size=100_000)
    i, j, sim = generate_pairs(y, n_neg=3, random_state=0)
    assert i.shape == (400_000,)
    assert ((y[i] == y[j]) == (sim == 1)).all()


def test_pair_sampler_draws_fresh_index_pairs_each_epoch():
    from embetter.finetune._pairs import PairSampler

    y = np.repeat(["a", "b", "c"], 20)
    sampler = PairSampler(y, n_neg=2, n_pos=1, random_state=0)
    assert sampler.pairs_per_row == 3 and sampler.classes.tolist() == ["a", "b", "c"]
    (i1, j1, s1), (i2, j2, s2) = sampler.draw(), sampler.draw()
    assert i1.dtype == j1.dtype == np.int64 and s1.dtype == np.float32
    assert ((y[i1] == y[j1]) == (s1 == 1)).all() and ((y[i2] == y[j2]) == (s2 == 1)).all()
    assert not np.array_equal(j1, j2)  # new partners every epoch
    again = PairSampler(y, n_neg=2, n_pos=1, random_state=0)
    assert np.array_equal(again.draw()[1], j1)  # ... and repeatable from the seed
    with pytest.raises(ValueError, match="n_neg must be an int >= 0"):
        PairSampler(y, n_neg=-1)


def test_balanced_anchors_give_each_class_the_same_share_of_the_pairs():
    from embetter.finetune._pairs import PairSampler

    y = np.array([0] * 26 + [1] * 174)
    every = PairSampler(y, n_neg=3, n_pos=1, random_state=0).draw()
    assert np.bincount(y[every[0]]).tolist() == [26 * 4, 174 * 4]  # every row anchors
    i, j, sim = PairSampler(y, n_neg=3, n_pos=1, random_state=0, anchors="balanced").draw()
    assert np.bincount(y[i]).tolist() == [100 * 4, 100 * 4]  # as many pairs, half each
    assert ((y[i] == y[j]) == (sim == 1)).all() and not (i == j).any()
    assert np.unique(i[y[i] == 0]).size == 26  # the small class's rows, drawn again
    y3 = np.array([0] * 5 + [1] * 3 + [2] * 7)
    i3, _, _ = PairSampler(y3, n_neg=1, n_pos=0, random_state=0, anchors="balanced").draw()
    assert np.bincount(y3[i3]).tolist() == [5, 5, 5]
    with pytest.raises(ValueError, match="anchors must be 'all' or 'balanced'"):
        PairSampler(y, anchors="equal")
    with pytest.raises(ValueError, match="anchors='balanced' need single-label"):
        PairSampler(np.eye(3, dtype=int)[[0, 1, 2, 0]], anchors="balanced")
