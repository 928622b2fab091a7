"""Labels: one class label per row, or a 0/1 indicator matrix, checked the same way
everywhere (what is missing, what mixes kinds, what is a score rather than a class)."""

from __future__ import annotations

import numbers

import numpy as np


def _label_array(y, name: str) -> np.ndarray:
    """`y` as an array; rows of different lengths (lists of label names) get a clear error."""
    if hasattr(y, "toarray"):  # a scipy sparse matrix (MultiLabelBinarizer(sparse_output=True))
        y = y.toarray()
    try:
        arr = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    except ValueError:
        raise ValueError(
            f"{name} must hold one label per row, or be a 0/1 indicator matrix (multi-label); "
            "got rows of different lengths (lists of label names? sklearn's "
            "MultiLabelBinarizer turns them into 0/1 columns)") from None
    if (arr.dtype.kind in "US" and arr.ndim == 1 and isinstance(y, (list, tuple))
            and not all(isinstance(v, (str, bytes)) for v in y)):
        # numpy wrote a NaN or a number among strings as text ("nan" a class): kept as they
        # were, the object checks name them
        arr = np.asarray(y, dtype=object)
    return arr


def as_labels(y, name: str = "y", n_samples: int | None = None,
              counted: str = "X has {n} rows") -> np.ndarray:
    """Check a 1-D label or score vector: no missing values, the right length (`n_samples`,
    which `counted` names in the error)."""
    if y is None:
        raise ValueError(f"{name} is required, got None")
    arr = _label_array(y, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n_samples is not None and arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} entries but "
                         f"{counted.format(n=n_samples)}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    if arr.dtype.kind == "O":
        _check_object_labels(arr, name)
    return arr


def _check_object_labels(arr: np.ndarray, name: str) -> None:
    """Object labels: none missing, and all of one kind, strings or numbers (sorting a mix
    fails deep inside)."""
    import pandas as pd

    if pd.isna(arr).any():  # None, NaN, pd.NA, NaT (one pass over the labels)
        raise ValueError(f"{name} contains missing values (None/NaN/pd.NA)")
    examples = {}
    for v in arr:
        kind = ("string" if isinstance(v, str) else "bytes" if isinstance(v, bytes) else
                "number" if isinstance(v, numbers.Number) else type(v).__name__)
        examples.setdefault(kind, v)
    for kind, v in examples.items():
        if isinstance(v, (dict, list, set)):  # records, lists: not one label each
            hint = (f"; for records of categories pick one, e.g. [r[{next(iter(v))!r}] for r in "
                    f"{name}] (a 0/1 label per row)" if isinstance(v, dict) and v else
                    "; for several labels per row pass a 0/1 indicator matrix (sklearn's "
                    "MultiLabelBinarizer)" if isinstance(v, (list, tuple, set)) else "")
            raise TypeError(f"{name} must hold one label (a string or a number) per row, got "
                            f"a {kind} such as {v!r:.80}{hint}")
    if len(examples) > 1:
        raise TypeError(
            f"{name} mixes kinds of labels ("
            + ", ".join(f"{kind} such as {v!r}" for kind, v in examples.items())
            + "); use one kind for every label, e.g. all strings")


def check_class_labels(labels: np.ndarray, name: str = "y") -> np.ndarray:
    """1-D labels that are classes: floats only where they are whole numbers (scores such as
    0.37 would make every row a class of its own, and no pair similar)."""
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        odd = [float(f"{v:.4g}") for v in labels[labels != np.round(labels)][:3]]
        raise ValueError(f"{name} holds continuous values (such as {odd}), not class labels; "
                         "bin them into classes first")
    return labels


def as_targets(y, name: str = "y", n_samples: int | None = None):
    """Read labels for pair building: 1-D labels, or a 2-D 0/1 indicator matrix (multi-label).

    Returns `(labels, multilabel)`: the checked 1-D array (as `as_labels`) and `False`, or a
    boolean `(n, n_labels)` matrix and `True`. A one-column 2-D `y` counts as 1-D.

    Usage:

    ```python
    import numpy as np
    from embetter._labels import as_targets
    assert as_targets(["a", "b"])[1] is False
    assert as_targets(np.eye(3, dtype=int))[0].dtype == bool
    ```
    """
    if y is None:
        raise ValueError(f"{name} is required, got None")
    arr = _label_array(y, name)
    if not (arr.ndim == 2 and arr.shape[1] > 1):
        return check_class_labels(as_labels(arr, name, n_samples=n_samples), name), False
    if n_samples is not None and arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} rows but X has {n_samples} rows")
    if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
        raise ValueError(
            f"a 2-D {name} must be a 0/1 indicator matrix (multi-label), got values such as "
            f"{np.unique(arr)[:5].tolist()}"
        )
    return arr.astype(bool), True


def encode_known_labels(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Positions of `y`'s labels in the sorted `classes` (int64); a clear error for labels not
    among them (a stream's later batch with a label the first `partial_fit` did not declare)."""
    codes = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
    unseen = classes[codes] != y
    if unseen.any():
        raise ValueError(
            f"y contains labels not seen before: {sorted(set(y[unseen].tolist()))[:5]}; "
            f"known classes are {classes.tolist()[:10]}. Pass every label to the "
            "first partial_fit call with classes=..."
        )
    return codes.astype(np.int64)
