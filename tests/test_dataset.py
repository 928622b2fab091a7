"""The bundled support-inbox dataset is well formed and its CSV view matches the JSONL."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

DATASETS = Path(__file__).resolve().parent.parent / "datasets"
JSONL = DATASETS / "support_inbox.jsonl"
CSV = DATASETS / "support_inbox.csv"


def load_build_csv():
    # datasets/ is not a package; load the builder by path so the test checks the real script.
    spec = importlib.util.spec_from_file_location("build_csv", DATASETS / "build_csv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    build_csv = load_build_csv()
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
