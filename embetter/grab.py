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


def _pandas_index(values):
    """The index of a pandas Series (None for anything else: a list, an array, a dict)."""
    return values.index if type(values).__module__.startswith("pandas") else None


class _Grabber(EmbetterBase):
    """What both grabbers share. They hand the next step one value per row (texts, mostly):
    a list; under scikit-learn's pandas output (`set_output(transform="pandas")`,
    `set_config(transform_output="pandas")`) a Series with the rows' index, never a
    one-column DataFrame (a text vectorizer would read its column name as the only
    document), so that the steps after it keep the index (a FeatureUnion or ColumnTransformer
    lines its branches up by it)."""

    def __init_subclass__(cls, auto_wrap_output_keys=None, **kwargs):
        super().__init_subclass__(auto_wrap_output_keys=auto_wrap_output_keys, **kwargs)

    def __init__(self, colname):
        self.colname = colname

    def set_output(self, *, transform=None):
        """`transform="pandas"`: hand on a Series with the rows' index instead of a list;
        `"default"` or `"polars"`: a list; `None`: unchanged. Returns self."""
        if transform not in (None, "default", "pandas", "polars"):  # (scikit-learn's choices)
            raise ValueError(f"output config must be in ['default', 'pandas', 'polars'], got "
                             f"{transform!r}")
        if transform is not None:  # (where scikit-learn keeps it: clone copies it over)
            self._sklearn_output_config = {"transform": transform}
        return self

    def _handed_on(self, values: list, index):
        """`values` as the next step gets them: a list, or a Series under pandas output."""
        from sklearn import get_config

        how = getattr(self, "_sklearn_output_config", {}).get("transform")
        if (how or get_config()["transform_output"]) != "pandas":
            return values
        import pandas as pd

        return pd.Series(values, index=index, name=self.colname)

    def get_feature_names_out(self, input_features=None):
        return np.asarray([self.colname], dtype=object)

    def __sklearn_tags__(self):
        # it takes records (dicts, a DataFrame), not numeric arrays
        tags = super().__sklearn_tags__()
        tags.input_tags.dict = True
        tags.input_tags.two_d_array = False
        return tags


class ColumnGrabber(_Grabber):
    """Select one column of a pandas DataFrame (or dict of columns) and return it as a list
    (under scikit-learn's pandas output: a Series with the frame's index).

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
        values = column.to_pylist() if hasattr(column, "to_pylist") else list(column)
        return self._handed_on(values, _pandas_index(column))  # (pyarrow: its values)


class KeyGrabber(_Grabber):
    """Select one key from each dict of a list (or generator) of dicts, or from a single dict,
    as a list (under scikit-learn's pandas output: a Series, with the index of a Series of
    dicts).

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
        return self._handed_on(out, _pandas_index(X))
