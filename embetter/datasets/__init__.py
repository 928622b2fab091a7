"""Small labelled datasets shipped inside the package, in the style of `sklearn.datasets`.

The support inbox (see `README.md` in this folder for how it was written, and its CC0
license): 726 short messages to a homeware shop's support inbox. `load_support_inbox` gives
the single-label view (638 texts, five topics); `load_support_inbox_records` gives every
record with its partial labels, as a labelling session leaves them.
"""

from __future__ import annotations

import csv
import json
from importlib import resources

import numpy as np

_CSV = "support_inbox.csv"
_JSONL = "support_inbox.jsonl"


def _open(name: str):
    return resources.files(__name__).joinpath(name).open("r", encoding="utf-8", newline="")


def load_support_inbox(*, as_frame: bool = False):
    """The support-inbox messages with one topic label each: `(texts, labels)` or a DataFrame.

    Five topics (`shipping`, `returns`, `product`, `account`, `feedback`), 118 to 135
    messages each; the messages often borrow the words of another topic, so raw sentence
    embeddings mix the classes up and a few hundred labels visibly help.

    Arguments:
        as_frame: `False` (default) returns `(texts, labels)`: a list of 638 str and a numpy
            array of their labels. `True` returns a pandas DataFrame with columns `text`
            and `label`.

    Usage:

    ```python
    from embetter.datasets import load_support_inbox

    texts, labels = load_support_inbox()
    print(len(texts), sorted(set(labels)))
    df = load_support_inbox(as_frame=True)
    assert list(df.columns) == ["text", "label"] and len(df) == len(texts)
    ```
    """
    with _open(_CSV) as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    texts = [text for text, _ in rows]
    labels = np.array([label for _, label in rows], dtype=object)
    if as_frame:
        import pandas as pd

        return pd.DataFrame({header[0]: texts, header[1]: labels.astype(str)})
    return texts, labels


def load_support_inbox_records() -> list[dict]:
    """Every support-inbox record with its partial labels, as a labelling session leaves them.

    726 dicts `{"text": str, "cats": {label: 0 or 1}}`. The `cats` keys are the five topics
    and `urgent`; 30% of the records do not carry every key (the annotator answered only
    some questions), which is what `embetter.finetune.pairs_from_records` and
    `embetter finetune --label-col cats.NAME` are made for.

    Usage:

    ```python
    from embetter.datasets import load_support_inbox_records

    records = load_support_inbox_records()
    print(len(records), records[0]["cats"]["account"])
    ```
    """
    with _open(_JSONL) as f:
        return [json.loads(line) for line in f if line.strip()]
