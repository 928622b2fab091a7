"""LabellingMap without a browser: construction, the projection, validation, state sync.

The drawing and the mouse are tested in a real browser in tests/test_widget_browser.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("anywidget", reason="LabellingMap needs the notebook extra (anywidget)")

from embetter.label import LabellingMap  # noqa: E402
from embetter.plot import project  # noqa: E402

X = np.array([[0.0, 0.1, 0.0], [0.1, 0.0, 0.1], [5.0, 5.0, 4.9], [5.1, 4.9, 5.0],
              [2.0, 2.5, 2.4]])
TEXTS = ["hi", "hello", "refund", "money back", "where is my parcel"]


def test_import_embetter_label_does_not_import_anywidget():
    code = ("import sys, embetter.label; "
            "assert 'anywidget' not in sys.modules and 'ipywidgets' not in sys.modules; "
            "embetter.label.LabellingMap; assert 'anywidget' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_points_are_the_projection_of_X():
    widget = LabellingMap(X, texts=TEXTS, method="pca", random_state=0)
    np.testing.assert_allclose(np.column_stack([widget.x, widget.y]),
                               project(X, method="pca", random_state=0), rtol=1e-6)
    assert widget.texts == TEXTS and len(widget) == 5
    assert widget.labels.isna().all() and list(widget.labels.index) == list(range(5))


def test_coords_are_used_as_given_and_texts_default_to_row_numbers():
    coords = [[1, 2], [3, 4], [5, 6]]
    widget = LabellingMap(coords=coords)
    assert (widget.x, widget.y) == ([1.0, 3.0, 5.0], [2.0, 4.0, 6.0])
    assert widget.texts == ["row 0", "row 1", "row 2"]


def test_labels_come_back_as_a_series_indexed_like_the_texts():
    texts = pd.Series(TEXTS, index=list("abcde"))
    known = pd.Series(["greet", None, np.nan, "refund", None], index=list("abcde"))
    widget = LabellingMap(X, texts=texts, labels=known, predictions=[0, 0, 1, 1, 1])
    assert widget.assigned == ["greet", None, None, "refund", None]
    assert widget.predicted == ["0", "0", "1", "1", "1"]  # labels are kept as text
    widget.selected = np.array([1, 4])
    widget.assign("greet")  # what the widget's button does with the selection
    labels = widget.labels
    assert isinstance(labels, pd.Series) and labels.name == "label"
    assert labels.index.equals(texts.index)
    assert labels.to_dict() == {"a": "greet", "b": "greet", "c": None, "d": "refund",
                                "e": "greet"}
    widget.assign(None, [0])
    assert widget.labels.isna().tolist() == [True, False, True, False, False]
    assert known.tolist()[0] == "greet"  # the caller's Series is untouched
    nullable = pd.Series(["a", pd.NA, None, "b", "a"], dtype="string")
    assert LabellingMap(X, labels=nullable).assigned == ["a", None, None, "b", "a"]


def test_state_the_browser_sends_reaches_the_traits():
    widget = LabellingMap(X, texts=TEXTS, suggested=np.array([4, 2]))
    assert widget.suggested == [4, 2] and all(type(i) is int for i in widget.suggested)
    # an update message, as the front-end sends it over the comm
    widget.set_state({"selected": [0, 1], "assigned": ["hi", "hi", None, None, None]})
    assert widget.selected == [0, 1]
    assert widget.labels.tolist() == ["hi", "hi", None, None, None]
    state = widget.get_state()
    assert state["suggested"] == [4, 2]
    assert state["_esm"].rstrip().endswith("export default { render };")  # the JS, inline


def test_suggestions_from_suggest_are_accepted():
    from sklearn.linear_model import LogisticRegression

    from embetter.label import suggest

    clf = LogisticRegression().fit(X[[0, 2]], ["greet", "money"])
    picks = suggest(clf, X, k=2, random_state=0)
    widget = LabellingMap(X, texts=TEXTS, predictions=clf.predict(X), suggested=picks)
    assert widget.suggested == picks.tolist()
    assert set(widget.predicted) == {"greet", "money"}


@pytest.mark.parametrize("kwargs, error, words", [
    ({}, ValueError, "either X"),
    ({"X": X, "coords": X[:, :2]}, ValueError, "got both"),
    ({"coords": X}, ValueError, "coords must have shape (n, 2), got (5, 3)"),
    ({"coords": [1.0, 2.0]}, ValueError, "coords"),
    ({"coords": [[0, 0], [1, np.nan]]}, ValueError, "NaN"),
    ({"X": "abc"}, TypeError, "X must be a 2-D array"),
    ({"X": X, "texts": TEXTS[:3]}, ValueError, "texts has 3 entries but the map has 5 points"),
    ({"X": X, "texts": "hello"}, TypeError, "texts"),
    ({"X": X, "labels": ["a"] * 4}, ValueError, "labels has 4 entries but the map has 5"),
    ({"X": X, "labels": [["a"]] * 5}, ValueError, "labels must be 1-D"),
    ({"X": X, "labels": [1.5] * 5}, TypeError, "labels[0] must be a label"),
    ({"X": X, "predictions": ["a"] * 6}, ValueError, "predictions has 6 entries"),
    ({"X": X, "suggested": [0, 5]}, ValueError,
     "suggested must be positions into the map's points (0 to 4), got [5]"),
    ({"X": X, "suggested": [-1]}, ValueError, "got [-1]"),
    ({"X": X, "suggested": [0.5]}, TypeError,
     "suggested must be a 1-D collection of int positions"),
    ({"X": X, "suggested": 3}, TypeError, "suggested must be a 1-D collection of int positions"),
    ({"X": X, "method": "mds"}, ValueError, "method must be one of"),
    ({"X": X, "height": 20}, ValueError, "height must be an int of at least 100"),
])
def test_bad_input_is_refused_with_a_clear_message(kwargs, error, words):
    with pytest.raises(error) as info:
        LabellingMap(**kwargs)
    assert words in str(info.value)


def test_bad_updates_are_refused_and_leave_the_state_alone():
    widget = LabellingMap(X, texts=TEXTS)
    with pytest.raises(ValueError, match=r"selected must be positions into the map's points "
                                         r"\(0 to 4\), got \[7\]"):
        widget.selected = [7]
    with pytest.raises(ValueError, match="predictions has 2 entries"):
        widget.predicted = ["a", "b"]
    with pytest.raises(ValueError, match="label must not be empty"):
        widget.assign("  ", [0])
    with pytest.raises(TypeError, match="label must be a string, an integer or None"):
        widget.assign(1.5, [0])
    with pytest.raises(ValueError, match="positions must be positions into the map"):
        widget.assign("a", [10])
    assert widget.selected == [] and widget.labels.isna().all()


def test_integer_labels_with_gaps_stay_integers():
    for known in (pd.Series([1, None, 2, 3, None]), pd.Series([1, None, 2, 3, None],
                                                               dtype="Int64")):
        widget = LabellingMap(X, texts=TEXTS, labels=known)
        assert widget.assigned == ["1", None, "2", "3", None]
    with pytest.raises(TypeError, match=r"labels\[0\] must be a label"):
        LabellingMap(X, texts=TEXTS, labels=[1.5, None, None, None, None])


def test_a_refused_update_from_the_front_end_leaves_the_previous_value():
    """A front end's message (`set_state`) and a held block of changes go through traitlets'
    rollback, which undoes only a TraitError: the checks' errors are that, and still the
    ValueError/TypeError they were (a refused selection stayed, and `assign` then failed)."""
    widget = LabellingMap(coords=X[:, :2], texts=TEXTS, suggested=[1])
    widget.selected = [0]
    with pytest.raises(ValueError, match="selected must be positions"):
        widget.set_state({"selected": [0, 7]})
    assert widget.selected == [0]
    with pytest.raises(TypeError, match=r"labels\[1\] must be a label"):
        widget.set_state({"assigned": ["a", 1.5, None, None, None]})
    assert widget.assigned == [None] * 5
    with pytest.raises(ValueError, match="suggested must be positions"), \
            widget.hold_trait_notifications():
        widget.suggested = [9]
    assert widget.suggested == [1]
    assert widget.assign("spam").labels.tolist() == ["spam", None, None, None, None]


def test_maps_do_not_share_a_selection():
    first = LabellingMap(coords=X[:, :2])
    first.selected.append(4)  # (in place: the trait's default list was every map's)
    second = LabellingMap(coords=X[:2, :2])
    assert second.selected == [] and repr(second).endswith("0 selected, 0 suggested)")


def test_the_points_are_fixed_once_the_map_is_made():
    widget = LabellingMap(coords=X[:, :2], texts=TEXTS)
    for name, value in (("x", [float("nan"), 1.0]), ("y", ["oops"]), ("texts", [42])):
        with pytest.raises(ValueError, match=f"{name} is the map's points"):
            setattr(widget, name, value)
    assert len(widget) == 5 and widget.texts == TEXTS


def test_a_series_index_mixing_kinds_is_named_not_sorted():
    texts = pd.Series(TEXTS[:3], index=["a", 1, 2.5])
    with pytest.raises(ValueError, match="labels is a pandas Series whose index differs"):
        LabellingMap(coords=X[:3, :2], texts=texts,
                     labels=pd.Series(["A", "B", "C"], index=[0, 1, 2]))
    shuffled = pd.Series({2.5: "C", "a": "A", 1: "B"})
    widget = LabellingMap(coords=X[:3, :2], texts=texts, labels=shuffled)
    assert widget.labels.tolist() == ["A", "B", "C"]
