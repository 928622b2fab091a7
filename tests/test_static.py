"""TextEncoder: static model2vec embeddings, distilled locally (here from the tiny test model)."""

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from embetter.text import SentenceEncoder, TextEncoder, _distill


def cosines(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture
def default_from_tiny(tiny_model_path, tmp_path, monkeypatch):
    """TextEncoder() distils from the tiny test model into an empty cache."""
    from pathlib import Path

    monkeypatch.setenv("EMBETTER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_distill, "bundled_model_path", lambda: Path(tiny_model_path))
    monkeypatch.setitem(_distill.DEFAULT_SETTINGS, "pca_dims", 16)
    return tmp_path / "cache" / "static"


@pytest.fixture(scope="module")
def static_path(tiny_model_path, tmp_path_factory):
    """A model2vec model folder distilled from the tiny model (16 PCA dims)."""
    folder = tmp_path_factory.mktemp("static") / "m2v"
    _distill.distill(tiny_model_path, pca_dims=16).save_pretrained(str(folder))
    return str(folder)


def test_default_model_is_distilled_once_and_cached(default_from_tiny, corpus):
    X = TextEncoder().transform(corpus[:5])
    assert X.shape == (5, 16) and X.dtype == np.float32
    (folder,) = default_from_tiny.iterdir()  # one model, no temporary folder left behind
    assert not folder.name.startswith(".")
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again = TextEncoder().transform(corpus[:5])  # a fresh encoder reads the cache...
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # ...never rebuilds
    np.testing.assert_allclose(again, X, atol=1e-6)
    # Static embeddings still carry the teacher's sense of similarity.
    teacher = SentenceEncoder(str(_distill.bundled_model_path())).transform(corpus[:5])
    assert np.corrcoef((X @ X.T).ravel(), (teacher @ teacher.T).ravel())[0, 1] > 0.3


def test_other_default_settings_distil_a_new_model_not_the_cached_one(default_from_tiny,
                                                                      corpus, monkeypatch):
    first, settings = TextEncoder().transform(corpus[:3]), dict(_distill.DEFAULT_SETTINGS)
    monkeypatch.setitem(_distill.DEFAULT_SETTINGS, "pca_dims", 8)
    eight = TextEncoder().transform(corpus[:3])
    assert eight.shape == (3, 8)  # not the cached 16-dim model
    monkeypatch.setitem(_distill.DEFAULT_SETTINGS, "sif_coefficient", None)  # no SIF weights
    unweighted = TextEncoder().transform(corpus[:3])
    assert unweighted.shape == (3, 8) and not np.allclose(unweighted, eight, atol=1e-3)
    names = sorted(p.name for p in default_from_tiny.iterdir())
    assert len(names) == 3 and not any(n.startswith(".") for n in names)
    assert any("pca8-sifNone" in n for n in names)
    # Back to the first settings: the first cached model is found again.
    for key, value in settings.items():
        monkeypatch.setitem(_distill.DEFAULT_SETTINGS, key, value)
    np.testing.assert_allclose(TextEncoder().transform(corpus[:3]), first, atol=1e-6)
    assert len(list(default_from_tiny.iterdir())) == 3


def test_missing_bundled_model_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBETTER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_distill, "bundled_model_path", lambda: None)
    with pytest.raises(ModuleNotFoundError, match=r"embetter\[model\]"):
        TextEncoder().transform(["a"])


def test_loads_a_local_model_folder_and_accepts_every_input_form(static_path, corpus):
    enc = TextEncoder(static_path)
    ref = enc.transform(corpus[:4])
    assert ref.shape == (4, 16) and ref.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)
    forms = [tuple(corpus[:4]), np.array(corpus[:4], dtype=object), pd.Series(corpus[:4]),
             pd.DataFrame({"t": corpus[:4]}), np.array(corpus[:4]).reshape(-1, 1),
             (t for t in corpus[:4])]
    for form in forms:
        np.testing.assert_allclose(enc.transform(form), ref, atol=1e-6)
    empty = enc.transform([])
    assert empty.shape == (0, 16) and empty.dtype == np.float32
    assert list(enc.get_feature_names_out()[:2]) == ["textencoder0", "textencoder1"]


def test_a_model_folder_saved_again_is_loaded_again(tiny_model_path, corpus, tmp_path):
    import shutil

    folder = tmp_path / "m2v"
    _distill.distill(tiny_model_path, pca_dims=16).save_pretrained(str(folder))
    enc = TextEncoder(str(folder))
    old = enc.transform(corpus[:3])
    shutil.rmtree(folder)
    _distill.distill(tiny_model_path, pca_dims=8).save_pretrained(str(folder))  # saved over it
    assert enc.transform(corpus[:3]).shape == (3, 8) and old.shape == (3, 16)


@pytest.mark.parametrize(
    "X, error, match",
    [
        ("one text", TypeError, "single str"),
        (["ok", None], ValueError, r"X\[1\] is missing"),
        (np.zeros((2, 3)), ValueError, "shape"),
    ],
)
def test_bad_input_is_named(static_path, X, error, match):
    with pytest.raises(error, match=match):
        TextEncoder(static_path).transform(X)


def test_bad_parameters_are_named(static_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        TextEncoder(str(tmp_path / "nope")).transform(["a"])
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        TextEncoder(str(tmp_path)).transform(["a"])
    with pytest.raises(FileNotFoundError, match="or a Hugging Face model id"):
        TextEncoder("not/a/hub/id").transform(["a"])
    with pytest.raises(TypeError, match="name must be None, the path.*or a model2vec StaticModel"):
        TextEncoder(42).transform(["a"])
    with pytest.raises(TypeError, match="train_on_fit must be True or False"):
        TextEncoder(static_path, train_on_fit="yes").fit(["a"])
    with pytest.raises(ValueError, match="at least 20 texts"):
        TextEncoder(static_path, train_on_fit=True).fit(["a", "b"])


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, static_path):
    """A Hugging Face cache holding `static_path` as the model `someone/static-tiny`."""
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--someone--static-tiny"
    shutil.copytree(static_path, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return "someone/static-tiny"


def test_a_hugging_face_id_loads_from_the_cache_without_the_hub(hub_cache, static_path,
                                                                corpus, no_network):
    X = TextEncoder(hub_cache).transform(corpus[:5])
    np.testing.assert_allclose(X, TextEncoder(static_path).transform(corpus[:5]))
    assert no_network == []  # cached: not even the probe


def test_a_hugging_face_id_not_cached_fails_at_once_without_network(no_network, tmp_path,
                                                                    monkeypatch):
    from huggingface_hub import constants

    from embetter.text import ModelNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache.*no network"):
        TextEncoder("minishlab/potion-base-8M").transform(["a"])
    assert no_network == ["huggingface.co"]  # our probe only: model2vec never asked the Hub
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE is set"):
        TextEncoder("minishlab/potion-base-8M").transform(["a"])


def test_a_static_model_object_is_used_as_given_and_never_changed(static_path, corpus):
    from model2vec import StaticModel

    model = StaticModel.from_pretrained(static_path)
    before, array = np.array(model.embedding, copy=True), model.embedding
    enc = TextEncoder(model)
    expected = TextEncoder(static_path).transform(corpus[:5])
    np.testing.assert_allclose(enc.transform(corpus[:5]), expected)
    assert enc.model_ is model
    trained = TextEncoder(model, train_on_fit=True, random_state=0).fit(corpus[:60])
    assert trained.model_ is not model
    np.testing.assert_array_equal(model.embedding, before)
    assert model.embedding is array  # model2vec's trainer had rebound it to a copy
    again = pickle.loads(pickle.dumps(enc))
    np.testing.assert_allclose(again.transform(corpus[:5]), enc.transform(corpus[:5]))
    assert clone(enc).get_params()["name"] is not None


def test_the_0_9_1_model_argument_says_what_replaces_it():
    with pytest.raises(TypeError, match="got model=, a parameter of embetter 0.9.1.*first arg"):
        TextEncoder(model="minishlab/potion-base-8M")


def test_lazy_load_small_pickle_and_clone(static_path, corpus):
    enc = TextEncoder(static_path)
    assert "_model" not in enc.__dict__  # nothing loaded in __init__
    X = enc.transform(corpus[:6])
    blob = pickle.dumps(enc)
    assert len(blob) < 2_000  # the vectors are re-loaded from the folder, never pickled
    np.testing.assert_allclose(pickle.loads(blob).transform(corpus[:6]), X, atol=1e-6)
    twin = clone(enc)
    assert twin.get_params() == enc.get_params() and "_model" not in twin.__dict__


def test_in_a_pipeline_and_grid_search(static_path, corpus):
    y = np.array([i % 2 for i in range(len(corpus))])
    pipe = make_pipeline(TextEncoder(static_path), LogisticRegression())
    grid = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=2).fit(corpus[:40], y[:40])
    assert grid.predict(corpus[40:44]).shape == (4,)


def test_train_on_fit_leaves_the_global_random_generators_alone(static_path, tiny_model_path,
                                                                corpus):
    import random

    import torch

    def draws():
        return random.random(), np.random.rand(), torch.rand(1).item()

    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = draws()
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    TextEncoder(static_path, train_on_fit=True, teacher=tiny_model_path,
                random_state=0).fit(corpus[:60])
    assert draws() == expected  # model2vec's trainer seeds all three: put back after


def test_train_on_fit_learns_to_mimic_the_teacher(static_path, tiny_model_path, corpus,
                                                  tmp_path):
    teacher = SentenceEncoder(tiny_model_path).transform(corpus)
    before = TextEncoder(static_path).transform(corpus)
    enc = TextEncoder(static_path, train_on_fit=True, teacher=tiny_model_path, random_state=0)
    with pytest.raises(NotFittedError):
        enc.transform(corpus[:2])
    after = enc.fit(corpus).transform(corpus)
    assert after.shape == before.shape and after.dtype == np.float32
    # Pairwise similarities follow the teacher's more closely after training.
    sims = lambda Z: (Z @ Z.T)[np.triu_indices(len(Z), 1)]  # noqa: E731
    t = teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
    assert np.corrcoef(sims(after), sims(t))[0, 1] > np.corrcoef(sims(before), sims(t))[0, 1]
    # The same random_state gives the same model; the untrained encoder is untouched.
    again = TextEncoder(static_path, train_on_fit=True, teacher=tiny_model_path,
                        random_state=0).fit(corpus).transform(corpus)
    np.testing.assert_allclose(again, after, atol=1e-6)
    np.testing.assert_allclose(TextEncoder(static_path).transform(corpus), before, atol=1e-6)
    # A trained encoder pickles with its trained vectors, and clone drops them.
    np.testing.assert_allclose(pickle.loads(pickle.dumps(enc)).transform(corpus), after,
                               atol=1e-6)
    from embetter.utils import load_skops, save_skops  # and in a skops file, as files

    save_skops(enc, tmp_path / "trained.skops")
    np.testing.assert_allclose(load_skops(tmp_path / "trained.skops").transform(corpus), after,
                               atol=1e-6)
    with pytest.raises(NotFittedError):
        clone(enc).transform(corpus[:2])
    # a fit refused (too few texts) keeps the trained model
    with pytest.raises(ValueError, match="at least 20 texts"):
        enc.fit(corpus[:5])
    np.testing.assert_allclose(enc.transform(corpus), after, atol=1e-6)
    # partial_fit keeps training from where the model is.
    enc.partial_fit(corpus)
    assert not np.allclose(enc.transform(corpus), after)


@pytest.mark.parametrize("loss", ["mse", "cosine", "contrastive"])
def test_every_training_loss_moves_the_static_model_towards_the_teacher(static_path,
                                                                        tiny_model_path,
                                                                        corpus, loss):
    from model2vec import StaticModel

    start = StaticModel.from_pretrained(static_path)
    vectors = start.embedding.copy()
    teacher = SentenceEncoder(tiny_model_path).transform(corpus)
    trained = _distill.train_to_mimic(start, corpus, teacher, seed=0, loss=loss, max_epochs=3)
    np.testing.assert_array_equal(start.embedding, vectors)  # the start is not modified
    assert trained.dim == start.dim and not np.allclose(trained.embedding, vectors)
    sims = lambda Z: (Z @ Z.T)[np.triu_indices(len(Z), 1)]  # noqa: E731
    unit = lambda Z: Z / np.linalg.norm(Z, axis=1, keepdims=True)  # noqa: E731
    before, after = unit(start.encode(corpus)), unit(trained.encode(corpus))
    t = unit(teacher)
    assert np.corrcoef(sims(after), sims(t))[0, 1] > np.corrcoef(sims(before), sims(t))[0, 1]


def test_bad_training_settings_are_named(static_path, corpus):
    from model2vec import StaticModel

    start, targets = StaticModel.from_pretrained(static_path), np.ones((len(corpus), 4))
    with pytest.raises(TypeError, match=r"unknown training settings \['epochs'\]"):
        _distill.train_to_mimic(start, corpus, targets, seed=0, epochs=3)
    with pytest.raises(ValueError, match="loss must be one of .* got 'l1'"):
        _distill.train_to_mimic(start, corpus, targets, seed=0, loss="l1")


def test_train_on_fit_keeps_model2vecs_progress_bars_off_stderr_unless_asked(
        static_path, tiny_model_path, corpus, capfd):
    enc = TextEncoder(static_path, train_on_fit=True, teacher=tiny_model_path, random_state=0)
    enc.fit(corpus)
    assert "Epoch" not in capfd.readouterr().err  # model2vec draws a bar per epoch
    enc.set_params(show_progress_bar=True).fit(corpus)
    assert "Epoch" in capfd.readouterr().err


def test_quiet_stderr_swallows_writes_but_raises_warnings_again():
    import sys
    import warnings

    from embetter._guest import quiet_stderr

    before = sys.stderr
    with pytest.warns(UserWarning, match="kept"), quiet_stderr():
        print("a bar", file=sys.stderr)
        warnings.warn("kept", UserWarning, stacklevel=1)
    assert sys.stderr is before
    with (pytest.warns(UserWarning, match="also when it fails"), pytest.raises(KeyError),
          quiet_stderr()):
        warnings.warn("also when it fails", UserWarning, stacklevel=1)
        raise KeyError("boom")
    assert sys.stderr is before


def test_transform_in_chunks_equals_one_encode(static_path, corpus, monkeypatch):
    from embetter.text import _static

    enc = TextEncoder(static_path)
    whole = enc.model_.encode(list(corpus), use_multiprocessing=False)
    monkeypatch.setattr(_static, "TRANSFORM_CHUNK", 7)  # several chunks and a ragged last one
    chunked = enc.transform(corpus)
    assert chunked.dtype == np.float32 and chunked.flags.c_contiguous
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-7)


def test_chunked_transform_draws_one_progress_bar(static_path, corpus, monkeypatch):
    """With several chunks, one bar counts every text; model2vec draws none per chunk. One
    chunk keeps model2vec's own bar."""
    from embetter.text import _static

    enc = TextEncoder(static_path, show_progress_bar=True)
    bars = []
    encode = enc.model_.encode

    def spy(texts, show_progress_bar=False, **kw):
        bars.append(show_progress_bar)
        return encode(texts, show_progress_bar=False, **kw)

    monkeypatch.setattr(enc.model_, "encode", spy)
    monkeypatch.setattr(_static, "TRANSFORM_CHUNK", 7)
    counted = []
    real_tqdm = __import__("tqdm.auto", fromlist=["tqdm"]).tqdm

    class Counting(real_tqdm):
        def update(self, n=1):
            counted.append((self.disable, n))
            return super().update(n)

    monkeypatch.setattr("tqdm.auto.tqdm", Counting)
    enc.transform(corpus)
    assert bars and not any(bars)  # no per-chunk bars
    assert sum(n for _, n in counted) == len(corpus) and not any(d for d, _ in counted)
    bars.clear()
    monkeypatch.setattr(_static, "TRANSFORM_CHUNK", len(corpus))
    enc.transform(corpus)
    assert bars == [True]  # one chunk: model2vec's bar


def test_a_static_model_in_sentence_transformers_layout_loads(static_path, tmp_path, corpus):
    """A StaticEmbedding model saved by SentenceTransformer.save (how the static-* models are
    stored): model2vec reads it, and TextEncoder refused it for lack of a config.json."""
    from model2vec import StaticModel
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    m2v = StaticModel.from_pretrained(static_path)
    folder = tmp_path / "st_static"
    module = StaticEmbedding(m2v.tokenizer, embedding_weights=np.asarray(m2v.embedding))
    SentenceTransformer(modules=[module], device="cpu").save(str(folder))
    assert not (folder / "config.json").exists()
    got = TextEncoder(str(folder)).transform(corpus[:4])
    np.testing.assert_allclose(got, StaticModel.from_pretrained(str(folder)).encode(corpus[:4]),
                               atol=1e-6)
    assert got.shape == (4, 16)


# -- a review of the static, lite and grab encoders (session 29) --------------------------------
def _in_hub_cache(root, repo_id, folder):
    import shutil

    repo = root / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")


def test_a_transformer_is_refused_by_name_as_a_folder_or_a_cached_hub_id(
        tiny_model_path, tmp_path, monkeypatch, no_network):
    """A plain transformers folder (config.json, no modules.json) and any Hub id reached
    model2vec's loader and failed inside safetensors."""
    import shutil

    from huggingface_hub import constants

    plain = tmp_path / "plain"
    shutil.copytree(tiny_model_path, plain)
    (plain / "modules.json").unlink()
    with pytest.raises(ValueError, match="is a transformer model.*SentenceEncoder"):
        TextEncoder(str(plain)).transform(["a"])
    _in_hub_cache(tmp_path / "hub", "someone/tiny-transformer", tiny_model_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ValueError, match="is a transformer model"):
        TextEncoder("someone/tiny-transformer").transform(["a"])


def test_a_cached_sentence_transformers_static_model_loads_by_hub_id_offline(
        static_path, tmp_path, monkeypatch, corpus, no_network):
    """The static-* models have modules.json and no config.json at their root: the cache
    lookup missed them and an offline load said they were not cached."""
    from huggingface_hub import constants
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding

    folder = tmp_path / "st_static"
    SentenceTransformer(modules=[StaticEmbedding.from_model2vec(static_path)],
                        device="cpu").save(str(folder))
    assert not (folder / "config.json").exists()
    _in_hub_cache(tmp_path / "hub", "someone/static-st", folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    X = TextEncoder("someone/static-st").transform(corpus[:3])
    np.testing.assert_allclose(X, TextEncoder(str(folder)).transform(corpus[:3]), rtol=1e-5)


def test_threads_that_ask_together_load_the_static_model_once(static_path, monkeypatch):
    import threading
    import time

    from model2vec import StaticModel

    calls = []
    real = StaticModel.from_pretrained.__func__

    def slow(cls, *args, **kwargs):
        calls.append(1)
        time.sleep(0.3)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(StaticModel, "from_pretrained", classmethod(slow))
    enc = TextEncoder(static_path)
    threads = [threading.Thread(target=enc.transform, args=(["a text"],)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_fit_transform_of_a_generator_keeps_every_text(static_path, corpus):
    """fit read the generator, and transform got an exhausted one: no rows, no error."""
    from embetter.text import LiteTextEncoder

    lite = LiteTextEncoder(n_components=4, random_state=0)
    assert lite.fit_transform(t for t in corpus[:40]).shape == (40, 4)
    trained = TextEncoder(static_path, train_on_fit=True, random_state=0)
    assert trained.fit_transform(iter(corpus[:40])).shape[0] == 40
