"""Fixes from a review of the cache, the skops files and the helpers around them: each test
failed on the code before its fix."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.pipeline import FeatureUnion, FunctionTransformer, Pipeline, make_pipeline

import embetter.external
from embetter.text import SentenceEncoder
from embetter.utils import UntrustedAddressError, cached, load_skops, save_skops

TEXTS = ["the cat likes pizza", "a dog hates the rain"]


def test_a_nested_set_params_reaches_the_cache_key(tiny_model_path, tmp_path):
    """The state signature stopped at depth 4: a setting changed in a step of a union in a
    pipeline served the old vectors (and a new width was reshaped into garbage)."""
    inner = Pipeline([("u", FeatureUnion([("a", SentenceEncoder(tiny_model_path,
                                                                 device="cpu"))]))])
    enc = cached(tmp_path / "c", make_pipeline(inner))
    before = enc.transform(TEXTS)
    assert np.abs(np.linalg.norm(before, axis=1) - 1).min() > 0.05
    enc.set_params(encoder__pipeline__u__a__normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(enc.transform(TEXTS), axis=1), 1, atol=1e-5)
    enc.set_params(encoder__pipeline__u__a__truncate_dim=16)
    out = enc.transform([TEXTS[0], "the market predicts the rain"])
    assert out.shape == (2, 16)


def test_rows_of_two_widths_are_never_reshaped(tiny_model_path, tmp_path, monkeypatch):
    import embetter.utils as utils

    monkeypatch.setattr(utils, "_state_signature", lambda obj: "fixed")  # a key that misses
    enc = cached(tmp_path / "c", SentenceEncoder(tiny_model_path, device="cpu"))
    enc.transform(TEXTS[:1])
    enc.encoder.set_params(truncate_dim=8)
    with pytest.raises(RuntimeError, match="rows of another width"):
        enc.transform(TEXTS)


def test_an_edited_function_is_a_new_key_and_a_lambda_works(tiny_model_path, tmp_path):
    folder = tmp_path / "c"
    model = SentenceEncoder(tiny_model_path, device="cpu")

    def prep(X):
        return list(X)

    first = cached(folder, make_pipeline(FunctionTransformer(prep), model)).transform(TEXTS)

    def prep(X):  # noqa: F811 - the same name, another body: a notebook cell run again
        return [t.split()[-1] for t in X]

    edited = make_pipeline(FunctionTransformer(prep), model)
    np.testing.assert_allclose(cached(folder, edited).transform(TEXTS), edited.transform(TEXTS),
                               atol=1e-6)
    assert np.abs(edited.transform(TEXTS) - first).max() > 1e-3
    lam = make_pipeline(FunctionTransformer(lambda X: [t.upper() for t in X]), model)
    np.testing.assert_allclose(cached(folder, lam).transform(TEXTS), lam.transform(TEXTS),
                               atol=1e-6)  # PicklingError before


def test_a_cache_folder_named_with_uri_characters(tiny_model_path, tmp_path):
    folder = tmp_path / "runs #1 %41"
    enc = cached(folder, SentenceEncoder(tiny_model_path, device="cpu"))
    first = enc.transform(TEXTS)
    np.testing.assert_array_equal(enc.transform(TEXTS), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no stray file


@pytest.mark.parametrize("where", ["difference_enc_", "search_best_estimator_", "key_env"])
def test_a_file_cannot_point_a_fitted_encoder_at_its_server(tmp_path, where):
    """The address check read parameters only: a fitted attribute (the encoder a
    DifferenceClassifier or a search actually uses) or a key_env of the file's own got
    through, and the key from the environment went to the file's server."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    from embetter.external import OpenAIEncoder
    from embetter.model import DifferenceClassifier

    evil = "http://127.0.0.1:9/v1"
    if where == "difference_enc_":
        obj = DifferenceClassifier(enc=OpenAIEncoder())
        obj.enc_ = OpenAIEncoder(base_url=evil)
        obj.clf_ = LogisticRegression().fit([[0, 0], [1, 1]], [0, 1])
        obj.classes_ = obj.clf_.classes_
    elif where == "search_best_estimator_":
        obj = GridSearchCV(make_pipeline(OpenAIEncoder()), {})
        obj.best_estimator_ = make_pipeline(OpenAIEncoder(base_url=evil))
    else:
        obj = OpenAIEncoder()
        obj.__dict__["key_env"] = "GITHUB_TOKEN"
    path = save_skops(obj, tmp_path / "f.skops")
    with pytest.raises(UntrustedAddressError) as err:
        load_skops(path)
    assert evil in str(err.value) or "GITHUB_TOKEN" in str(err.value)
    load_skops(path, trust=True)  # what the user trusts loads
    clean = save_skops(make_pipeline(embetter.external.OpenAIEncoder()), tmp_path / "ok.skops")
    load_skops(clean)  # an encoder that names no address still loads


def test_calc_distances_and_cached_check_their_arguments(tiny_model_path, tmp_path):
    from embetter.utils import calc_distances

    enc = SentenceEncoder(tiny_model_path, device="cpu")
    with pytest.raises(ValueError, match="anchors is empty"):
        calc_distances(TEXTS, [], enc)
    assert calc_distances([], TEXTS, enc).shape == (0,)
    with pytest.raises(TypeError, match="aggregate must be a function"):
        calc_distances(TEXTS, TEXTS, enc, aggregate="max")
    with pytest.raises(TypeError, match="pipeline must have a transform method"):
        calc_distances(TEXTS, TEXTS, "all-MiniLM-L6-v2")
    with pytest.raises(TypeError, match=r"encoder must be a transformer .*SentenceEncoder\("):
        cached(tmp_path / "c", "all-MiniLM-L6-v2").transform(TEXTS)


def test_release_refuses_what_is_not_a_client():
    from embetter.dask import release

    with pytest.raises(TypeError, match="client must be a dask.distributed Client"):
        release("tcp://127.0.0.1:8786")
