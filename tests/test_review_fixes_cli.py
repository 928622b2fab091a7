"""Fixes from a review of the command line and its files: each test failed on the code before
its fix."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from embetter.cli import main
from tests._cli_helpers import labelled_frame

needs_pyarrow = pytest.mark.skipif(
    __import__("importlib").util.find_spec("pyarrow") is None,
    reason="the .parquet outputs need pyarrow (in dev)")


@pytest.fixture
def encode(tiny_model_path):
    from embetter.text import SentenceEncoder

    return SentenceEncoder(tiny_model_path).transform


def test_a_csv_with_trailing_commas_embeds_its_text_column(tmp_path, tiny_model_path, encode):
    path = tmp_path / "trail.csv"
    path.write_text("text,label\nthe cat likes pizza,a,\nmy dog hates rain,b,\n")
    out = tmp_path / "out.npy"
    assert main(["embed", str(path), "--text-col", "text", "--model", tiny_model_path,
                 "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), encode(["the cat likes pizza",
                                                     "my dog hates rain"]), atol=1e-5)


@needs_pyarrow
def test_parquet_output_keeps_csv_cells_as_written_and_a_named_index(tmp_path, tiny_model_path):
    path = tmp_path / "ids.csv"
    path.write_text("id,text,zip\n00123,hello,01234\n00124,world,1e5\n")
    out = tmp_path / "ids.parquet"
    assert main(["embed", str(path), "--text-col", "text", "--model", tiny_model_path,
                 "--out", str(out)]) == 0
    back = pd.read_parquet(out)
    assert back["id"].tolist() == ["00123", "00124"] and back["zip"].tolist() == ["01234", "1e5"]
    frame = pd.DataFrame({"text": ["a cat", "a dog"]},
                         index=pd.Index(["id7", "id3"], name="doc_id"))
    frame.to_parquet(tmp_path / "idx.parquet")
    assert main(["embed", str(tmp_path / "idx.parquet"), "--text-col", "text", "--model",
                 tiny_model_path, "--out", str(tmp_path / "idx_out.parquet")]) == 0
    assert pd.read_parquet(tmp_path / "idx_out.parquet")["doc_id"].tolist() == ["id7", "id3"]


@needs_pyarrow
def test_parquet_output_problems_are_said_before_any_work(tmp_path, tiny_model_path, capsys):
    (tmp_path / "emb.csv").write_text("text,embedding\nhello,keep me\n")
    rows = [{"text": "hello", "id": 1}, {"text": "world", "id": "a"}]
    (tmp_path / "mixed.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    for name, needle in (("emb.csv", "already has a column 'embedding'"),
                         ("mixed.jsonl", "cannot be stored in Parquet")):
        assert main(["embed", str(tmp_path / name), "--text-col", "text", "--model",
                     "no-such-model-is-loaded", "--out", str(tmp_path / "o.parquet")]) == 2
        assert needle in capsys.readouterr().err


def test_jsonl_is_read_exactly(tmp_path, tiny_model_path):
    from embetter._files import read_table

    path = tmp_path / "f.jsonl"
    value = 0.048592769656281266
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"1": "hello", "x": value}).encode() + b"\n")
    df = read_table(path)  # a BOM, a key that looks like a number, a float's last digits
    assert list(df.columns) == ["1", "x"] and df["x"][0] == value


def test_out_in_a_folder_that_is_a_file_is_refused_before_the_work(tmp_path, tiny_model_path,
                                                                  capsys):
    (tmp_path / "a_file").write_text("x")
    labelled_frame().to_csv(tmp_path / "train.csv", index=False)
    assert main(["finetune", str(tmp_path / "train.csv"), "--text-col", "text", "--label-col",
                 "label", "--model", tiny_model_path,
                 "--out", str(tmp_path / "a_file" / "x.skops")]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "fitting" not in err


def test_finetune_leaves_unlabelled_rows_out(tmp_path, tiny_model_path, capsys):
    frame = labelled_frame()
    frame.loc[::3, "label"] = ""
    frame.loc[0, "text"] = ""  # an unlabelled row's text is not read either
    frame.to_csv(tmp_path / "half.csv", index=False)
    assert main(["finetune", str(tmp_path / "half.csv"), "--text-col", "text", "--label-col",
                 "label", "--model", tiny_model_path, "--out", str(tmp_path / "h.skops")]) == 0
    err = capsys.readouterr().err
    n_out = len(frame.loc[::3])
    assert f"{n_out} row(s) without a label left out" in err
    assert f"on {len(frame) - n_out} labelled texts" in err


def test_debug_after_the_command_is_accepted(tmp_path):
    from embetter._files import UsageError

    with pytest.raises(UsageError, match="no such file"):  # --debug: the error itself
        main(["embed", str(tmp_path / "missing.csv"), "--text-col", "text",
              "--out", str(tmp_path / "o.npy"), "--debug"])  # "unrecognized arguments" before


# -- a review of the command line's files and plots (session 29) --------------------------------
def test_an_unquoted_comma_in_the_first_data_row_is_an_error_not_a_shifted_row(
        tmp_path, tiny_model_path, capsys):
    # pandas cut the first row's extra field and only warned: text "hello", label " red cat"
    path = tmp_path / "comma.csv"
    path.write_text("text,label\nhello, red cat thing,a\nblue dog thing,b\n")
    assert main(["embed", str(path), "--text-col", "text", "--model", tiny_model_path,
                 "--out", str(tmp_path / "x.npy")]) == 2
    assert "line 2 has more fields than the header" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("command", ["finetune", "demo"])
def test_an_empty_text_is_named_by_its_row_in_the_file_after_unlabelled_rows(
        tmp_path, tiny_model_path, capsys, command):
    path = tmp_path / "rows.csv"
    path.write_text("text,label\nfirst text,\nsecond text,\nthird text,a\n,b\nfifth text,a\n")
    if command == "finetune":
        argv = ["finetune", str(path), "--text-col", "text", "--label-col", "label",
                "--model", tiny_model_path, "--out", str(tmp_path / "f.skops")]
    else:
        argv = ["demo", "--data", str(path), "--model", tiny_model_path,
                "--out", str(tmp_path / "plots")]
    assert main(argv) == 2
    assert "(data rows 4)" in capsys.readouterr().err


def test_demo_refuses_an_out_folder_inside_a_file_before_the_work(tmp_path, tiny_model_path,
                                                                  capsys):
    (tmp_path / "small.csv").write_text("x")
    path = tmp_path / "data.csv"
    labelled_frame().to_csv(path, index=False)
    assert main(["demo", "--data", str(path), "--model", tiny_model_path,
                 "--out", str(tmp_path / "small.csv" / "plots")]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "accuracy" not in err.lower()


@needs_pyarrow
def test_a_parquet_index_named_embedding_is_refused_before_the_work(tmp_path, tiny_model_path,
                                                                    capsys):
    source = tmp_path / "idx.parquet"
    frame = pd.DataFrame({"text": ["a cat", "a dog"]},
                         index=pd.Index(["id0", "id1"], name="embedding"))
    frame.to_parquet(source)
    assert main(["embed", str(source), "--text-col", "text", "--model", tiny_model_path,
                 "--out", str(tmp_path / "e.parquet")]) == 2
    assert "already has a column 'embedding'" in capsys.readouterr().err


@pytest.mark.parametrize("method, rows, columns", [("tsne", 30, 1), ("umap", 2, 4)])
def test_a_map_names_the_projection_that_ran(method, rows, columns):
    from embetter.plot import projection

    X = np.random.default_rng(0).normal(size=(rows, columns))
    fig = projection(X, ["a", "b"] * (rows // 2), method=method)
    assert fig.axes[0].get_xlabel() == "PC1"


def test_trailing_commas_are_read_and_a_later_extra_field_is_named_by_its_line(
        tmp_path, tiny_model_path, capsys):
    from embetter._files import UsageError, read_table

    ok = tmp_path / "ok.csv"
    ok.write_text("text,label\nhello,pos,,\nbye,neg, \n")
    assert read_table(ok).values.tolist() == [["hello", "pos"], ["bye", "neg"]]
    # on a later line only (pandas' error there: it was refused with an unquoted-comma hint)
    later = tmp_path / "later.csv"
    later.write_text("text,label\nhello,pos\nbye,neg,\n")
    assert read_table(later).values.tolist() == [["hello", "pos"], ["bye", "neg"]]
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,pos,\nbye, see you,neg\n")
    with pytest.raises(UsageError, match="line 3 has more fields than the header"):
        read_table(bad)


@needs_pyarrow
def test_a_parquet_inputs_unnamed_ids_stay_with_their_rows(tmp_path, tiny_model_path):
    """An unnamed index other than 0, 1, 2, ... (string ids, a filtered frame's positions)
    was dropped from a .parquet output: its rows could not be joined back."""
    for index in (["u1", "u2", "u3"], [10, 20, 30]):
        source = tmp_path / "ids.parquet"
        pd.DataFrame({"text": ["a cat", "a dog", "a bird"]}, index=index).to_parquet(source)
        out = tmp_path / "ids_out.parquet"
        assert main(["embed", str(source), "--text-col", "text", "--model", tiny_model_path,
                     "--out", str(out)]) == 0
        back = pd.read_parquet(out)
        assert back["index"].tolist() == index and back["text"].tolist()[0] == "a cat"
    plain = tmp_path / "plain.parquet"
    pd.DataFrame({"text": ["a cat", "a dog"]}).to_parquet(plain)
    assert main(["embed", str(plain), "--text-col", "text", "--model", tiny_model_path,
                 "--out", str(tmp_path / "plain_out.parquet")]) == 0
    assert list(pd.read_parquet(tmp_path / "plain_out.parquet").columns) == ["text", "embedding"]


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path, capsys):
    # pandas renamed the second 'text' to 'text.1' and the first one was embedded, silently
    path = tmp_path / "dup.csv"
    path.write_text("text,text,label\nfirst a,second a,x\nfirst b,second b,y\n")
    assert main(["embed", str(path), "--text-col", "text", "--model", "no-such-model",
                 "--out", str(tmp_path / "o.npy")]) == 2
    assert "names the column(s) 'text' more than once" in capsys.readouterr().err


@needs_pyarrow
def test_an_index_named_as_a_column_is_said_with_the_file():
    from embetter._files import UsageError, check_parquet_rows

    frame = pd.DataFrame({"id": [1, 2], "text": ["a", "b"]}, index=pd.Index([5, 6], name="id"))
    with pytest.raises(UsageError, match="in.parquet: its columns cannot be stored in Parquet"):
        check_parquet_rows(frame, "in.parquet", "out.parquet")


def test_demo_piped_into_a_reader_that_stops_still_writes_its_plots(tiny_model_path, tmp_path):
    # `embetter demo | head` exited 0 at the first line the reader no longer took, before
    # any plot was written
    import os
    import subprocess
    import sys

    labelled_frame(n_per_subject=8).to_csv(tmp_path / "small.csv", index=False)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    demo = subprocess.Popen(
        [sys.executable, "-m", "embetter", "demo", "--data", "small.csv", "--model",
         tiny_model_path, "--out", "plots"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    demo.stdout.readline()
    demo.stdout.close()  # the reader stops, as `| head -1` does
    assert demo.wait(timeout=600) == 0
    for name in ("raw", "feedforward", "contrastive"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_a_folder_given_as_the_pipeline_is_named_a_directory(tmp_path, capsys):
    (tmp_path / "d.skops").mkdir()
    (tmp_path / "in.csv").write_text("text\nhello\n")
    assert main(["transform", str(tmp_path / "d.skops"), str(tmp_path / "in.csv"),
                 "--out", str(tmp_path / "t.npy")]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_finetune_refuses_a_device_before_encoding(tmp_path, tiny_model_path, capsys):
    path = tmp_path / "l.csv"
    labelled_frame().to_csv(path, index=False)
    assert main(["finetune", str(path), "--text-col", "text", "--label-col", "label",
                 "--model", tiny_model_path, "-p", "device=foo",
                 "--out", str(tmp_path / "p.skops")]) == 2
    err = capsys.readouterr().err
    assert "device" in err and "fitting" not in err
