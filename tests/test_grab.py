import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from embetter.grab import ColumnGrabber, KeyGrabber


def test_column_grabber():
    df = pd.DataFrame({"text": ["hi", "yo"], "n": [1, 2]})
    grabber = ColumnGrabber("text")
    assert grabber.transform(df) == ["hi", "yo"]
    assert clone(grabber).colname == "text"
    assert repr(grabber) == "ColumnGrabber(colname='text')"
    assert make_pipeline(grabber).fit(df).transform(df) == ["hi", "yo"]
    with pytest.raises(KeyError, match="'missing' not found"):
        ColumnGrabber("missing").transform(df)
    with pytest.raises(TypeError, match="KeyGrabber"):
        ColumnGrabber("text").transform([{"text": "hi"}])
    assert ColumnGrabber("text").transform({"text": ["a", "b"]}) == ["a", "b"]
    for one_record in ({"text": "hello world"}, {"text": 5}):
        with pytest.raises(TypeError, match="column 'text' must hold one value per row"):
            ColumnGrabber("text").transform(one_record)
    twice = pd.DataFrame([["a", "b"]], columns=["text", "text"])
    with pytest.raises(ValueError, match="column 'text' appears 2 times"):
        ColumnGrabber("text").transform(twice)
    with pytest.raises(ValueError, match=r"must be 1-D .* shape \(2, 3\)"):
        ColumnGrabber("text").transform({"text": np.zeros((2, 3))})  # a dict's 2-D value


def test_key_grabber():
    records = [{"text": "hi"}, {"text": "yo"}]
    assert KeyGrabber("text").transform(records) == ["hi", "yo"]
    assert KeyGrabber("text").transform(iter(records)) == ["hi", "yo"]
    assert KeyGrabber("text").transform({"text": "hi"}) == ["hi"]
    with pytest.raises(KeyError, match=r"X\[1\] has no key 'text'"):
        KeyGrabber("text").transform([{"text": "a"}, {"other": "b"}])
    with pytest.raises(TypeError):
        KeyGrabber("text").transform("text")


def test_key_grabber_names_a_list_of_keys():
    from embetter.grab import KeyGrabber

    for colname in (["text"], {"text"}):
        with pytest.raises(TypeError, match="colname must be one key's name"):
            KeyGrabber(colname).transform([{"text": "a"}])
        with pytest.raises(TypeError, match="colname must be one key's name"):
            KeyGrabber(colname).transform([])


def test_column_grabber_reads_a_pyarrow_table_by_name():
    pa = pytest.importorskip("pyarrow")
    from embetter.grab import ColumnGrabber

    assert ColumnGrabber("text").transform(pa.table({"text": ["a", "b"]})) == ["a", "b"]
    with pytest.raises(KeyError, match=r"available columns: \['text'\]"):
        ColumnGrabber("other").transform(pa.table({"text": ["a", "b"]}))


def test_column_grabber_on_a_frame_with_a_column_named_column_names():
    frame = pd.DataFrame({"text": ["hi", "yo"], "column_names": ["x", "y"]})
    assert ColumnGrabber("text").transform(frame) == ["hi", "yo"]
