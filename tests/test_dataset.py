"""The bundled support-inbox dataset is well formed and its CSV view matches the JSONL."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import embetter.datasets
from embetter.datasets import _build_csv as build_csv
from embetter.datasets import load_support_inbox, load_support_inbox_records

DATASETS = Path(embetter.datasets.__file__).resolve().parent
JSONL = DATASETS / "support_inbox.jsonl"
CSV = DATASETS / "support_inbox.csv"


@pytest.fixture(scope="module")
def records():
    with open(JSONL, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_records_are_well_formed(records):
    assert len(records) >= 600
    for record in records:
        assert set(record) == {"text", "cats"}
        assert isinstance(record["text"], str) and record["text"].strip()
        assert isinstance(record["cats"], dict) and record["cats"]
        assert all(value in (0, 1) for value in record["cats"].values())


def test_texts_are_unique_short_sentences(records):
    texts = [record["text"].strip().lower() for record in records]
    assert len(set(texts)) == len(texts)
    assert all(6 <= len(text.split()) <= 25 for text in texts)


def test_labels_and_partial_labels(records):
    keys = Counter(key for record in records for key in record["cats"])
    assert len(keys) >= 3
    all_keys = set(keys)
    partial = [r for r in records if set(r["cats"]) != all_keys]
    assert 0.15 * len(records) <= len(partial) <= 0.5 * len(records)
    # Every label has positives and negatives somewhere, or it teaches nothing.
    for key in all_keys:
        values = {r["cats"][key] for r in records if key in r["cats"]}
        assert values == {0, 1}, key


def test_csv_matches_jsonl(records):
    expected = build_csv.single_label_rows(JSONL)
    with open(CSV, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == ["text", "label"]
        rows = [tuple(row) for row in reader]
    assert rows == expected
    counts = Counter(label for _, label in rows)
    assert set(counts) == set(build_csv.TOPICS)
    assert min(counts.values()) >= 100
    # Partially labelled records really are left out of the single-label view.
    assert len(rows) < len(records)


def test_loaders_read_the_packaged_files(records):
    texts, labels = load_support_inbox()
    with open(CSV, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert texts == [t for t, _ in rows]
    assert isinstance(labels, np.ndarray) and labels.tolist() == [lab for _, lab in rows]
    df = load_support_inbox(as_frame=True)
    assert list(df.columns) == ["text", "label"]
    assert df["text"].tolist() == texts and df["label"].tolist() == labels.tolist()
    assert load_support_inbox_records() == records


def test_the_loader_keeps_texts_as_written(tmp_path, monkeypatch):
    # "NA" or "42" are texts: the CSV reader must not turn them into missing values or numbers
    (tmp_path / "support_inbox.csv").write_text('text,label\nNA,a\n42,b\n"a, b",a\n')
    monkeypatch.setattr(embetter.datasets, "_open",
                        lambda name: open(tmp_path / name, encoding="utf-8", newline=""))  # noqa: SIM115
    texts, labels = load_support_inbox()
    assert texts == ["NA", "42", "a, b"] and labels.tolist() == ["a", "b", "a"]
    assert load_support_inbox(as_frame=True)["text"].tolist() == ["NA", "42", "a, b"]


def test_our_datasets_never_shadow_hugging_face_datasets():
    # sentence-transformers imports HF `datasets`; from the repository root (tests, `make
    # demo`) that name must still resolve to the installed package, not to anything of ours.
    root = Path(__file__).resolve().parent.parent
    code = "import datasets, embetter.datasets; print(datasets.__file__); print(datasets.Dataset)"
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first = Path(result.stdout.splitlines()[0])
    # the installed package: site-packages/datasets/__init__.py, never embetter/datasets (the
    # checkout's own path may contain "embetter": only the parts after site-packages count)
    parts = first.parts
    assert "site-packages" in parts, first
    assert parts[parts.index("site-packages") + 1:] == ("datasets", "__init__.py"), first
