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
    import embetter._cache as cache

    monkeypatch.setattr(cache, "_state_signature", lambda obj: ("fixed", []))  # a key that misses
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


def test_a_save_keeps_permissions_and_links_syncs_and_takes_long_names(tmp_path, monkeypatch):
    import os

    import embetter._atomic as atomic
    from embetter._atomic import atomic_path

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))

    def save(path, text):
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.write(text)

    private = tmp_path / "private.skops"
    save(private, "v1")
    private.chmod(0o600)
    save(private, "v2")
    assert private.read_text() == "v2" and (private.stat().st_mode & 0o777) == 0o600
    assert len(synced) >= 4  # the file and its folder, each save: on disk before its name
    (tmp_path / "v3.skops").write_text("old")
    link = tmp_path / "current.skops"
    link.symlink_to("v3.skops")
    save(link, "new")
    assert link.is_symlink() and (tmp_path / "v3.skops").read_text() == "new"
    long = tmp_path / ("m" * 240 + ".skops")  # 246 characters: the temporary name overflowed
    save(long, "ok")
    assert long.read_text() == "ok"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("forms", ["series+frame", "list+column", "column+list",
                                   "frame+list"])
def test_difference_classifier_fits_its_encoder_on_mixed_forms(forms):
    """An encoder that needs fitting was fitted on both sides joined: a 1-D side and a
    one-column side crashed in numpy, where a fitted encoder took them."""
    import pandas as pd

    from embetter.model import DifferenceClassifier
    from embetter.text import LiteTextEncoder

    a = [f"the cat likes item {i}" for i in range(30)]
    b = [f"a dog hates thing {i}" for i in range(30)]
    y = np.arange(30) % 2
    make = {"series": pd.Series, "frame": lambda t: pd.DataFrame({"text": t}),
            "list": list, "column": lambda t: np.asarray(t)[:, None]}
    left, right = forms.split("+")
    clf = DifferenceClassifier(enc=LiteTextEncoder(n_components=4, random_state=0))
    clf.fit(make[left](a), make[right](b), y)
    assert clf.predict(make[left](a[:3]), make[right](b[:3])).shape == (3,)


def test_the_cache_takes_texts_with_lone_surrogates(tmp_path):
    import os

    from embetter.text import LiteTextEncoder

    text = os.fsdecode(b"caf\xe9 menu")  # a file name read with surrogateescape
    texts = [text, "the cafe menu", "a dog hates the rain", "the cat likes pizza"]
    enc = LiteTextEncoder(n_components=2, random_state=0).fit(texts)  # it takes such texts
    np.testing.assert_allclose(cached(tmp_path / "c", enc).transform([text]),
                               enc.transform([text]), atol=1e-6)


def test_inputs_expand_the_home_folder_as_outputs_do(tmp_path, tiny_model_path, monkeypatch):
    from embetter.cli import main
    from tests._cli_helpers import labelled_frame

    monkeypatch.setenv("HOME", str(tmp_path))
    labelled_frame().to_csv(tmp_path / "in.csv", index=False)
    assert main(["finetune", "~/in.csv", "--text-col", "text", "--label-col", "label",
                 "--model", tiny_model_path, "--out", "~/m.skops"]) == 0
    assert main(["transform", "~/m.skops", "~/in.csv", "--out", "~/x.npy"]) == 0
    assert np.load(tmp_path / "x.npy").shape[0] == len(labelled_frame())


def test_matrix_and_text_messages_name_the_problem():
    import pandas as pd

    from embetter._validation import as_matrix, as_texts

    with pytest.raises(ValueError, match="X must be a 2-D array of numbers with rows of one "
                                         "length"):
        as_matrix([[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match=r"X holds 1e\+300 at row 1, column 0: beyond float32"):
        as_matrix(np.array([[1.0, 2.0], [1e300, 0.0]]))
    with pytest.raises(ValueError, match="contains NaN or infinity"):
        as_matrix(np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match=r"X\[1\] is missing"):
        as_texts(pd.Series(["a", pd.NA], dtype=object))


def test_a_map_of_a_pool_labelled_in_part(tmp_path, tiny_model_path):
    """Python's projection refused what the command line's map takes: rows not labelled yet."""
    import pandas as pd

    from embetter.cli import main
    from embetter.plot import projection

    X = np.random.default_rng(0).normal(size=(12, 4))
    y = pd.Series(["a", None, "b", np.nan] * 3)
    fig = projection(X, y)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["(unlabelled)", "a", "b"]
    sizes = [len(c.get_offsets()) for c in fig.axes[0].collections]
    assert sizes == [6, 3, 3]
    with pytest.raises(ValueError, match="y has 3 entries"):
        projection(X, y[:3])
    # the command line reads cats.NAME for its map as finetune does
    import json

    path = tmp_path / "inbox.jsonl"
    path.write_text("".join(json.dumps({"text": f"the cat likes item {i}",
                                        "cats": {"urgent": i % 2} if i % 3 else {}}) + "\n"
                            for i in range(9)))
    assert main(["project", str(path), "--text-col", "text", "--label-col", "cats.urgent",
                 "--method", "pca", "--model", tiny_model_path,
                 "--out", str(tmp_path / "map.csv")]) == 0
    table = pd.read_csv(tmp_path / "map.csv")
    assert table["label"].isna().sum() == 3 and set(table["label"].dropna()) == {0, 1}


# -- a review of this session's own changes -----------------------------------------------------
def test_cache_keys_of_a_function_with_comprehensions_hold_across_processes(tmp_path):
    """The code's constants were hashed by repr: a nested code object's holds its address,
    so a `prep` with a comprehension missed the cache in every new process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    script = "\n".join([
        f"import sys; sys.path.insert(0, {root!r})",
        "from embetter._cache_key import _content_hash",
        "from sklearn.preprocessing import FunctionTransformer",
        "def prep(X):",
        "    return [t.lower() for t in X if t not in {'a', 'b', 'c'}]",
        "print(_content_hash(FunctionTransformer(prep)))",
    ])
    keys = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
            for seed in (1, 2)}
    assert len(keys) == 1


def test_saves_through_a_dangling_link_and_long_multibyte_names(tmp_path):
    from embetter._atomic import atomic_path

    def save(path, text):
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.write(text)

    dangling = tmp_path / "current.skops"
    dangling.symlink_to(tmp_path / "gone" / "v9.skops")
    save(dangling, "new")  # replaced by the file, as before; no folder made at the dead end
    assert dangling.read_text() == "new" and not dangling.is_symlink()
    assert not (tmp_path / "gone").exists()
    wide = tmp_path / ("模型" * 40 + ".skops")  # 86 characters, 246 bytes
    save(wide, "ok")
    assert wide.read_text() == "ok"


def test_difference_classifier_fits_on_token_lists():
    from sklearn.base import BaseEstimator, TransformerMixin

    from embetter.model import DifferenceClassifier

    class Lengths(TransformerMixin, BaseEstimator):
        def fit(self, X, y=None):
            self.n_ = len(X)
            return self

        def transform(self, X):
            return np.array([[len(t), len(t) % 3] for t in X], dtype=float)

    a = [["a", "b"], ["c"], ["d", "e", "f"], ["g"]] * 5
    b = [["a"], ["b", "c", "d"], ["e", "f"], ["g", "h", "i", "j"]] * 5
    clf = DifferenceClassifier(enc=Lengths()).fit(a, b, np.arange(20) % 2)
    assert clf.predict(a[:2], b[:2]).shape == (2,)


# -- a review of saving and the cache (session 29) ----------------------------------------------
_LITE = """
import sys
from embetter.text import LiteTextEncoder
from embetter.utils import cached
texts = ["hello world", "a cat is here", "the dog barks", "the cat and the dog"]
enc = cached(sys.argv[1], LiteTextEncoder(n_components=2, random_state=0)).fit(texts)
sent = []
inner = type(enc.encoder).transform
type(enc.encoder).transform = lambda self, X: (sent.append(len(X)), inner(self, X))[1]
enc.transform(texts)
print(sum(sent))
"""


def test_a_fitted_tfidf_encoder_is_the_same_key_in_another_process(tmp_path):
    """A fitted vectorizer holds `id(stop_words)`: the key changed with every process, so a
    restart (or another process) encoded every text again and the dead rows piled up."""
    import subprocess
    import sys

    runs = [subprocess.run([sys.executable, "-c", _LITE, str(tmp_path / "c")], check=True,
                           capture_output=True, text=True).stdout.split() for _ in range(2)]
    assert runs == [["4"], ["0"]]


def test_closures_that_captured_other_values_are_other_keys(tmp_path):
    from sklearn.feature_extraction.text import HashingVectorizer

    def scaled(k):
        return lambda X: X * k

    def encoder(k):
        return cached(tmp_path / "c", make_pipeline(
            HashingVectorizer(n_features=8, alternate_sign=False),
            FunctionTransformer(scaled(k), accept_sparse=True),
            FunctionTransformer(lambda X: X.toarray(), accept_sparse=True)))

    small, large = encoder(1.0), encoder(100.0)
    np.testing.assert_allclose(large.fit(TEXTS).transform(TEXTS),
                               100.0 * small.fit(TEXTS).transform(TEXTS), rtol=1e-6)
    assert small._identity() != large._identity()


def test_a_failed_cache_write_warns_and_returns_the_vectors(tmp_path, monkeypatch):
    import sqlite3

    import diskcache

    from embetter.text import LiteTextEncoder

    enc = cached(tmp_path / "c", LiteTextEncoder(n_components=2)).fit(TEXTS * 2)
    expected = enc.encoder.transform(TEXTS)

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(diskcache.Cache, "set", full)
    with pytest.warns(RuntimeWarning, match="could not store 2 rows .*disk is full"):
        out = enc.transform(TEXTS)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_a_loaded_contrastive_learner_goes_on_as_the_pickled_one(tmp_path):
    """`load` dropped the stream's settled architecture, its start size and its random
    state: a loaded learner took a set_params the saved one refused (then wrote a file that
    did not load), and a resumed stream trained other weights than a pickled one."""
    import pickle

    from embetter.finetune import ContrastiveLearner

    rng = np.random.default_rng(0)
    X1, X2 = rng.normal(size=(2, 40, 8)).astype("float32")
    y = (np.sign(X1[:, 0]) == np.sign(X2[:, 0])).astype("float32")
    learner = ContrastiveLearner(epochs=3, batch_size=8, random_state=0, device="cpu")
    learner.fit(X1, X2, y)
    loaded = ContrastiveLearner.load(learner.save(tmp_path / "l.pt"), device="cpu")
    unpickled = pickle.loads(pickle.dumps(learner))
    assert loaded.refit_rows_ == learner.refit_rows_ > 0
    for other in (loaded, unpickled):
        other.partial_fit(X1[:10], X2[:10], y[:10])
    np.testing.assert_array_equal(loaded.transform(X1), unpickled.transform(X1))
    loaded.set_params(shape_out=4)
    with pytest.raises(ValueError, match="shape_out"):
        loaded.partial_fit(X1[:10], X2[:10], y[:10])


_BOUND = """
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from embetter._cache_key import _content_hash
vec = TfidfVectorizer().fit(["apple banana cherry", "banana cherry date"])
def make(v):
    def prep(texts):
        return v.transform(texts).toarray()
    return prep
print(_content_hash(FunctionTransformer(make(vec))),
      _content_hash(FunctionTransformer(vec.transform)))
"""


def test_a_vectorizer_captured_by_a_closure_or_bound_as_a_method_keeps_its_key(tmp_path):
    import subprocess
    import sys

    runs = [subprocess.run([sys.executable, "-c", _BOUND], check=True, capture_output=True,
                           text=True).stdout for _ in range(2)]
    assert runs[0] == runs[1] and runs[0].strip()


def test_a_closure_over_what_pickle_cannot_write_or_over_its_own_encoder_is_cached(tmp_path):
    def over_a_module():
        import unicodedata

        def prep(texts):
            return np.asarray([[len(unicodedata.normalize("NFC", t))] for t in texts],
                              dtype=np.float32)
        return FunctionTransformer(prep)

    def over_itself():
        box = {}

        def prep(texts):
            return np.asarray([[len(t) + len(box)] for t in texts], dtype=np.float32)
        box["encoder"] = encoder = FunctionTransformer(prep)
        return encoder

    for i, make in enumerate((over_a_module, over_itself)):
        enc = cached(tmp_path / str(i), make())
        np.testing.assert_array_equal(enc.transform(["ab", "cde"]).ravel(), [2 + i, 3 + i])
