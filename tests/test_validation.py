import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from embetter._validation import as_labels, as_matrix, as_texts, check_pairs


@pytest.mark.parametrize(
    "X",
    [
        ["a", "b"],
        ("a", "b"),
        np.array(["a", "b"]),
        np.array([["a"], ["b"]], dtype=object),
        pd.Series(["a", "b"], index=[10, 20]),
        pd.DataFrame({"text": ["a", "b"]}),
        (t for t in ["a", "b"]),
    ],
)
def test_as_texts_accepts_collections(X):
    assert as_texts(X) == ["a", "b"]


def test_as_texts_refuses_a_bare_string():
    with pytest.raises(TypeError, match=r"single str.*\[X\]"):
        as_texts("hello")


@pytest.mark.parametrize("bad, pos", [(["a", None], 1), (["a", "b", float("nan")], 2), ([3], 0)])
def test_as_texts_names_the_bad_position(bad, pos):
    with pytest.raises(ValueError, match=rf"X\[{pos}\]"):
        as_texts(bad)


def test_as_texts_refuses_wide_frames():
    with pytest.raises(ValueError, match="one-column"):
        as_texts(pd.DataFrame({"a": ["x"], "b": ["y"]}))


def test_as_matrix_converts_and_checks():
    assert as_matrix(sp.csr_matrix(np.eye(3))).dtype == np.float32
    assert as_matrix(pd.DataFrame(np.ones((2, 2)))).shape == (2, 2)
    with pytest.raises(ValueError, match="2-D"):
        as_matrix(np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        as_matrix([[1.0, np.nan]])
    with pytest.raises(ValueError, match="0 samples"):
        as_matrix(np.ones((0, 3)))
    with pytest.raises(ValueError, match="fitted with 4"):
        as_matrix(np.ones((2, 3)), n_features=4)


def test_labels_and_pairs():
    with pytest.raises(ValueError, match="3 entries but X has 2"):
        as_labels([0, 1, 1], n_samples=2)
    X1, X2, y = check_pairs(np.ones((2, 3)), np.zeros((2, 3)), [1, 0])
    assert y.dtype == np.float32
    with pytest.raises(ValueError, match="same number"):
        check_pairs(np.ones((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="fitted with 3"):
        check_pairs(np.ones((2, 3)), np.zeros((2, 4)))
    assert check_pairs(["a"], ["b"], texts=True)[0] == ["a"]
