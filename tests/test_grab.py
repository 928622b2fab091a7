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


def test_grabbers_hand_on_a_list_under_pandas_output():
    """With scikit-learn set to give DataFrames, the grabbers gave a one-column frame: a
    text vectorizer after them iterated over it, read its column name as the only document,
    and a fitted pipeline predicted one row for four (no error). They give lists always."""
    import sklearn
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    df = pd.DataFrame({"text": ["great film", "loved it", "a bore", "terrible acting"],
                       "meta": [{"text": t} for t in ["a", "b", "c", "d"]],
                       "label": ["pos", "pos", "neg", "neg"]})
    fitted = make_pipeline(ColumnGrabber("text"), CountVectorizer(), LogisticRegression())
    fitted.fit(df, df["label"])
    expected = fitted.predict(df)
    with sklearn.config_context(transform_output="pandas"):
        assert ColumnGrabber("text").transform(df) == df["text"].tolist()
        assert ColumnGrabber("text").fit_transform(df) == df["text"].tolist()
        assert KeyGrabber("text").transform(df["meta"].tolist()) == ["a", "b", "c", "d"]
        np.testing.assert_array_equal(fitted.predict(df), expected)
        refit = clone(fitted).fit(df, df["label"])
        np.testing.assert_array_equal(refit.predict(df), expected)
        nested = make_pipeline(ColumnGrabber("meta"), KeyGrabber("text"))
        assert nested.fit_transform(df) == ["a", "b", "c", "d"]
    # a pipeline asked for DataFrames passes through its grabbers (they have nothing to set)
    nested = make_pipeline(ColumnGrabber("meta"), KeyGrabber("text"))
    assert nested.set_output(transform="pandas").fit_transform(df) == ["a", "b", "c", "d"]
    assert ColumnGrabber("text").set_output(transform="pandas").transform(df)[0] == "great film"
