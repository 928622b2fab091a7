"""Reading the public sets of ../shared/data, and views derived from them.

`read_split(root, name, split)` reads `root/name/split.csv` (columns text, label). A derived
view is read from the set it comes from, its labels mapped or its rows filtered:

- `trec_coarse`: trec_fine's questions with their six coarse types (`"DESC:manner"` becomes
  `"DESC"`): the 6-class question-type set (TREC-6) that issue 23 checks streams and few-shot
  tuning on, from the same train and test rows.
- `clinc150_10`, `banking77_10`: the rows of 10 of the set's intents (the same 10 in every
  split, drawn once with a fixed seed from the sorted intent names): few-class intent sets,
  like the voice-assistant intents issue 23 checks on, for the few-shot comparison.

Views are for checking, not more sets to choose defaults on: each shares its texts with the
set it comes from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _coarse(frame: pd.DataFrame) -> pd.DataFrame:
    frame["label"] = frame["label"].astype(str).str.split(":", n=1).str[0]
    return frame


def _intents(k: int, seed: int = 0):
    def view(frame: pd.DataFrame) -> pd.DataFrame:
        names = np.sort(frame["label"].astype(str).unique())
        keep = np.random.default_rng(seed).choice(names, size=k, replace=False)
        return frame[frame["label"].astype(str).isin(keep)].reset_index(drop=True)
    return view


DERIVED = {
    "trec_coarse": ("trec_fine", _coarse),
    "clinc150_10": ("clinc150", _intents(10)),
    "banking77_10": ("banking77", _intents(10)),
}


def read_split(root: Path, name: str, split: str) -> pd.DataFrame:
    """One split of a set (or of a derived view) as a DataFrame with text and label columns."""
    source, view = DERIVED.get(name, (name, None))
    frame = pd.read_csv(Path(root) / source / f"{split}.csv")
    return frame if view is None else view(frame)
