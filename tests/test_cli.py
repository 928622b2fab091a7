"""The `embetter` command line, end to end through subprocesses on small files.

Every run uses the tiny locally built model (`--model <path>`), so nothing is downloaded and
the torch work is small; the error paths fail before torch is even imported.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from embetter._files import atomic_path
from embetter.cli import main
from tests._cli_helpers import assert_one_line_error, labelled_frame, run, write_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("cli"))


# -- help ----------------------------------------------------------------------------------------
def test_console_script_and_module_show_help(tmp_path):
    script = Path(sys.executable).with_name("embetter")
    assert script.exists() or shutil.which("embetter")
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("demo", "embed", "finetune", "transform", "project"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["demo", "embed", "finetune", "transform", "project"])
def test_every_command_has_help_with_examples(command, capsys):
    assert main([command, "--help"]) == 0  # main returns the exit code, --help too
    out = capsys.readouterr().out
    assert "examples:" in out and f"embetter {command}" in out


# -- embed ---------------------------------------------------------------------------------------
def test_embed_csv_to_npy_and_jsonl_to_parquet(files, tiny_model_path):
    from embetter.text import SentenceEncoder

    expected = SentenceEncoder(tiny_model_path).transform(
        ["a dog fixes old cars", "the market hates pizza", "42"]
    )
    result = run("embed", "fresh.csv", "--text-col", "message", "--model", tiny_model_path,
                 "--out", "out/fresh.npy", cwd=files)
    assert result.returncode == 0, result.stderr
    assert "wrote 3 embeddings of dimension 32" in result.stderr
    X = np.load(files / "out" / "fresh.npy")
    assert X.dtype == np.float32
    np.testing.assert_allclose(X, expected, atol=1e-5)  # "42" stayed a text, not a number

    # the same code path in-process (a subprocess costs a torch import)
    assert main(["embed", str(files / "fresh.jsonl"), "--text-col", "message", "--model",
                 tiny_model_path, "--out", str(files / "fresh.parquet")]) == 0
    back = pd.read_parquet(files / "fresh.parquet")
    assert list(back["message"]) == ["a dog fixes old cars", "the market hates pizza", "42"]
    np.testing.assert_allclose(np.vstack(back["embedding"]), expected, atol=1e-5)


# -- finetune -> transform -----------------------------------------------------------------------
def test_finetune_then_transform_round_trip(files, tiny_model_path):
    result = run("finetune", "train.csv", "--text-col", "text", "--label-col", "label",
                 "--tuner", "feedforward", "--model", tiny_model_path, "--seed", "1",
                 "-p", "hidden_dim=7", "--out", "models/ff.joblib", cwd=files)
    assert result.returncode == 0, result.stderr
    assert "saved the fitted pipeline" in result.stderr
    pipe = joblib.load(files / "models" / "ff.joblib")
    assert [name for name, _ in pipe.steps] == [
        "columngrabber", "sentenceencoder", "feedforwardtuner"
    ]
    assert pipe[-1].get_params()["hidden_dim"] == 7
    assert pipe[-1].get_params()["random_state"] == 1

    # the pipeline remembers its text column; --text-col points it at another one
    result = run("transform", "models/ff.joblib", "train.csv", "--out", "train.npy", cwd=files)
    assert result.returncode == 0, result.stderr
    train_texts = pd.read_csv(files / "train.csv")["text"].tolist()
    np.testing.assert_allclose(np.load(files / "train.npy"), pipe[1:].transform(train_texts),
                               atol=1e-5)
    assert main(["transform", str(files / "models" / "ff.joblib"), str(files / "fresh.jsonl"),
                 "--text-col", "message", "--out", str(files / "fresh_tuned.npy")]) == 0
    X = np.load(files / "fresh_tuned.npy")
    assert X.shape == (3, 7)
    np.testing.assert_allclose(
        X, pipe[1:].transform(["a dog fixes old cars", "the market hates pizza", "42"]),
        atol=1e-5,
    )


def test_finetune_contrastive_in_process_and_partial_labels(files, tiny_model_path, tmp_path,
                                                           capsys):
    # cats.NAME trains on the JSONL records that carry the label NAME (partial labels)
    records = [{"text": t, "cats": ({"flies": int(lab == "flies")} if i % 3 else {})}
               for i, (t, lab) in enumerate(labelled_frame().itertuples(index=False))]
    path = tmp_path / "inbox.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "c.joblib"
    assert main(["finetune", str(path), "--text-col", "text", "--label-col", "cats.flies",
                 "--tuner", "contrastive", "--model", tiny_model_path, "--out", str(out)]) == 0
    n_out = sum(1 for r in records if not r["cats"])  # not read as label 0
    assert f"{n_out} row(s) without a label left out" in capsys.readouterr().err
    pipe = joblib.load(out)
    assert type(pipe[-1]).__name__ == "ContrastiveTuner"
    assert pipe[-1].n_features_in_ == 32
    X = pipe.transform(pd.DataFrame({"text": ["a dog likes pizza"]}))
    assert X.shape[0] == 1 and np.isfinite(X).all()


def test_labels_stay_as_written_and_unlabelled_records_are_skipped(files, tiny_model_path,
                                                                   tmp_path, capsys):
    df = labelled_frame()
    df["label"] = np.where(df["label"] == "flies", "007", "7")  # two classes, not one
    df.to_csv(tmp_path / "codes.csv", index=False)
    out = tmp_path / "codes.joblib"
    assert main(["finetune", str(tmp_path / "codes.csv"), "--text-col", "text", "--label-col",
                 "label", "--model", tiny_model_path, "--out", str(out)]) == 0
    assert sorted(joblib.load(out)[-1].classes_) == ["007", "7"]
    df.rename(columns={"label": "label.v2"}).to_csv(tmp_path / "dotted.csv", index=False)
    assert main(["finetune", str(tmp_path / "dotted.csv"), "--text-col", "text",
                 "--label-col", "label.v2", "--model", tiny_model_path, "--out", str(out)]) == 0
    assert sorted(joblib.load(out)[-1].classes_) == ["007", "7"]  # a dot in the name too
    # a record never labelled has no `cats` at all: it is skipped, not an error
    records = [{"text": t} if i % 4 == 0 else {"text": t, "cats": {"flies": int(lab == "flies")}}
               for i, (t, lab) in enumerate(labelled_frame().itertuples(index=False))]
    path = tmp_path / "partial.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    capsys.readouterr()
    assert main(["finetune", str(path), "--text-col", "text", "--label-col", "cats.flies",
                 "--model", tiny_model_path, "--out", str(tmp_path / "p.joblib")]) == 0
    n_out = sum(1 for r in records if "cats" not in r)
    assert f"{n_out} row(s) without a label left out" in capsys.readouterr().err
    tuned = joblib.load(tmp_path / "p.joblib")[-1]
    assert sorted(tuned.classes_) == [0, 1]


def test_main_in_process_leaves_the_progress_bars_as_they_were(files, tiny_model_path,
                                                               tmp_path):
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    before = (are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled())
    assert main(["embed", str(files / "train.csv"), "--text-col", "text", "--model",
                 tiny_model_path, "--out", str(tmp_path / "x.npy")]) == 0
    assert (are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()) == before


def test_transform_with_a_passthrough_step(files, tiny_model_path, tmp_path):
    from sklearn.pipeline import Pipeline

    from embetter.grab import ColumnGrabber
    from embetter.text import SentenceEncoder

    pipe = Pipeline([("grab", ColumnGrabber("text")), ("enc", SentenceEncoder(tiny_model_path)),
                     ("id", "passthrough")])
    joblib.dump(pipe, tmp_path / "pt.joblib")
    assert main(["transform", str(tmp_path / "pt.joblib"), str(files / "train.csv"), "--out",
                 str(tmp_path / "pt.npy")]) == 0
    assert np.load(tmp_path / "pt.npy").shape[1] == 32


def test_finetune_sbert_saves_grabber_and_tuned_model(files, tiny_model_path, tmp_path):
    out = tmp_path / "sbert.joblib"
    assert main(["finetune", str(files / "train.csv"), "--text-col", "text", "--label-col",
                 "label", "--tuner", "sbert", "--model", tiny_model_path, "-p", "n_neg=1",
                 "--out", str(out)]) == 0
    pipe = joblib.load(out)
    assert [name for name, _ in pipe.steps] == ["columngrabber", "sberttuner"]
    X = pipe.transform(pd.DataFrame({"text": ["a dog likes pizza", "the market moves"]}))
    assert X.shape == (2, 32) and np.isfinite(X).all()


# -- error paths: one line on stderr, exit code 2, no traceback ----------------------------------
@pytest.fixture(scope="module")
def bad_files(files):
    (files / "empty.csv").write_text("")
    (files / "header.csv").write_text("text,label\n")
    (files / "broken.csv").write_text('text,label\n"never closed,1\n')
    (files / "broken.jsonl").write_text('{"text": "ok"}\n{not json\n')
    (files / "holes.csv").write_text("text,label\nfine,a\n,b\nalso fine,a\n")
    (files / "one_class.csv").write_text("text,label\nhello,a\nthere,a\n")
    (files / "notes.txt").write_text("text\nhello\n")
    (files / "not_a_pipeline.joblib").write_text("this is not a pickle")
    (files / "not_a_pipeline.skops").write_text("this is not a zip file")
    for folder in ("taken.npy", "taken.skops", "taken.csv"):
        (files / folder).mkdir(exist_ok=True)
    (files / "a_file").write_text("not a folder")
    (files / "few.csv").write_text("text,label\n" + "".join(
        f"text {i},{'a' if i < 8 else 'b'}\n" for i in range(9)))
    (files / "tiny.csv").write_text("text,label\n" + "".join(
        f"text {i},{'ab'[i % 2]}\n" for i in range(6)))
    return files


ERROR_CASES = {
    "missing file": (["embed", "nope.csv", "--text-col", "text", "--out", "x.npy"],
                     ["nope.csv", "no such file"]),
    "missing column": (["embed", "train.csv", "--text-col", "body", "--out", "x.npy"],
                       ["no text column 'body'", "text, label"]),
    "empty file": (["embed", "empty.csv", "--text-col", "text", "--out", "x.npy"],
                   ["empty"]),
    "no rows": (["embed", "header.csv", "--text-col", "text", "--out", "x.npy"],
                ["no rows"]),
    "malformed csv": (["embed", "broken.csv", "--text-col", "text", "--out", "x.npy"],
                      ["could not read it as csv"]),
    "malformed jsonl": (["embed", "broken.jsonl", "--text-col", "text", "--out", "x.npy"],
                        ["could not read it as jsonl"]),
    "empty texts": (["embed", "holes.csv", "--text-col", "text", "--out", "x.npy"],
                    ["is empty in 1 row", "data rows 2"]),
    "input format": (["embed", "notes.txt", "--text-col", "text", "--out", "x.npy"],
                     ["unsupported input format '.txt'"]),
    "output format": (["embed", "train.csv", "--text-col", "text", "--out", "x.csv"],
                      ["unsupported output format '.csv'"]),
    "missing label column": (["finetune", "train.csv", "--text-col", "text", "--label-col",
                              "y", "--out", "p.joblib"], ["no label column 'y'"]),
    "single class": (["finetune", "one_class.csv", "--text-col", "text", "--label-col",
                      "label", "--out", "p.joblib"], ["single class"]),
    "bad param": (["finetune", "train.csv", "--text-col", "text", "--label-col", "label",
                   "-p", "hidden_dim", "--out", "p.joblib"], ["NAME=VALUE"]),
    "missing pipeline": (["transform", "nope.joblib", "train.csv", "--out", "x.npy"],
                         ["nope.joblib", "no such file"]),
    "not a pipeline": (["transform", "not_a_pipeline.joblib", "train.csv", "--out", "x.npy"],
                       ["could not load a saved pipeline"]),
    "not a skops file": (["transform", "not_a_pipeline.skops", "train.csv", "--out", "x.npy"],
                         ["could not load a saved pipeline"]),
    "pipeline format": (["finetune", "train.csv", "--text-col", "text", "--label-col", "label",
                         "--out", "p.bin"], ["unsupported pipeline format '.bin'"]),
    "project map format": (["project", "train.csv", "--text-col", "text", "--out", "x.npy"],
                           ["unsupported map format '.npy'", ".csv"]),
    "project text column": (["project", "train.csv", "--text-col", "body", "--out", "x.csv"],
                            ["no text column 'body'"]),
    "project label column": (["project", "train.csv", "--text-col", "text", "--label-col",
                              "tag", "--out", "x.csv"], ["no label column 'tag'", "text, label"]),
    "project without text column": (["project", "train.csv", "--out", "x.csv"],
                                    ["--text-col is required"]),
    "project missing pipeline": (["project", "train.csv", "--pipeline", "nope.skops",
                                  "--out", "x.csv"], ["nope.skops", "no such file"]),
    "out is a folder (embed)": (["embed", "train.csv", "--text-col", "text", "--out",
                                 "taken.npy"], ["taken.npy: is a directory"]),
    "out is a folder (finetune)": (["finetune", "train.csv", "--text-col", "text",
                                    "--label-col", "label", "--out", "taken.skops"],
                                   ["taken.skops: is a directory"]),
    "out is a folder (project)": (["project", "train.csv", "--text-col", "text", "--out",
                                   "taken.csv"], ["taken.csv: is a directory"]),
    "bad param value": (["finetune", "train.csv", "--text-col", "text", "--label-col",
                         "label", "-p", "hidden_dim=-1", "--out", "p.joblib"],
                        ["'hidden_dim' parameter of FeedForwardTuner"]),
    "demo out is a file": (["demo", "--data", "train.csv", "--out", "a_file"],
                           ["a_file: is a file"]),
    "demo class too small": (["demo", "--data", "few.csv", "--out", "plots"],
                             ["class 'b' has 1 row(s)", "at least 2 per class"]),
    "demo data too small": (["demo", "--data", "tiny.csv", "--out", "plots"],
                            ["every class has fewer than 6 rows"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_gives_one_line_and_exit_code_2(case, bad_files):
    args, needles = ERROR_CASES[case]
    assert_one_line_error(run(*args, cwd=bad_files), *needles)
    for name in ("x.npy", "x.csv", "p.joblib", "p.bin"):
        assert not (bad_files / name).exists()


def test_missing_column_in_transform_input(bad_files, tiny_model_path, tmp_path):
    pipe = tmp_path / "p.skops"
    assert main(["finetune", str(bad_files / "train.csv"), "--text-col", "text", "--label-col",
                 "label", "--model", tiny_model_path, "--out", str(pipe)]) == 0
    result = run("transform", pipe, "fresh.csv", "--out", "x.npy", cwd=bad_files)
    assert_one_line_error(result, "no text column 'text'", "message")


def test_a_failed_run_leaves_the_previous_output_alone(bad_files):
    previous = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(bad_files / "keep.npy", previous)
    result = run("embed", "holes.csv", "--text-col", "text", "--out", "keep.npy", cwd=bad_files)
    assert result.returncode == 2
    np.testing.assert_array_equal(np.load(bad_files / "keep.npy"), previous)
    assert not [p for p in os.listdir(bad_files) if p.endswith(".tmp")]


def test_atomic_path_replaces_in_one_step_or_not_at_all(tmp_path):
    target = tmp_path / "deep" / "out.bin"
    with atomic_path(target) as tmp:
        Path(tmp).write_bytes(b"first")
        assert not target.exists()  # nothing visible until the write is complete
    assert target.read_bytes() == b"first"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"first"
    assert os.listdir(target.parent) == ["out.bin"]


# -- demo ----------------------------------------------------------------------------------------
def test_demo_runs_end_to_end_on_a_small_csv(tiny_model_path, tmp_path):
    labelled_frame(n_per_subject=8).to_csv(tmp_path / "small.csv", index=False)
    result = run("demo", "--data", "small.csv", "--model", tiny_model_path, "--out", "plots",
                 "--seed", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for row in ("raw st", "FeedForwardTuner", "ContrastiveTuner", "LogReg", "5-NN"):
        assert row in out, out
    for name in ("raw", "feedforward", "contrastive"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert str(Path("plots") / f"{name}.png") in out


@pytest.mark.parametrize("sizes", [(20, 8, 1), (20, 8, 2), (4, 1), (8, 1, 1), (3, 3, 3)])
def test_demo_scores_a_rare_class_without_scikit_learn_warnings(sizes):
    # a user's CSV may hold a class with fewer rows than the 3 folds that choose C; shuffled
    # plain folds held a single class on small data: FitFailedWarning tracebacks, and every C
    # scored NaN (the first taken)
    import warnings

    from embetter._demo import FIXED_C, _scores, cv_folds

    rng = np.random.default_rng(0)
    y = np.repeat(np.array(list("abc"))[:len(sizes)], sizes)
    X = rng.normal(size=(len(y), 4))
    X[y == "b"] += 2
    folds = cv_folds(y)
    if sizes == (4, 1):  # two classes, one of a single row: nothing to stratify
        assert folds is None and f"C={FIXED_C}"
    else:
        for train, _ in folds:
            assert np.unique(y[train]).size >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lr, knn = _scores(X, y, X, y, folds)
    assert 0.5 < lr <= 1 and 0.4 < knn <= 1


def test_demo_refuses_too_few_rows_up_front_and_runs_without_plots(tiny_model_path, tmp_path,
                                                                     capsys):
    """Eight rows pass the per-class checks but leave 4 to train a 5-NN on: refused before
    any encoding, not at the scoring; out_dir=None (Python only) runs without plots."""
    from embetter._demo import run_demo
    from embetter._files import UsageError

    pd.DataFrame({"text": [f"text number {i}" for i in range(8)],
                  "label": list("aaaaaabb")}).to_csv(tmp_path / "tiny.csv", index=False)
    with pytest.raises(UsageError, match="needs at least 5"):
        run_demo(out_dir=None, data=tmp_path / "tiny.csv", model=tiny_model_path)
    assert "encoding" not in capsys.readouterr().out
    labelled_frame(n_per_subject=8).to_csv(tmp_path / "small.csv", index=False)
    assert run_demo(out_dir=None, data=tmp_path / "small.csv", model=tiny_model_path) == 0
    assert "plots" not in capsys.readouterr().out.split("held-out")[1]


def test_demo_with_a_missing_dataset_says_what_to_do(tmp_path):
    assert_one_line_error(run("demo", "--data", "nope.csv", cwd=tmp_path), "nope.csv")


def test_the_demo_reads_a_csv_like_the_bundled_dataset(tmp_path):
    from embetter._demo import load_dataset
    from embetter.datasets import load_support_inbox

    load_support_inbox(as_frame=True).to_csv(tmp_path / "inbox.csv", index=False)
    texts, labels = load_dataset(tmp_path / "inbox.csv")
    bundled_texts, bundled_labels = load_support_inbox()
    assert texts == bundled_texts and labels.tolist() == bundled_labels.tolist()
