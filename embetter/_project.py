"""`embetter project`: a 2-D map of texts (`text,x,y[,label]`) for bulk-labelling tools."""

from __future__ import annotations

import sys
import warnings

import numpy as np

from embetter._files import (
    UsageError,
    _format_of,
    atomic_path,
    check_out_file,
    label_column,
    read_table,
    text_column,
)
from embetter._pipelines import load_pipeline, read_for_pipeline, transform_texts

MAP_FORMATS = {".csv": "csv"}
_NAMES = {"umap": "UMAP", "pca": "PCA", "tsne": "t-SNE"}


def run_project(input_path, out, *, text_col=None, label_col=None, pipeline=None, trust=False,
                model="all-MiniLM-L6-v2", method="umap", seed=0, progress=False) -> int:
    """Encode (or apply a saved pipeline), project to 2-D and write the map; the exit code."""
    from embetter.plot import _method_to_use, method_for, project

    _format_of(out, MAP_FORMATS, "map")  # refuse a bad --out before any work is done
    check_out_file(out)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", UserWarning)
        method = _method_to_use(method)
    for warning in said:  # "umap-learn is not installed ...": one line, before the long work
        print(f"embetter project: note: {warning.message}", file=sys.stderr)

    if pipeline is not None:
        pipe = load_pipeline(pipeline, trust=trust)
        df, texts, encode = read_for_pipeline(pipe, pipeline, input_path, text_col)
    elif text_col is None:
        raise UsageError("--text-col is required without --pipeline")
    else:
        from embetter.text import SentenceEncoder

        df = read_table(input_path)
        texts = text_column(df, text_col, input_path)
        encode = SentenceEncoder(model, show_progress_bar=progress)
    labels = None
    if label_col is not None and label_col in df.columns:
        if any(isinstance(c, dict) for c in df[label_col]):
            label_column(df, label_col, input_path)  # raises: records, pick one (cats.NAME)
        labels = _labels_as_read(df[label_col])  # empty cells stay empty
    elif label_col is not None and "." in label_col:  # cats.NAME, as finetune reads it
        keep, known = label_column(df, label_col, input_path)
        labels = np.full(len(df), None, dtype=object)
        labels[keep] = known
    elif label_col is not None:
        available = ", ".join(map(str, list(df.columns)[:20]))
        raise UsageError(f"{input_path}: no label column {label_col!r}; "
                         f"its columns are: {available}")
    X = transform_texts(encode, texts, progress=progress)
    points = project(X, method=method, random_state=seed)

    import pandas as pd

    table = pd.DataFrame({"text": texts, "x": points[:, 0], "y": points[:, 1]})
    if labels is not None:
        table["label"] = labels
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    used = _NAMES[method_for(method, np.shape(X))]
    print(f"wrote a {used} map of {len(table)} texts to {out}", file=sys.stderr)
    return 0


def _labels_as_read(values):
    """The label column as the file wrote it: JSONL and Parquet hand an integer column with
    empty cells over as floats (`1.0`, NaN); those go back to integers (`Int64`)."""
    import pandas as pd

    arr = values.to_numpy()
    if arr.dtype.kind == "f":
        known = arr[~np.isnan(arr)]
        if known.size and np.all(known == np.round(known)) and np.abs(known).max() < 2**53:
            return pd.array([None if np.isnan(v) else int(v) for v in arr], dtype="Int64")
    return arr

