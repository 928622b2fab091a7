"""Fixes from a review that fed every public call bad input: each test failed on the code
before its fix (a deep-library error, a silent wrong result, or a kept reference)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from tests._sbert_helpers import learner, tuner


@pytest.mark.parametrize("trust", ["no", "false", ["some.other.Type"], 1])
def test_load_skops_trust_is_a_flag(tmp_path, trust):
    """`if not trust` let any truthy value ("no", skops' list of names) trust every type."""
    from embetter.utils import load_skops, save_skops

    path = save_skops(FunctionTransformer(func=os.path.basename), tmp_path / "f.skops")
    with pytest.raises(TypeError, match="trust must be True or False"):
        load_skops(path, trust=trust)


def test_sbert_tuner_keeps_its_own_copy_of_the_labels(tiny_model_path, corpus):
    """seen_y_ was the caller's array: reusing it for other labels changed what a later
    retrain trained on."""
    y = np.array(["a", "b", "c"] * 4)
    fitted = tuner(tiny_model_path, batch_size=8, epochs=1).partial_fit(corpus[:12], y)
    y[:] = "z"
    assert fitted.seen_y_ is not y and set(fitted.seen_y_) == {"a", "b", "c"}


@pytest.mark.parametrize("loss, y, message", [
    ("supcon", [np.inf, -np.inf, 1, 1], "int class codes"),
    ("prototype", [0.0, 0.0, 1e20, 1e20], "fit in int64"),
    ("prototype", [0, 0, 0, 0], "single class"),
    ("supcon", [3, 3, 3, 3], "single class"),
])
def test_sbert_learner_class_codes(tiny_model_path, corpus, loss, y, message):
    """Infinite codes were cast to one int64 (two classes trained as one), 1e20 failed deep
    in the loss, and a single class trained nothing with a loss of 0 and no word."""
    with pytest.raises(ValueError, match=message):
        learner(tiny_model_path, loss=loss, batch_size=4).fit(corpus[:4], corpus[4:8], y)


def test_auto_training_length_is_the_models_at_most(tiny_model_path, corpus):
    """`max_seq_length="auto"` on texts longer than the model reads reported their length
    (512) as the length trained at, not the model's limit (64)."""
    fitted = learner(tiny_model_path, max_seq_length="auto", epochs=1).fit(
        [" ".join(corpus) * 3, corpus[0]], corpus[1:3], [1.0, 0.0])
    assert fitted.max_seq_length_ == fitted.model_.max_seq_length == 64


@pytest.mark.parametrize("enc", [FunctionTransformer(), StandardScaler()])
def test_difference_classifier_sides_of_two_widths(enc):
    """Sides of two widths were called sides of two lengths ("got 12 and 12"), or gave
    numpy's concatenate error when the encoder is fitted on both."""
    from embetter.model import DifferenceClassifier

    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="widths|same form"):
        DifferenceClassifier(enc=enc).fit(rng.normal(size=(12, 4)), rng.normal(size=(12, 3)),
                                          [0, 1] * 6)


def test_difference_classifier_names_a_missing_side():
    from embetter.model import DifferenceClassifier

    with pytest.raises(TypeError, match="X1 must be a collection"):
        DifferenceClassifier(enc=FunctionTransformer()).fit(None, np.ones((2, 2)), [0, 1])


def test_pairs_from_records_bad_values_are_named():
    from embetter.finetune import pairs_from_records

    records = [{"text": "a", "cats": {"x": 1}}, {"text": "b", "cats": {"x": 1}},
               {"text": "c", "cats": {"x": 0}}]
    with pytest.raises(ValueError, match=r"records\[0\]\['cats'\]\['x'\] must be 0 or 1"):
        pairs_from_records([{"text": "d", "cats": {"x": np.array([1, 0])}}] + records)
    with pytest.raises(TypeError, match="labels must be a list"):
        pairs_from_records(records, labels=5)
    for seed in ("x", -1):
        with pytest.raises(ValueError, match="random_state must be"):
            pairs_from_records(records, random_state=seed)


def test_mine_hard_negatives_checks_the_embeddings():
    from embetter.finetune import mine_hard_negatives

    anchors, positives = ["q1", "q2", "q3", "q4"], ["p1", "p2", "p3", "p4"]
    E = np.random.default_rng(0).normal(size=(4, 5))
    with pytest.raises(ValueError, match="same width, got 5 and 3"):
        mine_hard_negatives(anchors, positives, embeddings=(E, E[:, :3]))
    short = FunctionTransformer(lambda X: np.ones((len(X) - 1, 3)))
    with pytest.raises(ValueError, match="returned 3 embeddings for 4 texts"):
        mine_hard_negatives(anchors, positives, short, margin=None)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_cache_serves_but_does_not_store_non_finite_rows(tmp_path):
    """A NaN or inf row (float64 above float32's range too) was stored for good."""
    from embetter.utils import cached

    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.array([[1e300, 0.0] if t == "big" else [1.0, 2.0] for t in texts])

    enc = cached(tmp_path / "c", FunctionTransformer(encode))
    first = enc.transform(["big", "ok"])
    assert np.isinf(first[0, 0]) and first[1].tolist() == [1.0, 2.0]
    enc.transform(["big", "ok"])
    assert calls[-1] == ["big"]  # asked again; "ok" came from the cache
    strings = cached(tmp_path / "s", FunctionTransformer(lambda X: np.array([["a"]] * len(X))))
    with pytest.raises(TypeError, match="not numbers"):
        strings.transform(["x"])


def test_calc_distances_names_what_does_not_fit():
    from embetter.utils import calc_distances

    rng = np.random.default_rng(0)
    X, A = rng.normal(size=(4, 3)), rng.normal(size=(2, 5))
    same = FunctionTransformer()
    with pytest.raises(ValueError, match="3 columns and anchor_pipeline gives anchors 5"):
        calc_distances(X, A, same)
    with pytest.raises(ValueError, match="pipeline gave vectors holding NaN"):
        calc_distances(np.full((2, 3), np.nan), X, same)
    with pytest.raises(ValueError, match="n_jobs must be"):
        calc_distances(X, X, same, n_jobs=0)


def test_dask_column_must_be_one_name():
    import dask.dataframe as dd
    import pandas as pd

    from embetter.dask import transform

    frame = dd.from_pandas(pd.DataFrame({"text": ["a", "b"]}), npartitions=1)
    with pytest.raises(TypeError, match="column must be one column name"):
        transform(FunctionTransformer(), frame, column=["text"])


@pytest.mark.parametrize("classes, error, match", [
    ("ab", TypeError, "classes must be a list"),
    ({"a": 1, "b": 2}, TypeError, "classes must be a list"),
    ("with pd.NA", ValueError, "missing value"),
    ([b"a", b"b"], TypeError, "bytes"),
])
def test_labelling_loop_classes(classes, error, match):
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from embetter.label import LabellingLoop

    if classes == "with pd.NA":
        classes = ["a", pd.NA]  # (pd.NA was called a mix of kinds)
    with pytest.raises(error, match=match):
        LabellingLoop(LogisticRegression(), np.eye(4), classes=classes)


def test_projection_classes_must_be_a_list():
    from embetter.plot import projection

    X = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(TypeError, match="classes must be a list"):
        projection(X, y=[0, 1] * 3, classes=5)


def test_saving_onto_a_folder_or_none_is_named(tmp_path):
    from embetter.finetune import ContrastiveLearner
    from embetter.utils import save_skops

    with pytest.raises(ValueError, match="must be a file .*got the directory"):
        save_skops(FunctionTransformer(), tmp_path)
    rng = np.random.default_rng(0)
    X1, X2 = rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 4)).astype("float32")
    learner = ContrastiveLearner(epochs=1, random_state=0, device="cpu").fit(X1, X2, [0, 1] * 4)
    with pytest.raises(ValueError, match="got the directory"):
        learner.save(tmp_path)
    with pytest.raises(TypeError, match="path must be a str or path-like"):
        learner.save(None)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left beside


def test_loading_onto_a_device_this_machine_lacks_is_refused(tmp_path, monkeypatch):
    """An explicit device was dropped silently on load (fit refuses it)."""
    import embetter._torch.device as device
    from embetter.finetune import ContrastiveLearner

    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 4)).astype("float32")
    path = ContrastiveLearner(epochs=1, random_state=0, device="cpu").fit(
        X, X[::-1], [0, 1] * 4).save(tmp_path / "l.pt")
    monkeypatch.setattr(device.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no cuda device on this machine"):
        ContrastiveLearner.load(path, device="cuda")
    assert ContrastiveLearner.load(path).transform(X).shape == (8, 4)  # None: the CPU here


def test_multi_label_stream_checks_classes_against_the_columns(tiny_model_path, corpus):
    from embetter.finetune import ContrastiveTuner

    Y = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]] * 3)
    X = np.random.default_rng(0).normal(size=(12, 4)).astype("float32")
    with pytest.raises(ValueError, match="classes lists 5 labels, but y has 4 label columns"):
        ContrastiveTuner(random_state=0).partial_fit(X, Y, classes=[0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="classes lists 5 labels"):
        tuner(tiny_model_path).partial_fit(corpus[:12], Y, classes=[0, 1, 2, 3, 4])


def test_suggest_refuses_unusable_probabilities():
    from sklearn.dummy import DummyClassifier

    from embetter.label import suggest

    X = np.eye(6)

    class Odd(DummyClassifier):
        def __init__(self, rows=None, value=0.5):
            super().__init__()
            self.rows, self.value = rows, value

        def predict_proba(self, X):
            return np.full((self.rows or len(X), 2), self.value)

    for model, match in ((Odd(rows=3), "3 rows for a pool of 6"),
                         (Odd(value=np.nan), "NaN or inf")):
        model.fit(X, [0, 1] * 3)
        for strategy in ("margin", "auto"):
            with pytest.raises(ValueError, match=match):
                suggest(model, X, k=2, strategy=strategy)


def test_training_a_float16_static_model_says_nothing(tiny_model_path, corpus, tmp_path, caplog):
    """model2vec's note on casting a float16 model came out of train_on_fit's fit."""
    import logging

    from embetter.text import TextEncoder, _distill

    static = _distill.distill(tiny_model_path, pca_dims=16)
    static.embedding = static.embedding.astype(np.float16)
    static.save_pretrained(str(tmp_path / "m2v"))
    with caplog.at_level(logging.INFO):
        TextEncoder(str(tmp_path / "m2v"), train_on_fit=True, teacher=tiny_model_path,
                    random_state=0).fit(corpus[:60])
    assert not [r for r in caplog.records if r.name.startswith("model2vec")]


def test_calc_distances_still_takes_what_it_took():
    """The first form of the checks refused a numpy int n_jobs, nan_euclidean on NaN rows
    and a callable metric over text columns."""
    from embetter.utils import calc_distances

    same = FunctionTransformer()
    X = np.array([[1.0, np.nan], [0.0, 1.0]])
    assert calc_distances(X, X[:1], same, metric="nan_euclidean", n_jobs=np.int64(1)).shape == (2,)
    words = np.array([["kitten"], ["cat"]], dtype=object)
    out = calc_distances(words, words[:1], same, metric=lambda a, b: float(a[0] != b[0]))
    assert out.tolist() == [0.0, 1.0]


def test_class_codes_of_two_to_the_63_are_refused():
    from embetter.finetune._sbert_inputs import check_classes

    with pytest.raises(ValueError, match="fit in int64"):
        check_classes(np.array([0.0, 2.0**63]), 2, "supcon")


@pytest.mark.parametrize("classes", [[0, 1], [np.array([0, 1])] * 3, ["a", "b", "c"]])
def test_multi_label_classes_as_sklearn_gives_them(classes):
    """classes= of a multi-label stream: the 0/1 values, or one entry (or one array of values)
    per column, as scikit-learn's multi-output estimators take them."""
    from embetter.finetune import ContrastiveTuner

    Y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]] * 3)
    X = np.random.default_rng(0).normal(size=(12, 4)).astype("float32")
    ContrastiveTuner(epochs=1, random_state=0).partial_fit(X, Y, classes=classes)


@pytest.mark.parametrize("classes", [3, [0, 1, 0, 1, 1], [[0, 1], [0, 1]], [0, 1, 2, 3, 4]])
def test_multi_label_classes_of_another_size_are_refused(classes):
    from embetter.finetune import ContrastiveTuner

    Y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]] * 3)
    X = np.random.default_rng(0).normal(size=(12, 4)).astype("float32")
    with pytest.raises(ValueError, match="but y has 3 label columns"):
        ContrastiveTuner(epochs=1, random_state=0).partial_fit(X, Y, classes=classes)
