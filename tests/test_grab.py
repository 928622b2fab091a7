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


def test_grabbers_hand_on_values_not_a_frame_under_pandas_output():
    """With scikit-learn set to give DataFrames, the grabbers gave a one-column frame: a
    text vectorizer after them iterated over it, read its column name as the only document,
    and a fitted pipeline predicted one row for four (no error). They give a Series with the
    rows' index now (a list under the default output)."""
    import sklearn
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    df = pd.DataFrame({"text": ["great film", "loved it", "a bore", "terrible acting"],
                       "meta": [{"text": t} for t in ["a", "b", "c", "d"]],
                       "label": ["pos", "pos", "neg", "neg"]}, index=[7, 3, 5, 1])
    fitted = make_pipeline(ColumnGrabber("text"), CountVectorizer(), LogisticRegression())
    fitted.fit(df, df["label"])
    expected = fitted.predict(df)
    with sklearn.config_context(transform_output="pandas"):
        for got in (ColumnGrabber("text").transform(df), ColumnGrabber("text").fit_transform(df)):
            pd.testing.assert_series_equal(got, df["text"])
        by_key = KeyGrabber("text").transform(df["meta"])
        assert by_key.tolist() == ["a", "b", "c", "d"] and list(by_key.index) == [7, 3, 5, 1]
        assert KeyGrabber("text").transform(df["meta"].tolist()).tolist() == ["a", "b", "c", "d"]
        np.testing.assert_array_equal(fitted.predict(df), expected)
        refit = clone(fitted).fit(df, df["label"])
        np.testing.assert_array_equal(refit.predict(df), expected)
        nested = make_pipeline(ColumnGrabber("meta"), KeyGrabber("text"))
        assert nested.fit_transform(df).tolist() == ["a", "b", "c", "d"]
    assert ColumnGrabber("text").transform(df) == df["text"].tolist()  # (the default again)
    # set_output on the grabber (or a pipeline holding it) asks the same of it alone
    grab = ColumnGrabber("text").set_output(transform="pandas")
    assert list(grab.transform(df).index) == [7, 3, 5, 1]
    assert list(clone(grab).transform(df).index) == [7, 3, 5, 1]
    assert grab.set_output(transform="default").transform(df) == df["text"].tolist()
    nested = make_pipeline(ColumnGrabber("meta"), KeyGrabber("text"))
    assert list(nested.set_output(transform="pandas").fit_transform(df).index) == [7, 3, 5, 1]


def test_grabbed_texts_keep_the_index_beside_other_columns():
    """A text branch beside a numeric one (FeatureUnion, ColumnTransformer) under pandas
    output: the grabbed texts must keep the frame's index, or pandas lines the branches up
    wrong (NaN rows) or refuses to join them."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion

    from embetter.text import LiteTextEncoder

    df = pd.DataFrame({"text": ["great film", "loved it", "a bore", "bad acting"] * 3,
                       "x": np.arange(12.0)})
    test = df.iloc[[5, 2, 9, 0]]
    text = make_pipeline(ColumnGrabber("text"), LiteTextEncoder(n_components=2, random_state=0))
    for union in (FeatureUnion([("text", text), ("x", ColumnTransformer(
                      [("x", "passthrough", ["x"])]))]),
                  ColumnTransformer([("text", text, ["text"]), ("x", "passthrough", ["x"])])):
        out = clone(union).set_output(transform="pandas").fit(df).transform(test)
        assert out.shape == (4, 3) and list(out.index) == [5, 2, 9, 0]
        assert not out.isna().any().any()


def test_a_grabber_subclass_may_ask_for_scikit_learns_own_wrapping():
    class Framed(ColumnGrabber, auto_wrap_output_keys=("transform",)):
        pass

    df = pd.DataFrame({"text": ["a", "b"]})
    assert Framed("text").transform(df) == ["a", "b"]
