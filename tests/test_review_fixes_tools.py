"""Fixes from a review of the command line, the labelling tools, Dask and the plots (session
27): each test failed on the code before its fix."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from embetter.cli import main
from embetter.label import suggest
from tests._cli_helpers import labelled_frame


def test_transform_writes_a_sparse_pipeline_output(tmp_path):
    from embetter.grab import ColumnGrabber
    from embetter.utils import save_skops

    frame = labelled_frame()
    pipe = make_pipeline(ColumnGrabber("text"), TfidfVectorizer()).fit(frame)
    save_skops(pipe, tmp_path / "tfidf.skops")
    frame.to_csv(tmp_path / "small.csv", index=False)
    out = tmp_path / "tf.npy"
    # "setting an array element with a sequence"
    assert main(["transform", str(tmp_path / "tfidf.skops"), str(tmp_path / "small.csv"),
                 "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), pipe.transform(frame).toarray(), rtol=1e-6)


def test_suggest_keeps_a_sparse_pool_sparse_and_picks_as_on_the_dense_one():
    from embetter.label._coverage import coverage_pick
    from embetter.label._strategies import kcenter_greedy
    from embetter.label._suggest import as_space

    frame = labelled_frame(12)
    texts, y = frame["text"].tolist(), frame["label"].to_numpy()
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts[::4], y[::4])
    Z = pipe[:-1].transform(texts)
    assert as_space(Z, "auto").format == "csr"  # densified before: rows x vocabulary
    labelled = np.arange(0, len(texts), 4)
    free = np.setdiff1d(np.arange(len(texts)), labelled)
    sparse = kcenter_greedy(as_space(Z, "auto"), free, labelled, 5, np.random.RandomState(0))
    dense = kcenter_greedy(as_space(Z.toarray(), "auto"), free, labelled, 5,
                           np.random.RandomState(0))
    np.testing.assert_array_equal(sparse, dense)  # the same distances
    covering = coverage_pick(as_space(Z, "auto"), free, labelled, 5, np.random.RandomState(0))
    assert len(set(covering.tolist())) == 5 and np.isin(covering, free).all()
    for strategy in ("auto", "kcenter", "margin"):
        picked = suggest(pipe, texts, k=5, strategy=strategy, random_state=0, labelled=labelled)
        assert len(set(picked.tolist())) == 5 and not np.isin(picked, labelled).any()


def test_suggest_names_a_classifier_of_several_outputs():
    from sklearn.multioutput import MultiOutputClassifier

    X = np.random.default_rng(0).normal(size=(30, 4))
    model = MultiOutputClassifier(LogisticRegression()).fit(X, (X[:, :2] > 0).astype(int))
    with pytest.raises(TypeError, match="gives 2 arrays.*MultiOutputClassifier"):
        suggest(model, X, k=3)  # IndexError: index 2 is out of bounds
    assert len(suggest(model, X, k=3, strategy="kcenter")) == 3  # needs no probabilities


def test_a_dask_series_is_a_series():
    dd = pytest.importorskip("dask.dataframe")
    from embetter.dask import _kind

    texts = pd.Series(["a", "b", "c"], name="text")
    assert _kind(dd.from_pandas(texts, npartitions=1)) == "series"  # "frame" before
    assert _kind(dd.from_pandas(texts.to_frame(), npartitions=1)) == "frame"


def test_demo_data_without_its_columns_names_what_demo_reads(tmp_path, capsys):
    path = tmp_path / "body.csv"
    labelled_frame().rename(columns={"text": "body"}).to_csv(path, index=False)
    assert main(["demo", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    # before: "(name one with --text-col COL)", a flag demo does not have
    assert "reads a CSV with the columns text,label" in err and "--text-col" not in err


def test_demo_on_a_small_file_cross_validates_without_warnings(tmp_path, tiny_model_path,
                                                               capsys):
    rows = ([{"text": f"order {i} never arrived at my house", "label": "shipping"}
             for i in range(2)] +
            [{"text": f"please reset my password number {i}", "label": "account"}
             for i in range(8)])
    pd.DataFrame(rows).to_csv(tmp_path / "d10.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FitFailedWarning tracebacks, three times
        assert main(["demo", "--data", str(tmp_path / "d10.csv"), "--model", tiny_model_path,
                     "--out", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "C=10, too few rows per class to cross-validate it" in out


def test_project_refuses_a_column_of_category_records(tmp_path, tiny_model_path, capsys):
    rows = [{"text": f"text {i}", "cats": {"shipping": i % 2, "returns": 1 - i % 2}}
            for i in range(6)]
    path = tmp_path / "five.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["project", str(path), "--text-col", "text", "--label-col", "cats",
                 "--method", "pca", "--model", tiny_model_path,
                 "--out", str(tmp_path / "map.csv")]) == 2  # wrote dicts as labels before
    assert "--label-col cats.NAME" in capsys.readouterr().err


def test_project_names_the_method_it_ran(tmp_path, tiny_model_path, capsys):
    pytest.importorskip("umap")
    pd.DataFrame({"text": ["a cat", "a dog"]}).to_csv(tmp_path / "two.csv", index=False)
    assert main(["project", str(tmp_path / "two.csv"), "--text-col", "text", "--model",
                 tiny_model_path, "--out", str(tmp_path / "map.csv")]) == 0
    assert "wrote a PCA map of 2 texts" in capsys.readouterr().err  # "a UMAP map" before


def test_a_mistyped_model_path_gets_our_message_offline(monkeypatch):
    from embetter.text import SentenceEncoder, _models

    monkeypatch.setattr(_models, "hub_unreachable", lambda: "no network (test)")
    with pytest.raises(_models.ModelNotFoundError, match="there is no such directory"):
        SentenceEncoder("./no/such/dir").transform(["x"])  # HFValidationError before


def test_the_map_gives_positions_for_a_pool_with_a_shuffled_index():
    pytest.importorskip("anywidget")
    from embetter.label import LabellingMap

    texts = pd.Series(["a", "b", "c", "d"], index=[216, 439, 80, 7])
    widget = LabellingMap(np.eye(4, 2), texts=texts)
    widget.assign("x", [1, 3])
    positions, labels = widget.labelled_rows()
    assert positions.tolist() == [1, 3] and labels.tolist() == ["x", "x"]
    assert widget.labels.dropna().index.tolist() == [439, 7]  # by index, as documented


def test_suggest_on_a_pool_of_few_distinct_rows_says_nothing_of_k_means():
    from embetter.label import LabellingLoop
    from embetter.text import LiteTextEncoder

    texts = [f"refund my order {i}" for i in range(10)] + [f"hello there {i}" for i in range(10)]
    pipe = make_pipeline(LiteTextEncoder(n_components=2, random_state=0), LogisticRegression())
    loop = LabellingLoop(pipe, texts, classes=["hi", "money"], random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Number of distinct clusters (2) found smaller than"
        assert len(set(loop.suggest(8).tolist())) == 8


def test_the_plot_legend_shows_integer_labels_with_gaps_as_integers():
    pytest.importorskip("matplotlib")
    from embetter.plot import projection

    X = np.random.default_rng(0).normal(size=(12, 4))
    fig = projection(X, pd.Series([1, None, 2] * 4))  # a float column: 1.0, NaN, 2.0
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["(unlabelled)", "1", "2"]  # "1.0", "2.0" before


def test_finetune_refuses_a_bad_seed_before_encoding(tmp_path, capsys):
    frame = labelled_frame()
    frame.to_csv(tmp_path / "small.csv", index=False)
    # the model is never loaded: the seed is checked first ("after the encoding" before)
    assert main(["finetune", str(tmp_path / "small.csv"), "--text-col", "text", "--label-col",
                 "label", "--model", "no-such-model-is-loaded", "--seed", "-1",
                 "--out", str(tmp_path / "t.skops")]) == 2
    err = capsys.readouterr().err
    assert "argument --seed: must be from 0" in err and "no-such-model" not in err


def test_distilling_the_static_model_prints_no_bars_unless_asked(tiny_model_path, capfd):
    from embetter.text import _distill

    _distill.distill(tiny_model_path, pca_dims=8)
    # "Loading weights", a pad_token note and "Encoding tokens" before
    assert capfd.readouterr().err == ""
    _distill.distill(tiny_model_path, pca_dims=8, show_progress_bar=True)
    assert "Encoding tokens" in capfd.readouterr().err


def test_kcenter_needs_no_probabilities_from_a_multi_output_classifier():
    from sklearn.multioutput import MultiOutputClassifier

    X = np.random.default_rng(0).normal(size=(30, 4))
    Y = np.stack([(X[:, 0] > 0).astype(int), np.digitize(X[:, 1], [-0.5, 0.5])], axis=1)
    model = MultiOutputClassifier(LogisticRegression()).fit(X, Y)  # 2 and 3 classes
    assert len(suggest(model, X, k=3, strategy="kcenter")) == 3  # the error's own advice
