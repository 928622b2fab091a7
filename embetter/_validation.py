"""The one place where inputs are checked and converted.

Every public estimator funnels its inputs through these helpers, so a bad input gets the same
clear message everywhere: which argument, what was expected, and what came in.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np

from embetter._labels import as_labels


def _describe(value) -> str:
    kind = type(value).__name__
    shape = getattr(value, "shape", None)
    return f"{kind} of shape {shape}" if shape is not None else kind


def as_texts(X, name: str = "X", *, utf8: bool = True) -> list[str]:
    """Turn a collection of texts into a list of `str`.

    Accepts a list, tuple, generator, numpy array (1-D or `(n, 1)`), pandas Series or a
    one-column DataFrame (or a pyarrow array). A bare string is refused (it would be read as a
    list of characters), and so is any element that is not a string (`None`, NaN, numbers)
    or, with `utf8` (the tokenizers' need), that UTF-8 cannot hold (a lone surrogate), with
    its position.

    Usage:

    ```python
    from embetter._validation import as_texts
    assert as_texts(("a", "b")) == ["a", "b"]
    ```
    """
    if isinstance(X, (str, bytes)):
        raise TypeError(
            f"{name} must be a collection of texts, got a single {type(X).__name__}; "
            f"wrap it in a list: [{name}]"
        )
    if hasattr(X, "columns") and hasattr(X, "iloc"):  # pandas DataFrame
        if X.shape[1] != 1:
            raise ValueError(
                f"{name} must be a one-column DataFrame of texts, got {X.shape[1]} columns "
                f"{list(X.columns)[:5]}; select the text column first (ColumnGrabber)"
            )
        X = X.iloc[:, 0]
    if hasattr(X, "to_pylist") and hasattr(X, "null_count"):  # pyarrow Array / ChunkedArray
        X = X.to_pylist()  # (its to_numpy takes no dtype)
    if hasattr(X, "to_numpy") and not isinstance(X, np.ndarray):  # pandas Series / Index
        X = X.to_numpy(dtype=object)
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        elif X.ndim != 1:
            numbers = (" of numbers (embeddings? this step encodes texts itself: pass the "
                       "texts)" if X.dtype.kind in "biuf" else "")
            raise ValueError(
                f"{name} must be 1-D or of shape (n, 1) when given as an array of texts, "
                f"got shape {X.shape}{numbers}"
            )
        X = X.tolist()
    elif not isinstance(X, Iterable) or isinstance(X, dict):
        raise TypeError(f"{name} must be an iterable of texts, got {_describe(X)}")
    elif isinstance(X, (set, frozenset)):  # no order: rows could not be matched to texts
        raise TypeError(f"{name} must be an ordered collection of texts (a list, array or "
                        f"Series), got a {type(X).__name__}; use sorted({name}) or list({name})")
    texts = list(X)
    for i, text in enumerate(texts):
        if isinstance(text, str):
            if utf8 and not text.isascii():  # (O(1) for a str: only others are encoded)
                _check_encodable(text, f"{name}[{i}]")
            continue
        if isinstance(text, np.str_):
            texts[i] = str(text)
            continue
        if is_missing(text):
            raise ValueError(f"{name}[{i}] is missing ({text!r}); every element must be a str")
        raise ValueError(
            f"{name}[{i}] must be a str, got {type(text).__name__} ({text!r:.50})"
        )
    return texts


def _check_encodable(text: str, where: str) -> None:
    """A text that UTF-8 can hold: a lone surrogate (bytes decoded with surrogateescape,
    half an emoji from a broken JSON escape) made the tokenizers fail deep inside without
    naming the row, and no request to a hosted API could carry it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{where} is not valid Unicode text: it holds the lone surrogate "
            f"{text[e.start]!r} at position {e.start} (bytes decoded with "
            "errors='surrogateescape'?); decode it with errors='replace'") from None


def as_matrix(
    X,
    name: str = "X",
    *,
    allow_empty: bool = False,
    n_features: int | None = None,
) -> np.ndarray:
    """Turn array-like numbers (dense, pandas, scipy sparse) into a finite float32 2-D array.

    Raises a `ValueError` for 1-D input, NaN/inf, no rows (unless `allow_empty`), or a column
    count different from `n_features` when that is given.

    Usage:

    ```python
    from embetter._validation import as_matrix
    assert as_matrix([[1, 2], [3, 4]]).dtype == "float32"
    ```
    """
    if isinstance(X, (str, bytes)):
        raise TypeError(f"{name} must be a 2-D array of numbers, got a {type(X).__name__}")
    if hasattr(X, "toarray"):  # scipy sparse
        X = X.toarray()
    elif hasattr(X, "to_numpy"):  # pandas (missing values, pd.NA too, become NaN)
        import pandas as pd

        dtypes = list(X.dtypes) if hasattr(X, "dtypes") and not hasattr(X, "dtype") else [
            X.dtype]
        if any(getattr(d, "kind", "O") in "mM" for d in dtypes):
            raise TypeError(f"{name} must be a 2-D array of numbers, got {_describe(X)} "
                            "holding dates or durations; convert them first")
        if all(pd.api.types.is_numeric_dtype(d) and getattr(d, "kind", "") != "c"
               for d in dtypes):
            X = X.to_numpy(dtype=np.float64, na_value=np.nan)  # pd.NA too
        else:  # strings, complex numbers, objects: refused below
            X = X.to_numpy()
    try:
        arr = np.asarray(X)
    except ValueError as e:  # rows of different lengths
        raise ValueError(f"{name} must be a 2-D array of numbers with rows of one length, got "
                         f"{_describe(X)}: {e}") from None
    if arr.dtype.kind in "USO" and (arr.dtype.kind != "O" or any(
            isinstance(v, (str, bytes)) for v in arr.flat)):
        raise TypeError(f"{name} must be a 2-D array of numbers, got {_describe(X)} "
                        f"holding strings (dtype {arr.dtype}); convert them first")
    if arr.dtype.kind in "mM":
        raise TypeError(f"{name} must be a 2-D array of numbers, got {_describe(X)} holding "
                        f"dates or durations (dtype {arr.dtype}); convert them first")
    try:
        if arr.dtype.kind == "c":
            raise ValueError(f"Complex data not supported: {name} holds complex numbers")
        wide = arr
        with np.errstate(over="ignore"):
            arr = arr.astype(np.float32, copy=False)
    except OverflowError:  # a Python int beyond even float64's range
        raise ValueError(f"{name} holds a number beyond float32's range (about 3.4e38); "
                         "scale the data first") from None
    except TypeError as e:  # e.g. a dict inside an object array
        raise TypeError(f"{name} must be a 2-D array of numbers, got {_describe(X)}: {e}") from e
    except ValueError as e:
        if str(e).startswith("Complex"):
            raise
        raise ValueError(f"{name} must be a 2-D array of numbers, got {_describe(X)}: {e}") from e
    if arr.ndim != 2:
        hint = (
            f". Reshape your data: {name}.reshape(-1, 1) for a single feature, "
            f"{name}.reshape(1, -1) for a single sample" if arr.ndim == 1 else ""
        )
        raise ValueError(
            f"{name} must be a 2-D array, got {arr.ndim}-D with shape {arr.shape}{hint}"
        )
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} has 0 samples; at least 1 is required")
    if arr.shape[1] == 0:
        raise ValueError(
            f"{name} has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features, but this estimator was fitted with "
            f"{n_features} features"
        )
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        value = wide[tuple(bad)] if wide.shape == arr.shape else None
        if value is not None and _finite(value):  # finite, beyond float32's range
            raise ValueError(
                f"{name} holds {value:g} at row {bad[0]}, column {bad[1]}: beyond float32's "
                "range (about 3.4e38); scale the data first")
        raise ValueError(
            f"{name} contains NaN or infinity (first at row {bad[0]}, column {bad[1]}); "
            "impute or drop those rows first"
        )
    return np.ascontiguousarray(arr)


def as_positions(positions, n: int, name: str, *, into: str = "X",
                 unique: bool = True) -> np.ndarray:
    """`positions` as a 1-D int array of positions into `n` rows (of `into`, named in the
    errors): TypeError for anything but a 1-D collection of ints, ValueError for a position
    out of range, or given twice where `unique`. `None` is no positions."""
    if positions is None:
        positions = []
    if isinstance(positions, (str, bytes)) or np.ndim(positions) != 1:
        raise TypeError(f"{name} must be a 1-D collection of int positions into {into}, got "
                        f"{_describe(positions)}")
    arr = np.asarray(positions.to_numpy() if hasattr(positions, "to_numpy") else positions)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be a 1-D collection of int positions into {into}, got "
                        f"dtype {arr.dtype}")
    arr = arr.astype(np.intp)
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise ValueError(f"{name} must be positions into {into} (0 to {n - 1}), got "
                         f"{bad[:5].tolist()}")
    if unique and np.unique(arr).size != arr.size:
        raise ValueError(f"{name} holds the same position more than once")
    return arr


def is_missing(value) -> bool:
    """None, NaN, pd.NA or NaT: a missing cell (a list or array is present, not missing)."""
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # not a scalar
        return False


def check_bool(value, name: str) -> None:
    """A flag parameter: True or False (a string such as "no" would count as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def as_random_state(random_state, *, generators: bool = False):
    """scikit-learn's `check_random_state` (a numpy Generator passes as it is where
    `generators`), with an error that names the argument instead of numpy's words."""
    from sklearn.utils import check_random_state

    if generators and isinstance(random_state, np.random.Generator):
        return random_state
    try:
        return check_random_state(random_state)
    except (TypeError, ValueError) as e:
        kinds = "RandomState or Generator" if generators else "RandomState"
        raise ValueError(f"random_state must be None, an int in [0, 2**32), or a numpy "
                         f"{kinds}, got {random_state!r}") from e


def check_int(value, name: str, minimum: int = 1, *, allow_none: bool = False):
    """An int `>= minimum` (bools refused), returned as `int`; else a `ValueError` naming it.

    Usage:

    ```python
    from embetter._validation import check_int
    assert check_int(3, "n") == 3 and check_int(None, "dim", allow_none=True) is None
    ```
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(
            f"{name} must be {'None or ' if allow_none else ''}{kind}, got {value!r}"
        )
    return int(value)


def check_pairs(X1, X2, y=None, *, texts: bool = False, n_features: int | None = None,
                allow_empty: bool = False):
    """Validate the pair format `(X1, X2, y)` used by the learners.

    With `texts=True`, X1 and X2 are collections of texts; otherwise float32 matrices with the
    same number of columns. `y` (optional) must have one entry per pair.
    Returns `(X1, X2, y)` converted. `allow_empty`: 0 pairs are taken (to score, not to
    train on).
    """
    if texts:
        X1, X2 = as_texts(X1, "X1"), as_texts(X2, "X2")
        n1, n2 = len(X1), len(X2)
    else:
        X1 = as_matrix(X1, "X1", n_features=n_features, allow_empty=allow_empty)
        X2 = as_matrix(X2, "X2", allow_empty=allow_empty)
        if X2.shape[1] != X1.shape[1]:
            raise ValueError(f"X2 has {X2.shape[1]} features but X1 has {X1.shape[1]}; "
                             "the two sides of a pair must have the same width")
        n1, n2 = X1.shape[0], X2.shape[0]
    if n1 != n2:
        raise ValueError(f"X1 and X2 must hold the same number of items, got {n1} and {n2}")
    if n1 == 0 and not allow_empty:
        raise ValueError("X1 and X2 have 0 pairs; at least 1 is required")
    if y is not None:
        y = as_pair_scores(y, n1)
    return X1, X2, y


def as_pair_scores(y, n: int, hint: str = "") -> np.ndarray:
    """One number per pair (a score or a 0/1 label), as float32."""
    y = as_labels(y, "y", n_samples=n, counted="X1 and X2 hold {n} pairs")
    if y.dtype.kind not in "biuf":
        raise ValueError(
            f"y must hold numbers (scores or 0/1 labels), got dtype {y.dtype}{hint}")
    return y.astype(np.float32)


def _finite(value) -> bool:
    """Whether a number is finite (a Python int of an object array too, which `np.isfinite`
    refuses when it is that large, and one beyond float64's range)."""
    try:
        return bool(np.isfinite(float(value)))
    except OverflowError:
        return True
