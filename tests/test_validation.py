import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from embetter._labels import as_labels
from embetter._validation import as_matrix, as_positions, as_texts, check_pairs


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


def test_as_positions_one_check_for_every_caller():
    got = as_positions(pd.Series([3, 0], index=[7, 9]), 4, "picks")
    assert got.tolist() == [3, 0] and got.dtype == np.intp
    assert as_positions(None, 4, "picks").size == 0
    assert as_positions([1, 1], 4, "idx1", unique=False).tolist() == [1, 1]
    with pytest.raises(ValueError, match="picks holds the same position more than once"):
        as_positions([1, 1], 4, "picks")
    with pytest.raises(ValueError, match=r"into texts \(0 to 3\), got \[4, -1\]"):
        as_positions([4, 2, -1], 4, "picks", into="texts")
    for bad in ([0.5], [True, False], "01", [[0, 1]], 3):
        with pytest.raises(TypeError, match="picks must be a 1-D collection of int positions"):
            as_positions(bad, 4, "picks")


def test_labels_and_pairs():
    with pytest.raises(ValueError, match="3 entries but X has 2"):
        as_labels([0, 1, 1], n_samples=2)
    X1, X2, y = check_pairs(np.ones((2, 3)), np.zeros((2, 3)), [1, 0])
    assert y.dtype == np.float32
    with pytest.raises(ValueError, match="same number"):
        check_pairs(np.ones((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="X2 has 4 features but X1 has 3"):
        check_pairs(np.ones((2, 3)), np.zeros((2, 4)))
    assert check_pairs(["a"], ["b"], texts=True)[0] == ["a"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None])
def test_check_int_names_the_argument(bad):
    from embetter._validation import check_int

    with pytest.raises(ValueError, match=r"batch_size must be a positive int, got"):
        check_int(bad, "batch_size")


def test_check_int_minimum_and_none():
    from embetter._validation import check_int

    assert check_int(np.int64(0), "n_neg", 0) == 0
    assert check_int(None, "dim", allow_none=True) is None
    with pytest.raises(ValueError, match=r"n_neg must be an int >= 0, got -1"):
        check_int(-1, "n_neg", 0)
    with pytest.raises(ValueError, match=r"dim must be None or a positive int"):
        check_int(0, "dim", allow_none=True)


def test_as_targets_reads_single_and_multi_label():
    from embetter._labels import as_targets

    labels, multi = as_targets(pd.Series(["a", "b", "a"]), n_samples=3)
    assert not multi and labels.tolist() == ["a", "b", "a"]
    labels, multi = as_targets(np.array([[0], [1]]))  # one column: single-label
    assert not multi and labels.tolist() == [0, 1]
    Y, multi = as_targets(pd.DataFrame({"x": [1, 0], "y": [1, 1]}))
    assert multi and Y.dtype == bool and Y.tolist() == [[True, True], [False, True]]
    with pytest.raises(ValueError, match="0/1 indicator matrix"):
        as_targets(np.array([[0, 2], [1, 0]]))
    with pytest.raises(ValueError, match="y has 2 rows but X has 3"):
        as_targets(np.eye(2), n_samples=3)
    with pytest.raises(ValueError, match="y has 2 entries but X has 3"):
        as_targets([1, 2], n_samples=3)
    with pytest.raises(ValueError, match="y is required"):
        as_targets(None)


def test_atomic_path_files_and_folders(tmp_path):
    from embetter._atomic import atomic_path

    target = tmp_path / "sub" / "out.bin"
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(OSError, match="disk full"), atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == [
        "out.bin"]
    folder = tmp_path / "model"
    for content in ("first", "second"):
        with atomic_path(folder, folder=True) as tmp:
            (tmp_path / tmp / "weights.txt").write_text(content)
    assert (folder / "weights.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "sub"]  # nothing left over
    with pytest.raises(ValueError, match="must be a directory"), atomic_path(target, folder=True):
        pass


def test_atomic_folder_put_back_when_the_new_one_cannot_move_in(tmp_path, monkeypatch):
    import os

    from embetter import _atomic

    folder = tmp_path / "model"
    with _atomic.atomic_path(folder, folder=True) as tmp:
        (tmp_path / tmp / "weights.txt").write_text("old")
    calls, replace = [], os.replace

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("rename failed")
        replace(src, dst)

    monkeypatch.setattr(_atomic.os, "replace", second_fails)
    monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)  # (no one-step swap)
    with pytest.raises(OSError, match="rename failed"), \
            _atomic.atomic_path(folder, folder=True) as tmp:
        (tmp_path / tmp / "weights.txt").write_text("new")
    assert (folder / "weights.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left over


def test_atomic_files_get_the_usual_permissions_without_touching_the_umask(tmp_path):
    import os

    from embetter._atomic import atomic_path

    umask = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp, open(tmp, "w") as f:
            f.write("x")
        with atomic_path(tmp_path / "d", folder=True):
            pass
        assert os.umask(0o027) == 0o027  # still the caller's
    finally:
        os.umask(umask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750


def test_strings_are_not_numbers_and_labels_are_one_kind():
    for bad in (np.array([["1", "2"], ["3", "4"]]), np.array([["1", 2.0]], dtype=object)):
        with pytest.raises(TypeError, match="X must be a 2-D array of numbers.*holding strings"):
            as_matrix(bad)
    assert as_matrix(np.array([[1, 2.5]], dtype=object)).tolist() == [[1.0, 2.5]]
    with pytest.raises(TypeError, match=r"y mixes kinds of labels \(string such as 'a', number "
                                        r"such as 1\)"):
        as_labels(np.array(["a", 1] * 3, dtype=object))
    assert as_labels(np.array([1, 2.0, np.int64(3)], dtype=object)).size == 3
    from embetter._labels import as_targets

    with pytest.raises(ValueError, match="y must hold one label per row.*MultiLabelBinarizer"):
        as_targets([["a", "b"], ["b"], []])
