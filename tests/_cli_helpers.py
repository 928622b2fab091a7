"""Shared by the command-line tests: small labelled files, a subprocess runner, and the
check that an error is one line naming the problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd

from tests.conftest import OBJECTS, SUBJECTS, VERBS

ANIMALS = {"the cat", "a dog", "a pilot"}


def labelled_frame(n_per_subject: int = 6) -> pd.DataFrame:
    """Small labelled texts: the label says whether the subject is an animal (or a pilot)."""
    rows = []
    for i, s in enumerate(SUBJECTS):
        for j in range(n_per_subject):
            text = f"{s} {VERBS[(i + j) % len(VERBS)]} {OBJECTS[(2 * i + j) % len(OBJECTS)]}"
            rows.append({"text": text, "label": "flies" if s in ANIMALS else "grounded"})
    return pd.DataFrame(rows)


def run(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "embetter", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("embetter "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


def write_files(d):
    """`train.csv` (labelled), `fresh.csv` and `fresh.jsonl` (new messages) in folder `d`."""
    df = labelled_frame()
    df.to_csv(d / "train.csv", index=False)
    fresh = pd.DataFrame({"message": ["a dog fixes old cars", "the market hates pizza", "42"]})
    fresh.to_csv(d / "fresh.csv", index=False)
    with open(d / "fresh.jsonl", "w") as f:
        for text in fresh["message"]:
            f.write(json.dumps({"message": text, "cats": {"flies": 1}}) + "\n")
    return d

