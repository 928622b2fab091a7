"""Build the single-label CSV view of the support inbox dataset.

Reads `support_inbox.jsonl` next to this file and writes `support_inbox.csv` with columns
`text,label`: one row per record whose `cats` has exactly one topic key equal to 1. Records
without a known positive topic (partially labelled) or with two topics are left out. The
`urgent` key is a separate question and never becomes a CSV label. Order follows the JSONL.

Usage (from a clone, after editing the JSONL): python -m embetter.datasets._build_csv
"""

import csv
import json
from pathlib import Path

from embetter._atomic import atomic_path

HERE = Path(__file__).resolve().parent
TOPICS = ("shipping", "returns", "product", "account", "feedback")


def single_label_rows(jsonl_path):
    """Return `(text, label)` pairs for records with exactly one positive topic."""
    rows = []
    with open(jsonl_path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            positive = [t for t in TOPICS if record["cats"].get(t) == 1]
            if len(positive) == 1:
                rows.append((record["text"], positive[0]))
    return rows


def write_csv(rows, csv_path):
    """Write rows atomically so a reader never sees a half-written file."""
    with atomic_path(csv_path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)


if __name__ == "__main__":
    rows = single_label_rows(HERE / "support_inbox.jsonl")
    write_csv(rows, HERE / "support_inbox.csv")
    print(f"wrote {len(rows)} rows to {HERE / 'support_inbox.csv'}")
