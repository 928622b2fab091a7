"""Findings of a review of the static and light encoders (a model2vec and scikit-learn
user's session); each test failed before its fix."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from embetter.text import LiteTextEncoder


def test_lite_keeps_no_dimension_past_the_distinct_texts():
    """Three distinct texts, repeated: 16 components were kept, 13 of them noise of the seed
    (cosines moved with random_state); one distinct text warned of a division by zero."""
    texts = ["the cat likes pizza", "stock prices fell today", "a pilot watches rain"] * 100
    cosines = []
    for seed in (0, 1):
        encoder = LiteTextEncoder(n_components=16, random_state=seed).fit(texts)
        assert encoder.n_components_ == 3
        X = encoder.transform(["the cat likes stock prices", "the cat likes pizza"])
        cosines.append(float(X[0] @ X[1]))
    assert cosines[0] == pytest.approx(cosines[1], abs=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = LiteTextEncoder(n_components=5, random_state=0).fit(["hello world"] * 50)
        assert same.n_components_ == 1
        assert np.allclose(np.abs(same.transform(["hello there"])), 1.0)


def test_lite_drops_components_past_the_tfidf_rank():
    """Texts the TF-IDF reads alike (case) count once: the rank, not the text count."""
    encoder = LiteTextEncoder(n_components=8, random_state=0).fit(
        ["Hello world", "hello world", "HELLO WORLD", "bye now", "bye NOW"])
    values = encoder.svd_.singular_values_
    assert encoder.n_components_ == 2 and values.min() > 1e-6 * values.max()


def test_text_encoder_trains_another_model_each_fit_without_random_state(tiny_model_path):
    """random_state=None means numpy's global generator, as in scikit-learn: the seed was
    drawn inside the block that puts that generator back, so every fit trained alike."""
    from embetter.text import TextEncoder, _distill

    static = _distill.distill(tiny_model_path, pca_dims=8)
    texts = [f"text number {i} about {w}" for i, w in
             enumerate(["cats", "stocks", "rain", "pizza", "planes", "music"] * 5)]

    def fitted(seed):
        return TextEncoder(static, train_on_fit=True, teacher=tiny_model_path,
                           random_state=seed).fit(texts).transform(texts[:3])

    assert not np.array_equal(fitted(None), fitted(None))
    assert np.array_equal(fitted(0), fitted(0))
