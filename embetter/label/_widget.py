"""A map to lasso in the notebook: label a selection of points, hand the labels back as a Series.

Needs anywidget (`pip install 'embetter[notebook]'`); the drawing code ships with the package
(`_widget.js`, plain JS on a canvas, nothing fetched from the web), so the map works offline in
Jupyter, JupyterLab and VS Code.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np

try:
    import anywidget
    import traitlets
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "embetter.label.LabellingMap needs anywidget, which is not installed; "
        "install it with `pip install 'embetter[notebook]'`"
    ) from e

from embetter._validation import as_matrix, as_positions, as_texts, is_missing

_HERE = Path(__file__).parent


def _as_label_list(values, n: int, name: str) -> list:
    """Labels as a list of `str` (None where missing), one per point; whole floats are the
    integers pandas turns int labels with gaps into (`pd.Series([1, None, 2])`)."""
    if isinstance(values, (str, bytes)):
        raise TypeError(
            f"{name} must hold one label per point, got a single {type(values).__name__}"
        )
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per point), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but the map has {n} points")
    out = []
    for i, value in enumerate(arr):
        if isinstance(value, (str, np.str_)):
            out.append(str(value).strip() or None)  # as `assign` keeps them; "" is unlabelled
        elif is_missing(value):
            out.append(None)
        elif isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
                value, (bool, np.bool_)):
            out.append(str(value))
        elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) \
                and float(value).is_integer():
            out.append(str(int(value)))  # an integer label in a column with gaps (float64)
        else:
            raise TypeError(
                f"{name}[{i}] must be a label (a string or an integer) or None, "
                f"got {type(value).__name__} {value!r}"
            )
    return out


class _RefusedValue(traitlets.TraitError, ValueError):
    """A value a trait's check refuses: a TraitError, so that traitlets puts the previous
    value back wherever it holds notifications (a message from the front end, `set_state`)."""


class _RefusedType(traitlets.TraitError, TypeError):
    """As `_RefusedValue`, for a value of the wrong type."""


def _refusing(check, *args):
    """`check(*args)`, its ValueError or TypeError raised as the TraitError of that kind."""
    try:
        return check(*args)
    except TypeError as e:
        raise _RefusedType(str(e)) from None
    except ValueError as e:
        raise _RefusedValue(str(e)) from None


def _as_positions(positions, n: int, name: str) -> list[int]:
    """Distinct positions into the points, in their order (a repeat counts once)."""
    arr = as_positions(positions, n, name, into="the map's points", unique=False)
    return list(dict.fromkeys(int(i) for i in arr))


def _check_height(height) -> int:
    if isinstance(height, bool) or not isinstance(height, numbers.Integral) or height < 100:
        raise ValueError(f"height must be an int of at least 100 (pixels), got {height!r}")
    return int(height)


class LabellingMap(anywidget.AnyWidget):
    """A 2-D map of texts to lasso or box-select and label, in a notebook.

    Points are coloured by their label, or faintly by a prediction while they have none; the
    suggested next texts are ringed. Drag to lasso (or pick "box"), hold shift to add to the
    selection, type a label and press "label selection". `labels` hands the labels back as a
    pandas Series indexed like the input (None where unlabelled); `selected` is the selection.

    Arguments:
        X: embeddings, one row per text, projected to 2-D with `embetter.plot.project`;
            leave it out when you give `coords`.
        texts: the texts, shown when hovering and for the selection; a pandas Series (or a
            DataFrame `X`) gives `labels` its index.
        coords: a 2-D projection you made yourself, shape `(n, 2)`, instead of `X`.
        labels: known labels per point (None/NaN where unlabelled); kept as text.
        predictions: a predicted label per point, to colour the unlabelled ones.
        suggested: positions of the texts to label next (e.g. `embetter.label.suggest`).
        method: the projection of `X`: `"pca"`, `"tsne"` or `"umap"`.
        random_state: seed for the projection.
        height: the map's height in pixels.

    Usage:

    ```python
    import numpy as np
    from embetter.label import LabellingMap

    X = np.array([[0.0, 0.1, 0.0], [0.1, 0.0, 0.1], [5.0, 5.0, 4.9], [5.1, 4.9, 5.0]])
    widget = LabellingMap(X, texts=["hi", "hello", "refund", "money back"], suggested=[2])
    widget.assign("greeting", [0, 1])  # what the button does for a lasso-selected pair
    print(widget.labels.tolist())      # display `widget` in a notebook to draw it
    ```
    """

    _esm = _HERE / "_widget.js"
    _css = _HERE / "_widget.css"

    x = traitlets.List().tag(sync=True)
    y = traitlets.List().tag(sync=True)
    texts = traitlets.List().tag(sync=True)
    # Any, not List: the validators below take numpy arrays and pandas Series too (and store lists)
    assigned = traitlets.Any([]).tag(sync=True)
    predicted = traitlets.Any([]).tag(sync=True)
    suggested = traitlets.Any([]).tag(sync=True)
    selected = traitlets.Any([]).tag(sync=True)
    height = traitlets.Int(420).tag(sync=True)

    def __init__(self, X=None, texts=None, *, coords=None, labels=None, predictions=None,
                 suggested=None, method: str = "pca", random_state=0, height: int = 420):
        points = self._points(X, coords, method, random_state)
        n = points.shape[0]
        self._index, self._indexed = self._input_index(n, texts, X, labels)
        labels = self._aligned(labels, "labels")
        predictions = self._aligned(predictions, "predictions")
        if texts is None:
            text_list = [f"row {i}" for i in range(n)]
        else:
            text_list = as_texts(texts, "texts")
            if len(text_list) != n:
                raise ValueError(f"texts has {len(text_list)} entries but the map has {n} points")
        _check_height(height)
        super().__init__(
            x=[float(v) for v in points[:, 0]],
            y=[float(v) for v in points[:, 1]],
            texts=text_list,
            assigned=[None] * n if labels is None else _as_label_list(labels, n, "labels"),
            predicted=[None] * n if predictions is None
            else _as_label_list(predictions, n, "predictions"),
            suggested=[] if suggested is None else _as_positions(suggested, n, "suggested"),
            selected=[],  # (its own list: the trait's default one is shared by every map)
            height=int(height),
        )
        self.__dict__["_built"] = True

    @staticmethod
    def _points(X, coords, method, random_state) -> np.ndarray:
        if (X is None) == (coords is None):
            raise ValueError("give either X (embeddings to project) or coords (an (n, 2) "
                             f"projection), got {'both' if X is not None else 'neither'}")
        if coords is not None:
            points = as_matrix(coords, "coords")
            if points.shape[1] != 2:
                raise ValueError(f"coords must have shape (n, 2), got {points.shape}")
            return points
        from embetter.plot import project

        return project(as_matrix(X, "X"), method=method, random_state=random_state)

    @staticmethod
    def _input_index(n, texts, X, labels):
        """The points' index (the first pandas input's: texts, X or labels) and which gave
        it: "data" (texts or X), "labels", or None."""
        import pandas as pd

        for value, source in ((texts, "data"), (X, "data"), (labels, "labels")):
            if isinstance(value, (pd.Series, pd.DataFrame)) and len(value.index) == n:
                return value.index, source
        return pd.RangeIndex(n), None

    def _aligned(self, values, name):
        """`values` (a pandas Series) in the order of the points when a pandas input (texts,
        X or labels) gave the map its index: labels belong to rows by index, not by position
        (as pandas aligns them), at construction and when set later alike. Where only
        `labels` gave the index, a Series with other index values (`pd.Series(clf.predict(X))`)
        is taken in order."""
        import pandas as pd

        if not (self._indexed and isinstance(values, pd.Series)) or \
                values.index.equals(self._index):
            return values
        # (hashed, not sorted: an index mixing strings and numbers does not sort)
        if values.index.is_unique and len(values) == len(self._index) and \
                values.index.isin(self._index).all():
            return values.reindex(self._index)
        if self._indexed == "labels":
            return values
        raise ValueError(
            f"{name} is a pandas Series whose index differs from that of the points "
            f"(texts, X or labels): {list(values.index[:5])} ... against "
            f"{list(self._index[:5])} ...; give it the same index, or a list or array in the "
            "points' order")

    @traitlets.validate("selected", "suggested")
    def _valid_positions(self, proposal):
        return _refusing(_as_positions, proposal["value"], len(self.x), proposal["trait"].name)

    @traitlets.validate("assigned", "predicted")
    def _valid_labels(self, proposal):
        name = "labels" if proposal["trait"].name == "assigned" else "predictions"
        return _refusing(lambda v: _as_label_list(self._aligned(v, name), len(self.x), name),
                         proposal["value"])

    @traitlets.validate("height")
    def _valid_height(self, proposal):
        return _refusing(_check_height, proposal["value"])

    @traitlets.validate("x", "y", "texts")
    def _fixed_points(self, proposal):
        if self.__dict__.get("_built"):
            raise _RefusedValue(
                f"{proposal['trait'].name} is the map's points, set when it is made; make a new "
                "LabellingMap for other points")
        return proposal["value"]

    def set_state(self, sync_data):
        """A front end's update; one a check refuses is undone there too (the previous
        values are sent back), then the error is raised."""
        try:
            super().set_state(sync_data)
        except traitlets.TraitError:
            self.send_state([name for name in sync_data if name in self.keys])
            raise

    @property
    def labels(self):
        """The labels so far, a pandas Series indexed like the input; None where unlabelled."""
        import pandas as pd

        return pd.Series(list(self.assigned), index=self._index, dtype=object, name="label")

    def labelled_rows(self):
        """`(positions, labels)` of the labelled points, as numpy arrays: positions into the
        map's rows (the input's order, whatever its index), as `LabellingLoop.update` takes
        them."""
        values = np.array(list(self.assigned), dtype=object)
        positions = np.flatnonzero([v is not None for v in values])
        return positions, values[positions]

    def assign(self, label, positions=None) -> LabellingMap:
        """Give `label` to the points at `positions` (default: the selection); None clears.

        Arguments:
            label: the label, a string (an integer is kept as its text), or None to unlabel.
            positions: positions of the points; the current selection when left out.
        """
        if label is not None and (
            isinstance(label, bool) or not isinstance(label, (str, numbers.Integral))
        ):
            raise TypeError(f"label must be a string, an integer or None, got "
                            f"{type(label).__name__} {label!r}")
        if isinstance(label, str) and not label.strip():
            raise ValueError("label must not be empty; use None to remove labels")
        chosen = self.selected if positions is None else _as_positions(positions, len(self.x),
                                                                        "positions")
        value = None if label is None else str(label).strip()
        assigned = list(self.assigned)
        for i in chosen:
            assigned[i] = value
        self.assigned = assigned
        return self

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        done = sum(v is not None for v in self.assigned)
        return (f"LabellingMap({len(self.x)} points, {done} labelled, "
                f"{len(self.selected)} selected, {len(self.suggested)} suggested)")


__all__ = ["LabellingMap"]
