"""Pull the text (or any field) out of dataframes and dicts, as the first step of a pipeline."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

import numpy as np

from embetter.base import EmbetterBase


def _check_one_name(colname, what: str, owner: str) -> None:
    """`colname` must name one column (or key): a list, set or array of them is refused."""
    if isinstance(colname, (list, set, dict, np.ndarray)) or not isinstance(colname, Hashable):
        first = next(iter(colname), "text") if isinstance(colname, Iterable) else "text"
        raise TypeError(
            f"colname must be one {what}'s name (the texts), got a "
            f"{type(colname).__name__} {colname!r:.80}; e.g. {owner}({first!r})")


class _Grabber(EmbetterBase):
    """What both grabbers share. They hand the next step one value per row (texts, mostly):
    a list, whatever output scikit-learn is set to give (`set_output`,
    `set_config(transform_output="pandas")`); a one-column DataFrame there made a text
    vectorizer read its column name as the only document."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(auto_wrap_output_keys=None, **kwargs)

    def __init__(self, colname):
        self.colname = colname

    def set_output(self, *, transform=None):
        """Nothing to set: the grabbed values stay a list (the next step's input, not a
        table). Here so that `Pipeline.set_output` passes through a grabber."""
        return self

    def get_feature_names_out(self, input_features=None):
        return np.asarray([self.colname], dtype=object)

    def __sklearn_tags__(self):
        # it takes records (dicts, a DataFrame), not numeric arrays
        tags = super().__sklearn_tags__()
        tags.input_tags.dict = True
        tags.input_tags.two_d_array = False
        return tags


class ColumnGrabber(_Grabber):
    """Select one column of a pandas DataFrame (or dict of columns) and return it as a list.

    Arguments:
        colname: the column to select.

    Usage:

    ```python
    import pandas as pd
    from embetter.grab import ColumnGrabber

    df = pd.DataFrame({"text": ["hi", "yo"], "label": [0, 1]})
    assert ColumnGrabber("text").transform(df) == ["hi", "yo"]
    ```
    """

    def transform(self, X):
        """Return the values of column `colname` as a list."""
        columns = getattr(X, "columns", None)
        if columns is None and not isinstance(X, Mapping):
            raise TypeError(
                "ColumnGrabber expects a DataFrame (or a dict of columns), "
                f"got {type(X).__name__}; "
                "for a list of dicts use KeyGrabber"
            )
        # (a pyarrow Table's `columns` are its arrays; its names are `column_names`)
        names = getattr(X, "column_names", None) if type(X).__module__.startswith(
            "pyarrow") else None
        available = (list(names) if names is not None else list(columns) if columns is not None
                     else list(X.keys()))
        _check_one_name(self.colname, "column", "ColumnGrabber")
        if self.colname not in available:
            raise KeyError(
                f"column {self.colname!r} not found; available columns: {available[:20]}"
            )
        column = X[self.colname]
        if getattr(column, "ndim", 1) != 1:
            if columns is not None:  # a DataFrame with the name twice gives a frame
                raise ValueError(
                    f"column {self.colname!r} appears {column.shape[1]} times in X; "
                    "rename the duplicates first")
            raise ValueError(
                f"column {self.colname!r} must be 1-D (one value per row), got an array of "
                f"shape {getattr(column, 'shape', None)}")
        if isinstance(column, (str, bytes)) or not isinstance(column, Iterable):
            raise TypeError(
                f"column {self.colname!r} must hold one value per row (a list, array or "
                f"Series), got a single {type(column).__name__}; for one record use "
                "KeyGrabber, which takes a dict")
        if hasattr(column, "to_pylist"):  # a pyarrow array: its values, not arrow scalars
            return column.to_pylist()
        return list(column)


class KeyGrabber(_Grabber):
    """Select one key from each dict of a list (or generator) of dicts, or from a single dict.

    Arguments:
        colname: the key to select.

    Usage:

    ```python
    from embetter.grab import KeyGrabber

    records = [{"text": "hi", "label": 0}, {"text": "yo", "label": 1}]
    assert KeyGrabber("text").transform(records) == ["hi", "yo"]
    assert KeyGrabber("text").transform({"text": "hi"}) == ["hi"]
    ```
    """

    def transform(self, X):
        """Return `[d[colname] for d in X]`; a single dict gives a one-element list."""
        _check_one_name(self.colname, "key", "KeyGrabber")
        if isinstance(X, Mapping):
            X = [X]
        elif (isinstance(X, (str, bytes)) or not isinstance(X, Iterable)
              or hasattr(X, "columns")):  # a DataFrame iterates over its column names
            hint = "; for a DataFrame use ColumnGrabber" if hasattr(X, "columns") else ""
            raise TypeError(
                f"KeyGrabber expects a dict or an iterable of dicts, got {type(X).__name__}"
                f"{hint}")
        out = []
        for i, record in enumerate(X):
            if not isinstance(record, Mapping):
                raise TypeError(f"X[{i}] must be a dict, got {type(record).__name__}")
            try:
                out.append(record[self.colname])
            except KeyError:
                raise KeyError(
                    f"X[{i}] has no key {self.colname!r}; its keys: {list(record)[:20]}"
                ) from None
        return out
