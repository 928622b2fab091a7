"""Hard-negative mining for pair losses (`embetter.finetune` mining helpers)."""

from __future__ import annotations

import numpy as np
import pytest

from tests._sbert_helpers import learner


def unit_rows(*rows):
    X = np.array(rows, dtype=np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_mining_picks_the_closest_non_match():
    from embetter.finetune import mine_hard_negatives

    anchors = ["q0", "q1", "q2", "q0"]  # q0 has two positives: neither is its negative
    positives = ["p0", "p1", "p2", "p0b"]
    A = unit_rows([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0])
    P = unit_rows([1, 0.6, 0], [0.6, 1, 0.3], [0, 0.3, 1], [1, 0, 0.2])
    a, p, n = mine_hard_negatives(anchors, positives, embeddings=(A, P), margin=None)
    assert list(zip(a, p, n)) == [
        ("q0", "p0", "p1"), ("q1", "p1", "p0"), ("q2", "p2", "p1"), ("q0", "p0b", "p1")
    ]
    a, p, n = mine_hard_negatives(anchors, positives, embeddings=(A, P), n_negatives=2,
                                  margin=None)
    assert [x for x, q in zip(n, a) if q == "q1"] == ["p0", "p2"]  # most similar first
    # a margin skips candidates nearly as close as the positive (likely unlabelled matches)
    a, p, n = mine_hard_negatives(anchors, positives, embeddings=(A, P), margin=0.5)
    assert list(zip(a, n)) == [("q0", "p2"), ("q1", "p2"), ("q2", "p1"), ("q0", "p2")]


def test_mining_with_models_feeds_mnrl(tiny_model_path, corpus):
    from embetter.finetune import mine_hard_negatives

    anchors, positives = corpus[0:40:2], corpus[1:41:2]
    a, p, n = mine_hard_negatives(anchors, positives, tiny_model_path, margin=None)
    assert len(a) == 20 and all(x != y for x, y in zip(p, n)) and set(n) <= set(positives)
    fitted = learner(tiny_model_path, loss="mnrl", batch_size=8).fit(a, p, negatives=n)
    # a fitted learner (or any transformer) can mine with its own, tuned embeddings
    a2, _, n2 = mine_hard_negatives(anchors, positives, fitted, n_negatives=3, margin=None)
    assert len(a2) == 60 and len(n2) == 60


def test_mining_bad_input():
    from embetter.finetune import mine_hard_negatives

    A = unit_rows([1, 0], [0, 1])
    with pytest.raises(ValueError, match="same number"):
        mine_hard_negatives(["a", "b"], ["c"], embeddings=(A, A))
    with pytest.raises(ValueError, match="at least 2"):
        mine_hard_negatives(["a"], ["c"], embeddings=(A[:1], A[:1]))
    with pytest.raises(ValueError, match="embeddings\\[1\\] has 3 rows"):
        mine_hard_negatives(["a", "b"], ["c", "d"], embeddings=(A, unit_rows([1, 0], [0, 1],
                                                                               [1, 1])))
    with pytest.raises(ValueError, match="no hard negative"):
        mine_hard_negatives(["a", "b"], ["c", "d"], embeddings=(A, A), margin=2.0)
    with pytest.raises(ValueError, match="n_negatives"):
        mine_hard_negatives(["a", "b"], ["c", "d"], embeddings=(A, A), n_negatives=0)
    with pytest.raises(TypeError, match="model must be"):
        mine_hard_negatives(["a", "b"], ["c", "d"], model=3)
