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
