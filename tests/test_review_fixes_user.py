"""Fixes from a new user's walk off the docs' happy path (session 28): each test failed on the
code before its fix."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from embetter.finetune import ContrastiveTuner, FeedForwardTuner
from tests._sbert_helpers import tuner

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 6)).astype(np.float32)
Y = np.array([0, 1] * 30)


@pytest.mark.parametrize("make, name, new", [
    (lambda: FeedForwardTuner(hidden_dim=16, random_state=0), "hidden_dim", 4),
    (lambda: FeedForwardTuner(random_state=0), "dropout", 0.3),
    (lambda: ContrastiveTuner(hidden_dim=8, random_state=0), "hidden_dim", 3),
])
def test_a_stream_refuses_a_new_network_shape_instead_of_taking_it_later(make, name, new):
    head = make().partial_fit(X[:40], Y[:40], classes=[0, 1])
    width = head.transform(X[:1]).shape[1]
    head.set_params(**{name: new})
    # before: ignored now, then taken by a later retrain (the output width changed mid-stream)
    with pytest.raises(ValueError, match=f"{name} was set to .* call fit"):
        head.partial_fit(X[40:50], Y[40:50])
    assert head.transform(X[:1]).shape[1] == width  # the stream is as it was
    head.fit(X, Y)  # fit starts again with it
    assert head._arch(name) == new


def test_an_sbert_stream_refuses_a_new_loss_or_pair_count(tiny_model_path):
    texts = [f"some text number {i}" for i in range(24)]
    y = np.array([0, 1] * 12)
    t = tuner(tiny_model_path, batch_size=8).partial_fit(texts[:12], y[:12], classes=[0, 1])
    t.set_params(n_pos=1)
    with pytest.raises(ValueError, match="n_pos was set to 1 since this stream started"):
        t.partial_fit(texts[12:], y[12:])
    t.set_params(n_pos="auto", loss="mnrl")
    with pytest.raises(ValueError, match="loss was set to 'mnrl'"):
        t.partial_fit(texts[12:], y[12:])


def test_text_encoder_points_a_transformer_folder_to_sentence_encoder(tiny_model_path):
    from embetter.text import TextEncoder

    # before: safetensors' "File does not contain tensor embeddings"
    with pytest.raises(ValueError,
                       match=r"is a transformer model, not a static one.*SentenceEncoder\(name\)"):
        TextEncoder(tiny_model_path).transform(["hi"])


def test_loop_says_when_labels_and_classes_differ_in_type():
    from embetter.label import LabellingLoop

    loop = LabellingLoop(LogisticRegression(), [[0.0], [1.0], [2.0]], classes=["0", "1"])
    # before: "labels outside classes: ['0', '1']; classes are ['0', '1']"
    with pytest.raises(ValueError, match="labels of type int, classes of type str"):
        loop.update([0, 1], [0, 1])


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "embetter.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_a_negative_seed_is_named_by_the_cli(tmp_path):
    (tmp_path / "in.csv").write_text("text,label\na b,x\nc d,y\n")
    for command in (["project", str(tmp_path / "in.csv"), "--text-col", "text", "--out",
                     str(tmp_path / "m.csv")], ["demo"]):
        result = cli(*command, "--seed", "-1")
        # before: UMAP's / train_test_split's / PCA's random_state message
        assert result.returncode == 2
        assert "argument --seed: must be from 0 to 2**32 - 1, got -1" in result.stderr


def test_a_csv_that_is_not_utf8_says_so(tmp_path):
    (tmp_path / "in.csv").write_bytes("text,label\ncaf\xe9 ok,a\n".encode("latin-1"))
    result = cli("project", str(tmp_path / "in.csv"), "--text-col", "text", "--out",
                 str(tmp_path / "m.csv"))
    assert result.returncode != 0 and "it is not UTF-8 text" in result.stderr
    assert "save it again as UTF-8" in result.stderr


def test_demo_leaves_out_rows_without_a_label_as_finetune_does(tmp_path, capsys):
    from embetter._demo import load_dataset

    (tmp_path / "d.csv").write_text("text,label\na b,x\nc d,\ne f,y\n")
    # before: "label column 'label' is empty in 1 row(s) (data rows 2); fill or drop them"
    texts, labels = load_dataset(tmp_path / "d.csv")
    assert texts == ["a b", "e f"] and labels.tolist() == ["x", "y"]
    assert "1 row(s) without a label left out" in capsys.readouterr().out
