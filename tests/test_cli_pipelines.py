"""The command line with saved pipelines: skops files (trusted types, the joblib note) and
`embetter project` maps, through `main` in process and through subprocesses."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from embetter.cli import main
from tests._cli_helpers import assert_one_line_error, run, write_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("cli"))

# -- skops pipelines -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def skops_pipeline(files, tiny_model_path):
    out = files / "models" / "ff.skops"
    assert main(["finetune", str(files / "train.csv"), "--text-col", "text", "--label-col",
                 "label", "--model", tiny_model_path, "--seed", "2", "--out", str(out)]) == 0
    return out


def test_finetune_saves_skops_that_transform_loads_without_a_note(files, skops_pipeline):
    from embetter.utils import load_skops

    pipe = load_skops(skops_pipeline)
    assert [name for name, _ in pipe.steps] == [
        "columngrabber", "sentenceencoder", "feedforwardtuner"
    ]
    result = run("transform", skops_pipeline, "train.csv", "--out", "skops.npy", cwd=files)
    assert result.returncode == 0, result.stderr
    assert "joblib" not in result.stderr and "note" not in result.stderr
    texts = pd.read_csv(files / "train.csv")["text"].tolist()
    np.testing.assert_allclose(np.load(files / "skops.npy"), pipe[1:].transform(texts),
                               atol=1e-5)


def test_joblib_pipelines_still_load_with_a_note_said_once(files, tiny_model_path, tmp_path,
                                                           capsys, monkeypatch):
    import embetter._pipelines

    out = tmp_path / "p.joblib"
    assert main(["finetune", str(files / "train.csv"), "--text-col", "text", "--label-col",
                 "label", "--model", tiny_model_path, "--out", str(out)]) == 0
    monkeypatch.setattr(embetter._pipelines, "_warned_joblib", False)
    capsys.readouterr()
    for name in ("a.npy", "b.npy"):
        assert main(["transform", str(out), str(files / "train.csv"),
                     "--out", str(tmp_path / name)]) == 0
    err = capsys.readouterr().err
    assert err.count("joblib (pickle) file; loading one can run any code") == 1, err
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_untrusted_types_are_refused_by_name_unless_trust(files, tiny_model_path, tmp_path):
    import operator

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from embetter.grab import ColumnGrabber
    from embetter.text import SentenceEncoder
    from embetter.utils import save_skops

    pipe = make_pipeline(ColumnGrabber("message"), SentenceEncoder(tiny_model_path),
                         FunctionTransformer(operator.neg))
    save_skops(pipe, tmp_path / "neg.skops")
    result = run("transform", tmp_path / "neg.skops", "fresh.csv", "--out", tmp_path / "n.npy",
                 cwd=files)
    assert_one_line_error(result, "not trusted: _operator.neg", "--trust")
    assert not (tmp_path / "n.npy").exists()
    assert main(["transform", str(tmp_path / "neg.skops"), str(files / "fresh.csv"), "--trust",
                 "--out", str(tmp_path / "n.npy")]) == 0
    texts = pd.read_csv(files / "fresh.csv", dtype=str)["message"].tolist()
    np.testing.assert_allclose(np.load(tmp_path / "n.npy"), pipe[1:].transform(texts), atol=1e-5)


# -- project -------------------------------------------------------------------------------------
def test_project_with_a_pipeline_writes_text_x_y_label(files, skops_pipeline, tmp_path):
    from embetter.plot import project
    from embetter.utils import load_skops

    # labels are kept as written ("007" stays a text) and unlabelled rows stay empty
    df = pd.read_csv(files / "train.csv")
    df["tag"] = ["007" if i % 2 else "" for i in range(len(df))]
    df.to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "maps" / "map.csv"
    assert main(["project", str(tmp_path / "in.csv"), "--pipeline", str(skops_pipeline),
                 "--label-col", "tag", "--method", "pca", "--out", str(out)]) == 0
    back = pd.read_csv(out, dtype={"label": str}, keep_default_na=False)
    assert list(back.columns) == ["text", "x", "y", "label"]
    assert back["text"].tolist() == df["text"].tolist()
    assert back["label"].tolist() == df["tag"].tolist()
    expected = project(load_skops(skops_pipeline).transform(df), method="pca")
    np.testing.assert_allclose(back[["x", "y"]].to_numpy(), expected, atol=1e-4)
    assert [p.name for p in out.parent.iterdir()] == ["map.csv"]  # atomic: no temp left


def test_project_encodes_and_falls_back_to_pca_saying_so_once(files, tiny_model_path, tmp_path,
                                                              capsys, monkeypatch):
    import embetter.plot
    from embetter.plot import project
    from embetter.text import SentenceEncoder

    monkeypatch.setitem(sys.modules, "umap", None)  # as without the umap extra
    monkeypatch.setattr(embetter.plot, "_said_no_umap", False)
    out = tmp_path / "map.csv"
    assert main(["project", str(files / "fresh.csv"), "--text-col", "message",
                 "--model", tiny_model_path, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("umap-learn is not installed") == 1 and "embetter[umap]" in err, err
    assert "wrote a PCA map of 3 texts" in err
    back = pd.read_csv(out, dtype={"text": str})
    assert list(back.columns) == ["text", "x", "y"]
    assert back["text"].tolist() == ["a dog fixes old cars", "the market hates pizza", "42"]
    X = SentenceEncoder(tiny_model_path).transform(back["text"].tolist())
    np.testing.assert_allclose(back[["x", "y"]].to_numpy(), project(X, "pca"), atol=1e-4)


def test_project_with_umap_from_the_command_line(files, tiny_model_path):
    pytest.importorskip("umap", reason="umap-learn is the umap extra (in dev)")
    result = run("project", "train.csv", "--text-col", "text", "--label-col", "label",
                 "--model", tiny_model_path, "--out", "umap.csv", cwd=files)
    assert result.returncode == 0, result.stderr
    assert "wrote a UMAP map of" in result.stderr and "note" not in result.stderr
    back = pd.read_csv(files / "umap.csv")
    assert list(back.columns) == ["text", "x", "y", "label"] and len(back) == 42
    assert np.isfinite(back[["x", "y"]].to_numpy()).all() and back["x"].std() > 0


def test_project_refuses_a_model_beside_a_pipeline(files, skops_pipeline, tmp_path, capsys):
    # --model was taken and ignored: the map came from the pipeline's model without a word
    out = tmp_path / "map.csv"
    assert main(["project", str(files / "train.csv"), "--pipeline", str(skops_pipeline),
                 "--model", "no-such-model", "--method", "pca", "--out", str(out)]) == 2
    assert "--model and --pipeline cannot be combined" in capsys.readouterr().err
    assert not out.exists()
