"""Error branches of the library that no other test reached: each test here triggers one and
checks both the exception type and that the message names the argument at fault.

Every call is refused before any real work (no model is trained, no network is reached), so
the tests are fast; the few that need a sentence model use the tiny one of conftest.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from embetter._files import UsageError
from embetter.cli import main


# -- DifferenceClassifier ------------------------------------------------------------------------
def test_difference_classifier_refuses_a_head_that_is_not_a_classifier():
    from sklearn.preprocessing import FunctionTransformer

    from embetter.model import DifferenceClassifier

    enc = FunctionTransformer(lambda X: np.ones((len(X), 3), dtype=np.float32))
    clf = DifferenceClassifier(enc=enc, clf_head="not a classifier")
    with pytest.raises(TypeError, match=r"clf_head must be None or a classifier .*got str"):
        clf.fit(["a", "b"], ["c", "d"], [0, 1])


# -- mine_hard_negatives --------------------------------------------------------------------------
@pytest.mark.parametrize("margin", [math.nan, math.inf, "x"], ids=["nan", "inf", "str"])
def test_mine_hard_negatives_refuses_a_margin_that_is_not_a_finite_number(margin):
    from embetter.finetune import mine_hard_negatives

    # refused before the model is loaded: the model name is never looked at
    with pytest.raises(ValueError, match=r"margin must be None or a finite number, got"):
        mine_hard_negatives(["q1", "q2"], ["a1", "a2"], "no-such-model", margin=margin)


# -- SentenceEncoder ------------------------------------------------------------------------------
def test_sentence_encoder_refuses_a_prompt_that_is_not_a_str(tiny_model_path):
    from embetter.text import SentenceEncoder

    with pytest.raises(TypeError, match=r"prompt must be None or a str, got int"):
        SentenceEncoder(tiny_model_path, prompt=3).transform(["a text"])


def test_sentence_encoder_refuses_a_model_name_that_is_not_a_str():
    from embetter.text import SentenceEncoder

    with pytest.raises(TypeError, match=r"name must be a model name, a local path or a "
                                        r"SentenceTransformer, got int"):
        SentenceEncoder(42).transform(["a"])


# -- hosted encoders ------------------------------------------------------------------------------
def _hosted():
    from embetter.external import (
        AzureOpenAIEncoder,
        CohereEncoder,
        OllamaEncoder,
        OpenAIEncoder,
    )

    local = "http://127.0.0.1:9"  # the discard port of this machine: never reached anyway
    return {
        "openai": lambda key: OpenAIEncoder(api_key=key, base_url=local),
        "azure": lambda key: AzureOpenAIEncoder(api_key=key, azure_endpoint=local),
        "cohere": lambda key: CohereEncoder(api_key=key, base_url=local),
        "ollama": lambda key: OllamaEncoder(api_key=key, base_url=local),
    }


@pytest.mark.parametrize("name", ["openai", "azure", "cohere", "ollama"])
def test_hosted_encoder_refuses_an_api_key_that_is_not_a_str(name):
    enc = _hosted()[name](123)
    with pytest.raises(TypeError, match=r"api_key must be None or a str, got int"):
        enc.transform(["a"])


# -- ContrastiveLearner ---------------------------------------------------------------------------
def test_contrastive_learner_infonce_needs_a_positive_pair():
    from embetter.finetune import ContrastiveLearner

    rng = np.random.default_rng(0)
    X1, X2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    learner = ContrastiveLearner(loss="infonce", epochs=1, random_state=0)
    with pytest.raises(ValueError, match=r"loss='infonce' needs positive pairs \(y == 1\); "
                                         r"got none"):
        learner.fit(X1, X2, np.zeros(6))
    assert not hasattr(learner, "module_")


# -- SbertLearner ---------------------------------------------------------------------------------
def test_sbert_learner_refuses_zero_pairs():
    from embetter.finetune import SbertLearner

    # refused before the model is loaded: the model name is never looked at
    with pytest.raises(ValueError, match=r"X1 and X2 have 0 pairs; at least 1 is required"):
        SbertLearner("no-such-model").fit([], [])


# -- the torch heads' validation_fraction ----------------------------------------------------------
def _heads():
    from embetter.finetune import ContrastiveLearner, ContrastiveTuner, FeedForwardTuner

    return {"feedforward": FeedForwardTuner, "contrastive_tuner": ContrastiveTuner,
            "contrastive_learner": ContrastiveLearner}


@pytest.mark.parametrize("fraction", [0, 1])
@pytest.mark.parametrize("head", ["feedforward", "contrastive_tuner", "contrastive_learner"])
def test_early_stopping_refuses_a_validation_fraction_outside_0_1(head, fraction):
    from sklearn.utils._param_validation import InvalidParameterError

    est = _heads()[head](early_stopping=True, validation_fraction=fraction)
    X = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = np.arange(8) % 2
    args = (X, X[::-1], y) if head == "contrastive_learner" else (X, y)
    with pytest.raises(InvalidParameterError, match=r"'validation_fraction' parameter"):
        est.fit(*args)


# -- suggest --------------------------------------------------------------------------------------
def test_suggest_refuses_an_unsized_pool():
    from sklearn.linear_model import LogisticRegression

    from embetter.label import suggest

    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    pool = ([float(i)] for i in range(4))
    with pytest.raises(TypeError, match=r"X must be a sized pool \(list, array, Series, "
                                        r"DataFrame\), got generator"):
        suggest(model, pool, k=1)


# -- embetter.dask: the probe of the output width --------------------------------------------------
@pytest.fixture(scope="module")
def dask_client():
    pytest.importorskip("distributed", reason="embetter.dask needs the dask extra (in dev)")
    from distributed import Client, LocalCluster

    with LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def _fitted(func):
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(func).fit(["a", "b"])


def test_dask_transform_says_when_the_probe_fails(dask_client):
    import dask.bag as db

    from embetter.dask import transform

    def fail(X):
        raise RuntimeError("boom")

    bag = db.from_sequence(["a", "b"], npartitions=1)
    with pytest.raises(ValueError, match=r"could not infer the output width .*"
                                         r"\(RuntimeError: boom\); pass dim="):
        transform(_fitted(fail), bag, client=dask_client)


def test_dask_transform_refuses_a_pipeline_whose_output_is_not_2d(dask_client):
    import dask.bag as db

    from embetter.dask import transform

    bag = db.from_sequence(["a", "b"], npartitions=1)
    with pytest.raises(ValueError, match=r"pipeline.transform must return a 2-D array of "
                                         r"embeddings, got shape \(2,\)"):
        transform(_fitted(lambda X: np.zeros(len(X))), bag, client=dask_client)


# -- the command line ------------------------------------------------------------------------------
def _finetune(path, label_col, *extra):
    return main(["finetune", str(path), "--text-col", "text", "--label-col", label_col,
                 "--model", "no-such-model", "--out", str(path.parent / "p.skops"), *extra,
                 "--debug"])


def test_cli_label_column_empty_in_every_row(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\na dog,\na cat,\n")
    with pytest.raises(UsageError, match=r"label column 'label' is empty in every row"):
        _finetune(path, "label")
    assert not (tmp_path / "p.skops").exists()


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cli_jsonl_field_that_does_not_hold_records(tmp_path):
    path = _jsonl(tmp_path / "train.jsonl", [{"text": "a dog", "cats": {"flies": 1}},
                                             {"text": "a cat", "cats": "flies"}])
    with pytest.raises(UsageError, match=r"column 'cats' does not hold records \(e\.g\. "
                                         r"'flies'\), cannot read 'cats\.flies'"):
        _finetune(path, "cats.flies")


def test_cli_jsonl_no_record_carries_the_label(tmp_path):
    path = _jsonl(tmp_path / "train.jsonl", [{"text": "a dog", "cats": {"swims": 1}},
                                             {"text": "a cat", "cats": {}},
                                             {"text": "a fish"}])
    with pytest.raises(UsageError, match=r"no record carries the label 'flies' in 'cats'"):
        _finetune(path, "cats.flies")


def test_cli_sbert_tuner_unavailable(tmp_path, monkeypatch):
    import embetter.finetune

    # an installation whose embetter.finetune cannot give SbertTuner
    monkeypatch.delattr(embetter.finetune, "SbertTuner")
    path = tmp_path / "train.csv"
    path.write_text("text,label\na dog,yes\na cat,no\n")
    with pytest.raises(UsageError, match=r"--tuner sbert is not available in this "
                                         r"installation"):
        _finetune(path, "label", "--tuner", "sbert")
    assert not (tmp_path / "p.skops").exists()


def test_labels_that_are_records_say_how_to_pick_one(tmp_path):
    """A JSONL `cats` column given whole: numpy's '<' between dicts, after the encoding."""
    from embetter.cli import main
    from embetter.finetune import FeedForwardTuner

    X = np.ones((4, 3), np.float32)
    with pytest.raises(TypeError, match=r"y must hold one label .* got a dict .*r\['shipping'\]"):
        FeedForwardTuner().fit(X, [{"shipping": 1}, {"shipping": 0}] * 2)
    with pytest.raises(ValueError, match="MultiLabelBinarizer"):
        FeedForwardTuner().fit(X[:2], [["a", "b"], ["c"]])
    path = tmp_path / "inbox.jsonl"
    path.write_text("".join(json.dumps({"text": f"t {i}", "cats": {"urgent": i % 2,
                                                                    "billing": 0}}) + "\n"
                            for i in range(6)))
    with pytest.raises(Exception, match=r"holds records of categories .* --label-col "  # noqa: B017
                                        r"cats\.NAME \(NAMEs: billing, urgent\)"):
        main(["finetune", str(path), "--text-col", "text", "--label-col", "cats",
              "--model", "no-such-model", "--out", str(tmp_path / "m.skops"), "--debug"])


def test_cli_names_the_classifier_at_the_end_of_a_pipeline_and_reads_json_flags(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from embetter._commands import parse_params
    from embetter.cli import main
    from embetter.grab import ColumnGrabber
    from embetter.text import LiteTextEncoder
    from embetter.utils import save_skops

    texts = [f"the cat likes item {i}" for i in range(10)] + [f"a dog {i}" for i in range(10)]
    import pandas as pd

    frame = pd.DataFrame({"text": texts, "label": [0] * 10 + [1] * 10})
    pipe = make_pipeline(ColumnGrabber("text"), LiteTextEncoder(n_components=2, random_state=0),
                         LogisticRegression()).fit(frame, frame["label"])
    save_skops(pipe, tmp_path / "clf.skops")
    frame.to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(Exception, match=r"last step 'logisticregression' \(LogisticRegression\) "  # noqa: B017
                                        r"has no transform.*pipe\[:-1\]"):
        main(["transform", str(tmp_path / "clf.skops"), str(tmp_path / "in.csv"), "--out",
              str(tmp_path / "x.npy"), "--debug"])
    assert parse_params(["early_stopping=true", "x=None", "act=relu", "dims=[8, 16]"]) == {
        "early_stopping": True, "x": None, "act": "relu", "dims": [8, 16]}


def test_skops_says_which_encoder_holds_a_model_object(tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sklearn.pipeline import make_pipeline

    from embetter.grab import ColumnGrabber
    from embetter.text import SentenceEncoder
    from embetter.utils import save_skops

    model = SentenceTransformer(tiny_model_path, device="cpu")
    pipe = make_pipeline(ColumnGrabber("text"), SentenceEncoder(model))
    with pytest.raises(TypeError, match=r"SentenceEncoder was given a SentenceTransformer "
                                        r"object as name.*model\.save\(folder\)"):
        save_skops(pipe, tmp_path / "p.skops")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_small_messages_name_the_fix():
    import pandas as pd
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from embetter.grab import ColumnGrabber
    from embetter.label import LabellingLoop, suggest

    with pytest.raises(TypeError, match=r"colname must be one column's name .*"
                                        r"ColumnGrabber\('text'\)"):
        ColumnGrabber(["text"]).transform(pd.DataFrame({"text": ["a"]}))
    X = np.arange(8, dtype=float).reshape(4, 2)
    svc = make_pipeline(StandardScaler(), SVC()).fit(X, [0, 0, 1, 1])
    with pytest.raises(TypeError, match=r"a Pipeline ending in SVC.*SVC\(probability=True\)"):
        suggest(svc, X, k=1)
    with pytest.raises(ValueError, match="got None"):
        LabellingLoop(make_pipeline(SVC(probability=True)), X, classes=None)


def test_scalar_labels_of_other_kinds_still_train_and_tuple_columns_still_grab():
    import pandas as pd

    from embetter.external._calls import retry_delay
    from embetter.finetune import FeedForwardTuner
    from embetter.grab import ColumnGrabber

    X = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = np.array([np.bool_(True), np.bool_(False)] * 4, dtype=object)
    assert FeedForwardTuner(n_epochs=1).fit(X, y).transform(X).shape[0] == 8
    frame = pd.DataFrame({("doc", "text"): ["a", "b"], ("doc", "id"): [1, 2]})
    assert ColumnGrabber(("doc", "text")).transform(frame) == ["a", "b"]
    assert 0.3 < retry_delay(0, 0.0) <= 0.5  # Retry-After: 0 asks for no wait: the backoff


def test_difference_classifier_defaults_to_the_bundled_model():
    from sklearn.base import clone

    from embetter.model import DifferenceClassifier
    from embetter.text import SentenceEncoder

    X1 = ["a cat sits", "stocks fell", "I love pizza", "rain is coming"]
    X2 = ["a kitten sits", "markets dropped", "the train is late", "my phone broke"]
    clf = DifferenceClassifier().fit(X1, X2, [1, 1, 0, 0])
    assert clf.enc is None and isinstance(clf.enc_, SentenceEncoder)
    explicit = DifferenceClassifier(SentenceEncoder()).fit(X1, X2, [1, 1, 0, 0])
    np.testing.assert_allclose(clf.predict_proba(X1, X2), explicit.predict_proba(X1, X2))
    assert clone(clf).get_params()["enc"] is None
