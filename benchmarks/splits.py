"""Reading the public sets of ../shared/data, and views derived from them.

`read_split(root, name, split)` reads `root/name/split.csv` (columns text, label). A derived
view is read from the set it comes from, with its labels mapped:

- `trec_coarse`: trec_fine's questions with their six coarse types (`"DESC:manner"` becomes
  `"DESC"`): the 6-class question-type set (TREC-6) that issue 23 checks streams and few-shot
  tuning on, from the same train and test rows. A view for checking, not a twelfth set to
  choose defaults on: it shares every text with trec_fine.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

DERIVED = {"trec_coarse": ("trec_fine", lambda label: label.split(":", 1)[0])}


def read_split(root: Path, name: str, split: str) -> pd.DataFrame:
    """One split of a set (or of a derived view) as a DataFrame with text and label columns."""
    source, relabel = DERIVED.get(name, (name, None))
    frame = pd.read_csv(Path(root) / source / f"{split}.csv")
    if relabel is not None:
        frame["label"] = frame["label"].astype(str).map(relabel)
    return frame
