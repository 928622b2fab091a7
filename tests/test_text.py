import pickle
import subprocess
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks as ec
from sklearn.utils.validation import check_is_fitted

from embetter.grab import ColumnGrabber, KeyGrabber
from embetter.text import LiteTextEncoder, MatryoshkaEncoder, ModelNotFoundError, SentenceEncoder
from embetter.text._models import bundled_model_path, resolve_model


def cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# -- the tiny local model: fast checks of the contract --------------------------------------
def test_tiny_encoder_shapes_and_inputs(tiny_model_path, corpus):
    enc = SentenceEncoder(tiny_model_path, device="cpu")
    X = enc.transform(corpus[:5])
    assert X.shape == (5, 32) and X.dtype == np.float32
    for same in (tuple(corpus[:5]), np.array(corpus[:5]), pd.Series(corpus[:5]),
                 pd.DataFrame({"t": corpus[:5]}), np.array(corpus[:5], dtype=object)[:, None],
                 (t for t in corpus[:5])):
        np.testing.assert_allclose(enc.transform(same), X, atol=1e-6)
    empty = enc.transform([])
    assert empty.shape == (0, 32) and empty.dtype == np.float32


def test_bad_text_input(tiny_model_path):
    enc = SentenceEncoder(tiny_model_path, device="cpu")
    with pytest.raises(TypeError, match="wrap it in a list"):
        enc.transform("just one string")
    with pytest.raises(ValueError, match=r"X\[1\]"):
        enc.transform(["ok", None])
    with pytest.raises(ValueError, match="batch_size"):
        SentenceEncoder(tiny_model_path, batch_size=0).transform(["a"])
    with pytest.raises(ValueError, match="truncate_dim"):
        SentenceEncoder(tiny_model_path, truncate_dim=999).transform(["a"])


def test_params_are_stored_verbatim_and_lazy(tiny_model_path):
    enc = SentenceEncoder(tiny_model_path)
    assert enc.get_params()["device"] is None
    assert "_model" not in enc.__dict__  # nothing loaded in __init__
    check_is_fitted(enc)
    enc.transform(["a b"])
    assert enc.get_params()["device"] is None
    twin = clone(enc)
    assert "_model" not in twin.__dict__ and twin.get_params() == enc.get_params()


def test_flags_and_a_missing_device_are_refused_clearly(tiny_model_path):
    import torch

    for flag in ("normalize_embeddings", "show_progress_bar"):
        with pytest.raises(TypeError, match=f"{flag} must be True or False, got 'no'"):
            SentenceEncoder(tiny_model_path, **{flag: "no"}).transform(["a"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda', but torch has no cuda device"):
            SentenceEncoder(tiny_model_path, device="cuda").transform(["a"])
        from embetter.finetune import FeedForwardTuner

        with pytest.raises(ValueError, match="device='cuda', but torch has no cuda device"):
            FeedForwardTuner(device="cuda").fit(np.eye(4), [0, 1, 0, 1])


def test_set_params_reloads(tiny_model_path, tmp_path):
    from tests.conftest import build_tiny_model

    other = build_tiny_model(tmp_path, seed=1, hidden=16)
    enc = SentenceEncoder(tiny_model_path, device="cpu")
    assert enc.transform(["a dog"]).shape == (1, 32)
    enc.set_params(name=other)
    assert enc.transform(["a dog"]).shape == (1, 16)


def test_truncate_normalize_and_matryoshka(tiny_model_path, corpus):
    full = SentenceEncoder(tiny_model_path, device="cpu").transform(corpus[:4])
    cut = SentenceEncoder(tiny_model_path, device="cpu", truncate_dim=8,
                          normalize_embeddings=True).transform(corpus[:4])
    assert cut.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1, atol=1e-5)
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-5)
    mat = MatryoshkaEncoder(tiny_model_path, dim=8, device="cpu", normalize_embeddings=True)
    np.testing.assert_allclose(mat.transform(corpus[:4]), cut, atol=1e-6)
    assert list(mat.get_feature_names_out()[:2]) == ["matryoshkaencoder0", "matryoshkaencoder1"]
    with pytest.raises(ValueError, match="dim"):
        MatryoshkaEncoder(tiny_model_path, dim=0).transform(["a"])


def test_set_output_pandas(tiny_model_path, corpus):
    enc = SentenceEncoder(tiny_model_path, device="cpu").set_output(transform="pandas")
    out = enc.transform(pd.Series(corpus[:3], index=[7, 8, 9]))
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == [7, 8, 9] and out.shape == (3, 32)
    assert out.columns[0] == "sentenceencoder0"


def test_pickle_stores_name_not_weights(tiny_model_path, corpus):
    pipe = make_pipeline(ColumnGrabber("text"), SentenceEncoder(tiny_model_path, device="cpu"))
    df = pd.DataFrame({"text": corpus[:6]})
    before = pipe.transform(df)
    blob = pickle.dumps(pipe)
    assert len(blob) < 10_000  # the tiny model alone would be ~100 KB
    np.testing.assert_allclose(pickle.loads(blob).transform(df), before, atol=1e-6)


def test_instance_is_accepted_and_kept(tiny_model_path, corpus):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    enc = SentenceEncoder(model)
    assert enc.get_params()["name"] is model
    np.testing.assert_allclose(enc.transform(corpus[:2]), model.encode(corpus[:2]), atol=1e-6)


def test_instance_is_never_moved_or_switched_to_eval(tiny_model_path, corpus):
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    enc = SentenceEncoder(model, device="cpu")
    X = enc.transform(corpus[:4])
    # The caller's model is still in training mode with the same weights; ours ran in eval mode.
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert enc.model_ is not model and not enc.model_.training
    np.testing.assert_allclose(X, model.eval().encode(corpus[:4]), atol=1e-6)


def test_instance_ready_to_run_is_used_as_it_is(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu").eval()
    assert SentenceEncoder(model, device="cpu").model_ is model  # no needless copy


def test_instance_switched_to_training_later_is_left_training(tiny_model_path, corpus):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu").eval()
    enc = SentenceEncoder(model, device="cpu")
    first = enc.transform(corpus[:2])
    model.train()  # the caller starts fine-tuning it
    np.testing.assert_allclose(enc.transform(corpus[:2]), first, atol=1e-6)
    assert model.training and enc.model_ is not model
    model.eval()  # back to eval: the caller's model is used again, no stale copy
    assert enc.model_ is model


@pytest.mark.parametrize("backend", [None, "pipelined"])
def test_a_training_model_is_encoded_with_its_current_weights_and_left_training(
        tiny_model_path, corpus, backend):
    """The private copy a training model runs through takes the caller's weights on every
    transform (it gave the first epoch's embeddings forever), and no path (the pipelined
    engine built while the model was in eval mode, say) switches the caller's model to eval."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu").eval()
    enc = SentenceEncoder(model, device="cpu", backend=backend)
    enc.transform(corpus[:2])
    model.train()
    first = enc.transform(corpus[:2])
    assert model.training
    weight = model[0].auto_model.embeddings.word_embeddings.weight
    weight.data.mul_(-1.0)  # a training step, as far as the encoder can tell
    after = enc.transform(corpus[:2])
    assert model.training and not np.allclose(after, first, atol=1e-3)
    np.testing.assert_allclose(after, model.eval().encode(corpus[:2]), atol=1e-5)


def test_a_training_model_is_encoded_through_a_view_of_its_own_weights(tiny_model_path,
                                                                       corpus):
    """A model in training mode (as sentence-transformers loads one) on the asked device runs
    through modules in eval mode that share its tensors: no copy of its weights at each
    transform (a full copy cost 7 ms a call for MiniLM); a tensor the caller replaces is
    followed all the same."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu").train()
    enc = SentenceEncoder(model, device="cpu")
    enc.transform(corpus[:2])
    view = enc.model_
    assert view is not model and not view.training and model.training
    mine = dict(view.named_parameters())
    assert all(mine[name] is p for name, p in model.named_parameters())
    embeddings = model[0].auto_model.embeddings
    embeddings.word_embeddings.weight = torch.nn.Parameter(
        -embeddings.word_embeddings.weight.detach().clone())  # a new tensor, not an edit
    after = enc.transform(corpus[:2])
    assert enc.model_ is view  # (its weights loaded, as a copy's are)
    np.testing.assert_allclose(after, model.eval().encode(corpus[:2]), atol=1e-5)


def test_clone_never_shares_the_callers_model(tiny_model_path, corpus):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    enc = SentenceEncoder(model)
    twin = clone(enc)
    assert twin.name is not model
    twin.name[0].auto_model.embeddings.word_embeddings.weight.data.zero_()
    assert model[0].auto_model.embeddings.word_embeddings.weight.abs().sum() > 0
    assert not np.allclose(twin.transform(corpus[:3]), enc.transform(corpus[:3]))


def test_grid_search_over_encoder_params(tiny_model_path, corpus):
    y = np.array([i % 2 for i in range(len(corpus))])
    pipe = make_pipeline(SentenceEncoder(tiny_model_path, device="cpu"), LogisticRegression())
    # scored by the width the classifier was fitted on: each candidate reached the encoder
    grid = GridSearchCV(pipe, {"sentenceencoder__truncate_dim": [8, None]}, cv=2,
                        scoring=lambda est, X, y: est[-1].n_features_in_)
    grid.fit(corpus[:40], y[:40])
    assert grid.cv_results_["mean_test_score"].tolist() == [8, 32]
    assert grid.best_params_["sentenceencoder__truncate_dim"] is None


def test_missing_model_error_is_clear(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not-a-real-model-xyz.*To fix"):
        SentenceEncoder("not-a-real-model-xyz", device="cpu").transform(["a"])


def test_without_network_a_missing_model_fails_without_asking_the_hub(no_network):
    # huggingface_hub would retry the unresolvable host for over a minute, once per file
    with pytest.raises(ModelNotFoundError, match="cannot be resolved.*load it once on a machine"):
        SentenceEncoder("nobody/not-a-real-model-xyz", device="cpu").transform(["a"])
    assert no_network == ["huggingface.co"]  # our one probe, no request of the Hub's own


def test_without_network_a_cached_hub_model_still_loads(no_network, tiny_model_path, tmp_path):
    import shutil

    from embetter.text._models import load_sentence_transformer

    # the Hugging Face cache's layout: models--{org}--{name}/snapshots/{revision} + refs/main
    repo = tmp_path / "models--someone--tiny"
    shutil.copytree(tiny_model_path, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    model = load_sentence_transformer("someone/tiny", "cpu", cache_folder=str(tmp_path))
    assert model.encode(["a"]).shape[0] == 1
    assert no_network == ["huggingface.co"]


def test_a_proxy_or_a_resolvable_host_leaves_the_hub_to_huggingface_hub(monkeypatch, no_network):
    import socket

    from embetter.text._models import hub_unreachable

    assert "cannot be resolved" in hub_unreachable()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert hub_unreachable() is None  # the proxy resolves names, not this machine
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [("resolved",)])
    assert hub_unreachable() is None


# -- estimator checks that apply to text transformers ---------------------------------------
# The numeric checks of check_estimator feed 2-D float arrays, which are not text: a text
# encoder rightly refuses them, so sklearn itself skips them for estimators tagged with
# string input. The API-level checks below do apply, and run on each estimator.
API_CHECKS = [
    ec.check_no_attributes_set_in_init,
    ec.check_parameters_default_constructible,
    ec.check_get_params_invariance,
    ec.check_set_params,
    ec.check_estimator_cloneable,
    ec.check_estimator_repr,
    ec.check_estimator_tags_renamed,
    ec.check_valid_tag_types,
    ec.check_mixin_order,
]


@pytest.mark.parametrize(
    "estimator",
    [SentenceEncoder(), MatryoshkaEncoder(), LiteTextEncoder(), ColumnGrabber("text"),
     KeyGrabber("text")],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("check", API_CHECKS, ids=lambda c: c.__name__)
def test_sklearn_api_checks(estimator, check):
    check(type(estimator).__name__, clone(estimator))


# -- LiteTextEncoder -----------------------------------------------------------------------
def test_lite_encoder(corpus, tmp_path):
    enc = LiteTextEncoder(n_components=16, random_state=0)
    with pytest.raises(Exception, match="not fitted"):
        enc.transform(corpus[:2])
    X = enc.fit_transform(corpus)
    assert X.shape == (len(corpus), 16) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    joblib.dump(enc, tmp_path / "lite.joblib")
    np.testing.assert_allclose(joblib.load(tmp_path / "lite.joblib").transform(corpus), X)
    assert LiteTextEncoder(n_components=500).fit(corpus[:10]).n_components_ <= 9
    for bad in (3, (2, 1), (0, 2), (1.0, 2), "12"):
        with pytest.raises(ValueError, match=r"word_ngram_range must be a pair of ints"):
            LiteTextEncoder(word_ngram_range=bad).fit(corpus[:10])
    # shared words bring texts closer than disjoint ones
    a, b, c = enc.transform(
        ["the cat likes pizza", "the cat likes the rain", "a pilot fixes old cars"]
    )
    assert cos(a, b) > cos(a, c)


# -- the real bundled all-MiniLM-L6-v2 -------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    return SentenceEncoder(device="cpu")


def test_bundled_model_resolves_offline():
    path = bundled_model_path()
    assert path is not None and (path / "model.safetensors").is_file()
    assert resolve_model("all-MiniLM-L6-v2") == str(path)
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(path)
    assert resolve_model("some/other-model") == "some/other-model"


def test_bundled_model_semantics(minilm):
    X = minilm.transform(["A man is playing a guitar.", "Someone plays the guitar.",
                          "The stock market crashed today."])
    assert X.shape == (3, 384)
    assert cos(X[0], X[1]) > cos(X[0], X[2]) + 0.3
    unit = SentenceEncoder(normalize_embeddings=True, device="cpu").transform(["hello"])
    np.testing.assert_allclose(np.linalg.norm(unit), 1, atol=1e-5)


def test_bundled_model_loads_with_networking_disabled(tmp_path):
    # a fresh process with every hub switch off and no proxy to reach anything
    code = (
        "from embetter.text import SentenceEncoder;"
        "X = SentenceEncoder('sentence-transformers/all-MiniLM-L6-v2', device='cpu')"
        ".transform(['offline']); print(X.shape)"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path),
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(1, 384)" in out.stdout
