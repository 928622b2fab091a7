"""Hard-negative mining: for each (anchor, positive) pair, the closest text that is not a match."""

from __future__ import annotations

import numbers
import os

import numpy as np

from embetter._validation import as_matrix, as_texts, check_int


def _embed(model, texts, batch_size):
    """Encode with whatever was passed: a name/path, a SentenceTransformer, or a transformer."""
    if isinstance(model, (str, os.PathLike)):
        from embetter.text import SentenceEncoder

        model = SentenceEncoder(os.fspath(model), batch_size=batch_size)
    if hasattr(model, "transform"):
        return _row_per_text(model.transform(texts), texts)
    if hasattr(model, "encode"):
        training = getattr(model, "training", False)  # encode() switches a model to eval
        try:
            emb = model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
        finally:
            if training:
                model.train()
        return _row_per_text(emb, texts)
    raise TypeError(
        "model must be a model name or path, a SentenceTransformer, or a fitted transformer "
        f"such as SentenceEncoder or SbertLearner, got {type(model).__name__}"
    )


def _row_per_text(embeddings, texts) -> np.ndarray:
    """The model's embeddings as a matrix, checked to hold one row per text."""
    M = as_matrix(embeddings, "the model's embeddings")
    if M.shape[0] != len(texts):
        raise ValueError(f"the model returned {M.shape[0]} embeddings for {len(texts)} texts; "
                         "it must return one row per text")
    return M


def _given_embeddings(embeddings, n_pairs: int):
    """`mine_hard_negatives`' precomputed `(anchor_embeddings, positive_embeddings)`, checked:
    two matrices of one width, a row per pair each."""
    if not isinstance(embeddings, (tuple, list)) or len(embeddings) != 2:
        raise ValueError(
            "embeddings must be a pair (anchor_embeddings, positive_embeddings), got "
            f"{type(embeddings).__name__}"
        )
    A = as_matrix(embeddings[0], "embeddings[0]")
    P = as_matrix(embeddings[1], "embeddings[1]")
    if A.shape[1] != P.shape[1]:
        raise ValueError(f"embeddings[0] and embeddings[1] must have the same width, got "
                         f"{A.shape[1]} and {P.shape[1]} columns")
    for name, M in (("embeddings[0]", A), ("embeddings[1]", P)):
        if M.shape[0] != n_pairs:
            raise ValueError(f"{name} has {M.shape[0]} rows, expected one per pair ({n_pairs})")
    return A, P


def _unit(X):
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def mine_hard_negatives(
    anchors,
    positives,
    model="all-MiniLM-L6-v2",
    *,
    embeddings=None,
    n_negatives=1,
    margin=0.05,
    batch_size=32,
):
    """Mine hard negatives: for each (anchor, positive) pair, the most similar non-matching text.

    Candidates are the other positives. A candidate never counts as a negative when it is a
    positive of the same anchor text (an anchor may have several), the anchor itself, or the
    same text as the pair's positive; and, because a candidate scoring as high as the true
    positive is more likely an unlabelled match than a negative, only candidates whose cosine
    similarity to the anchor is at least `margin` below the positive's are used. Pairs with
    no eligible candidate are left out. Memory stays bounded: similarities are computed in
    blocks of anchors.

    The result feeds `SbertLearner(loss="mnrl").fit(anchor, positive, negatives=negative)`.

    Arguments:
        anchors: texts (queries, questions, ...).
        positives: one matching text per anchor.
        model: what embeds the texts: a model name or path, a `SentenceTransformer`, or a
            transformer such as `SentenceEncoder` or a fitted `SbertLearner`.
        embeddings: optional precomputed `(anchor_embeddings, positive_embeddings)`; then
            `model` is not used.
        n_negatives: negatives per pair; a pair appears once per negative found.
        margin: how much less similar than the positive a negative must be (`None`: no limit).
        batch_size: texts per forward pass when embedding.

    Returns:
        `(anchor, positive, negative)`: three lists of texts of the same length.

    Usage:

    ```python
    from embetter.finetune import mine_hard_negatives

    questions = ["how do I reset my password", "where is my parcel", "can I pay by card"]
    answers = ["Use 'forgot password' on the login page.", "Track it under My orders.",
               "We accept all major credit cards."]
    a, p, n = mine_hard_negatives(questions, answers, "all-MiniLM-L6-v2", margin=None)
    assert len(a) == len(p) == len(n) == 3 and all(x != y for x, y in zip(p, n))
    ```
    """
    anchors = as_texts(anchors, "anchors")
    positives = as_texts(positives, "positives")
    if len(anchors) != len(positives):
        raise ValueError(
            "anchors and positives must hold the same number of texts, got "
            f"{len(anchors)} and {len(positives)}"
        )
    if len(anchors) < 2:
        raise ValueError(
            f"mining needs at least 2 (anchor, positive) pairs, got {len(anchors)}"
        )
    check_int(n_negatives, "n_negatives")
    if margin is not None and (
        not isinstance(margin, numbers.Real) or isinstance(margin, bool) or not np.isfinite(margin)
    ):
        raise ValueError(f"margin must be None or a finite number, got {margin!r}")

    # candidates are the distinct positive texts: no negative is returned twice for one pair
    pool, pos_id = np.unique(np.asarray(positives, dtype=object), return_inverse=True)
    pool_index = {text: k for k, text in enumerate(pool)}
    _, anchor_id = np.unique(np.asarray(anchors, dtype=object), return_inverse=True)
    anchor_in_pool = np.array([pool_index.get(a, -1) for a in anchors])
    first = np.zeros(len(pool), dtype=np.int64)
    first[pos_id[::-1]] = np.arange(len(positives))[::-1]  # a row holding each pool text

    if embeddings is not None:
        A, P = _given_embeddings(embeddings, len(anchors))
        P = P[first]
    else:
        A = _embed(model, anchors, batch_size)
        P = _embed(model, list(pool), batch_size)
    A, P = _unit(A), _unit(P)
    pos_sim = np.einsum("ij,ij->i", A, P[pos_id])

    # which pool texts are positives of each anchor text (an anchor may have several)
    n_groups = int(anchor_id.max()) + 1
    own = [set() for _ in range(n_groups)]
    for g, k in zip(anchor_id, pos_id):
        own[g].add(int(k))

    k = min(int(n_negatives), len(pool))
    block = max(1, 2**22 // max(1, len(pool)))  # about 16 MB of similarities at a time
    out_a, out_p, out_n = [], [], []
    for start in range(0, len(anchors), block):
        rows = np.arange(start, min(start + block, len(anchors)))
        S = A[rows] @ P.T
        for r, i in enumerate(rows):
            S[r, list(own[anchor_id[i]])] = -np.inf
        has_self = anchor_in_pool[rows] >= 0
        S[np.flatnonzero(has_self), anchor_in_pool[rows][has_self]] = -np.inf
        if margin is not None:
            ceiling = (pos_sim[rows] - margin)[:, None]
            S[np.greater(S, ceiling)] = -np.inf
        top = np.argpartition(-S, k - 1, axis=1)[:, :k] if k < S.shape[1] else \
            np.tile(np.arange(S.shape[1]), (len(rows), 1))
        top_sim = np.take_along_axis(S, top, axis=1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        top, top_sim = np.take_along_axis(top, order, 1), np.take_along_axis(top_sim, order, 1)
        for r, i in enumerate(rows):
            for cand, sim in zip(top[r], top_sim[r]):
                if np.isfinite(sim):
                    out_a.append(anchors[i])
                    out_p.append(positives[i])
                    out_n.append(str(pool[cand]))
    if not out_a:
        raise ValueError(
            "no hard negative was found for any pair: every candidate is a positive of its "
            f"anchor or within margin={margin!r} of the positive's similarity; lower the margin "
            "or pass margin=None"
        )
    return out_a, out_p, out_n
