"""Fixes from two reviews of the estimator contract and of bad input (session 31): each test
failed on the code before its fix."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import sklearn
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import get_tags

from tests._sbert_helpers import learner, tuner

TEXTS = ["the cat sat", "a dog barked", "cats and dogs", "the stock market fell"] * 5


def test_a_cached_encoders_fit_transform_reads_a_generator_once():
    from embetter.text import LiteTextEncoder
    from embetter.utils import cached

    def encoder():
        return LiteTextEncoder(n_components=3, random_state=0)

    out = cached(tempfile.mkdtemp(), encoder()).fit_transform(t for t in TEXTS)
    assert out.shape == (20, 3)  # (0, 3) before: transform got the exhausted generator
    assert np.allclose(out, encoder().fit_transform(TEXTS), atol=1e-6)


def test_the_lite_encoder_runs_under_sklearns_global_pandas_output():
    from embetter.text import LiteTextEncoder

    plain = LiteTextEncoder(n_components=3, random_state=0).fit_transform(TEXTS)
    with sklearn.config_context(transform_output="pandas"):
        encoder = LiteTextEncoder(n_components=3, random_state=0)
        frame = encoder.fit_transform(TEXTS)  # its sparse TF-IDF step raised before
        again = encoder.transform(TEXTS)
    assert list(frame.columns) == [f"litetextencoder{i}" for i in range(3)]
    assert np.allclose(frame.to_numpy(), plain) and np.allclose(again.to_numpy(), plain)


def test_an_sbert_tuners_own_output_setting_wins_over_the_global_one(tiny_model_path):
    y = [0, 1] * 10
    fitted = tuner(tiny_model_path, epochs=1, batch_size=8).fit(TEXTS, y)
    fitted.set_output(transform="default")
    with sklearn.config_context(transform_output="pandas"):
        assert isinstance(fitted.transform(TEXTS[:2]), np.ndarray)  # a DataFrame before
        fitted.set_output(transform="pandas")
        assert list(fitted.transform(TEXTS[:2]).columns)[:2] == ["sberttuner0", "sberttuner1"]


def test_the_learners_fit_transform_takes_their_pairs(tiny_model_path):
    from embetter.finetune import ContrastiveLearner

    rng = np.random.default_rng(0)
    X1, X2 = rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
    similar = np.arange(40) % 2
    head = ContrastiveLearner(epochs=2, random_state=0)
    out = head.fit_transform(X1, X2, similar)  # a TypeError (three arguments) before
    assert np.allclose(out, ContrastiveLearner(epochs=2, random_state=0)
                       .fit(X1, X2, similar).transform(X1))
    texts = TEXTS[:8]
    scores = np.array([1.0, 0.0] * 4)
    tuned = learner(tiny_model_path, epochs=1).fit_transform(texts, texts[::-1], scores)
    assert tuned.shape == (8, learner(tiny_model_path).fit(texts, texts[::-1], scores)
                           .transform(texts).shape[1])


def test_tags_say_what_the_grabbers_take_and_when_the_learners_need_y():
    from embetter.finetune import ContrastiveLearner, SbertLearner
    from embetter.grab import ColumnGrabber, KeyGrabber

    for grabber in (KeyGrabber("text"), ColumnGrabber("text")):
        tags = get_tags(grabber)  # numeric 2-D arrays before: sklearn's checks fed them
        assert tags.input_tags.dict and not tags.input_tags.two_d_array
    assert get_tags(ContrastiveLearner()).target_tags.required
    assert not get_tags(ContrastiveLearner(loss="infonce")).target_tags.required
    assert get_tags(SbertLearner()).target_tags.required
    assert not get_tags(SbertLearner(loss="mnrl")).target_tags.required


@pytest.mark.parametrize("make, problem", [
    (lambda X: np.array([[float(len(t))] for t in X if t.strip()]), "shape \\(2, 1\\) for 3"),
    (lambda X: np.ones((len(X), 2, 3)), "shape \\(3, 2, 3\\) for 3"),
])
def test_a_cached_encoder_refuses_output_that_is_not_a_row_per_text(make, problem):
    from embetter.utils import cached

    folder = tempfile.mkdtemp()
    with pytest.raises(ValueError, match=problem):  # a KeyError, or a reshaped mix, before
        cached(folder, FunctionTransformer(make)).transform(["a", "", "ccc"])
    # nothing was stored under the wrong text: an encoder that works now gives its own rows
    good = cached(folder, FunctionTransformer(make))
    good.encoder = FunctionTransformer(lambda X: np.array([[float(len(t)) + 1] for t in X]))
    assert good.transform([""]).tolist() == [[1.0]]


def test_a_cached_encoder_refuses_sparse_output():
    from sklearn.feature_extraction.text import TfidfVectorizer

    from embetter.utils import cached

    with pytest.raises(TypeError, match="sparse matrix"):
        cached(tempfile.mkdtemp(), TfidfVectorizer().fit(TEXTS)).transform(["a cat", "x"])


def test_a_text_encoders_training_settings_are_checked_before_the_teacher_runs(tmp_path):
    from embetter.text import TextEncoder

    with pytest.raises(ValueError, match="random_state must be an int from 0 to 2\\*\\*32"):
        TextEncoder(str(tmp_path), train_on_fit=True, random_state=-1).fit(TEXTS)
    with pytest.raises(TypeError, match="teacher must be a sentence model"):
        TextEncoder(str(tmp_path), train_on_fit=True, teacher=None).fit(TEXTS)


def test_a_labelling_loop_refuses_classes_that_mix_numbers_and_strings():
    from sklearn.linear_model import SGDClassifier

    from embetter.label import LabellingLoop

    X = np.random.default_rng(0).normal(size=(20, 4))
    with pytest.raises(ValueError, match="all strings or all numbers"):  # ['0', 'spam'] before
        LabellingLoop(SGDClassifier(loss="log_loss"), X, classes=[0, "spam"])
    assert LabellingLoop(SGDClassifier(loss="log_loss"), X, classes=[0, 1]).classes_.tolist() \
        == [0, 1]
    mixed_strings = [*np.unique(np.array(["spam", "ham"])), "other"]  # numpy's str and str
    assert LabellingLoop(SGDClassifier(loss="log_loss"), X,
                         classes=mixed_strings).classes_.tolist() == ["ham", "other", "spam"]


def test_small_functions_name_a_bad_argument():
    from embetter.finetune import pairs_from_records
    from embetter.plot import projection
    from embetter.utils import batched

    with pytest.raises(TypeError, match="records must be an iterable of dicts"):
        pairs_from_records(None)
    with pytest.raises(TypeError, match="iterable must be an iterable"):
        batched(None, 2)  # raised at the first next() before
    X = np.random.default_rng(0).normal(size=(10, 5))
    with pytest.raises(ValueError, match="figsize must be"):
        projection(X, figsize=6)
    with pytest.raises(ValueError, match="point_size must be"):
        projection(X, point_size="big")


def _frame(n=40):
    import pandas as pd

    words = ["card", "refund", "login", "delivery"]
    return pd.DataFrame({"subject": [f"about my {words[i % 4]}" for i in range(n)],
                         "text": [f"my {words[i % 4]} problem number {i}" for i in range(n)]})


@pytest.mark.parametrize("make", ["pipeline", "union", "columns"])
def test_a_loop_embeds_the_pool_once_through_a_composite_encoder_step(tiny_model_path, make):
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    from embetter.grab import ColumnGrabber
    from embetter.label import LabellingLoop
    from embetter.text import SentenceEncoder

    def grab(column):
        return make_pipeline(ColumnGrabber(column), SentenceEncoder(tiny_model_path))

    step = {"pipeline": lambda: grab("text"),
            "union": lambda: make_union(grab("subject"), grab("text")),
            "columns": lambda: make_column_transformer(
                (SentenceEncoder(tiny_model_path), "subject"),
                (SentenceEncoder(tiny_model_path), "text"))}[make]()
    pool = _frame()
    loop = LabellingLoop(make_pipeline(step, LogisticRegression()), pool,
                         classes=["card", "other"], random_state=0)
    # the pool's embeddings, made once (the raw frame before: every round encoded it again)
    assert isinstance(loop.embeddings_, np.ndarray) and loop.embeddings_.shape[0] == 40
    assert len(loop._learned) == 1
    picks = loop.suggest(4)
    loop.update(picks, ["card", "other", "other", "other"])  # (two classes: a head learns)
    assert loop.model_.predict_proba(pool.iloc[:3]).shape == (3, 2)


def test_a_loop_trains_a_static_text_encoder_on_the_pool(tiny_model_path, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from embetter.label import LabellingLoop
    from embetter.text import TextEncoder, _distill

    _distill.distill(tiny_model_path, pca_dims=8).save_pretrained(str(tmp_path / "m2v"))
    encoder = TextEncoder(str(tmp_path / "m2v"), train_on_fit=True, teacher=tiny_model_path,
                          random_state=0)
    texts = _frame()["text"].tolist()
    loop = LabellingLoop(make_pipeline(encoder, LogisticRegression()), texts,
                         classes=["card", "other"], random_state=0)
    picks = loop.suggest(4)  # it trained on the 10 labelled texts, and refused them, before
    loop.update(picks, ["card" if i % 4 == 0 else "other" for i in picks])
    assert loop.embeddings_.shape == (40, 8)


def test_one_openvino_encoder_serves_several_threads(tiny_model_path):
    pytest.importorskip("openvino", reason="backend='openvino' needs the openvino extra (in dev)")
    import threading

    from embetter.text import SentenceEncoder

    encoder = SentenceEncoder(tiny_model_path, backend="openvino")
    texts = [f"text number {i} about cats" for i in range(64)]
    alone = encoder.transform(texts)
    start, results, errors = threading.Barrier(4), {}, []

    def work(i):
        start.wait()
        try:
            results[i] = encoder.transform(texts)
        except Exception as e:  # "Infer Request is busy" before: one request for all threads
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and all(np.array_equal(results[i], alone) for i in range(4))


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_the_cpu_runtimes_keep_to_the_process_thread_limit(tiny_model_path, backend):
    pytest.importorskip(backend if backend == "openvino" else "onnxruntime")
    import torch

    from embetter.text import SentenceEncoder

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as a joblib worker's OMP_NUM_THREADS=1 sets it
    try:
        encoder = SentenceEncoder(tiny_model_path, backend=backend)
        encoder.transform(["a text"])
        engine = encoder._fast_engine(encoder._plan())
    finally:
        torch.set_num_threads(before)
    if backend == "onnx":  # 0 before: every core, in every worker
        assert engine.session.get_session_options().intra_op_num_threads == 1
    else:
        assert int(engine.compiled.get_property("INFERENCE_NUM_THREADS")) == 1


def test_a_csv_with_another_delimiter_gets_a_hint(tmp_path, tiny_model_path, capsys):
    from embetter.cli import main

    rows = ["text;label", "hello there;a", "yes, indeed;b"] + [f"row {i};a" for i in range(5)]
    (tmp_path / "semi.csv").write_text("\n".join(rows) + "\n")
    assert main(["embed", str(tmp_path / "semi.csv"), "--text-col", "text", "--model",
                 tiny_model_path, "--out", str(tmp_path / "x.npy")]) == 2
    assert "another delimiter" in capsys.readouterr().err  # pandas' tokenizer alone before


def test_a_projection_names_an_unknown_label_plainly():
    from embetter.plot import projection

    X = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.raises(ValueError, match=r"not in classes: \['c'\]"):  # [np.str_('c')] before
        projection(X, np.array(["a", "b", "c", "a"]), classes=["a", "b"])


def test_the_cpu_runtimes_never_take_more_threads_than_cores():
    import os

    import torch

    from embetter.text._backends._batching import inference_threads

    before = torch.get_num_threads()
    torch.set_num_threads(4 * (os.cpu_count() or 1))
    try:
        assert inference_threads() == (os.cpu_count() or 1)  # onnxruntime took them all
    finally:
        torch.set_num_threads(before)
