"""embetter.plot: a PCA picture of an embedding space, coloured by label."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib is in the dev extra")

from matplotlib.figure import Figure  # noqa: E402

from embetter.plot import project, projection  # noqa: E402


def blobs(n_per=20, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5, size=(3, d))
    X = np.vstack([c + rng.normal(size=(n_per, d)) for c in centres])
    y = np.repeat(["a", "b", "c"], n_per)
    return X, y


def test_projection_returns_a_figure_with_one_series_per_label(tmp_path):
    X, y = blobs()
    fig = projection(X, y, title="three blobs")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "three blobs"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(X)
    fig.savefig(tmp_path / "blobs.png")
    assert (tmp_path / "blobs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_classes_fix_the_colour_of_a_label_across_plots():
    X, y = blobs()
    keep = y != "a"
    full = projection(X, y, classes=["a", "b", "c"])
    part = projection(X[keep], y[keep], classes=["a", "b", "c"])

    def colours(fig):
        ax = fig.axes[0]
        return {t.get_text(): tuple(c.get_facecolor()[0])
                for t, c in zip(ax.get_legend().get_texts(), ax.collections)}

    assert colours(part)["b"] == colours(full)["b"]
    assert colours(part)["c"] == colours(full)["c"]
    with pytest.raises(ValueError, match="not in classes"):
        projection(X, y, classes=["a", "b"])


def test_projection_without_labels_and_tiny_inputs():
    X, _ = blobs()
    assert len(projection(X).axes[0].collections) == 1
    assert project(np.ones((1, 5))).shape == (1, 2)  # one point: nothing to project
    assert project(np.arange(6.0).reshape(3, 2)).shape == (3, 2)
    two = project(np.random.RandomState(0).rand(2, 8), method="umap", random_state=0)
    assert two.shape == (2, 2) and np.isfinite(two).all() and not (two[0] == two[1]).all()
    single_feature = project(np.arange(4.0).reshape(4, 1))
    assert single_feature.shape == (4, 2) and (single_feature[:, 1] == 0).all()
    for method in ("tsne", "umap"):  # one feature is padded whatever the method
        one = project(np.arange(6.0).reshape(6, 1), method=method)
        assert one.shape == (6, 2) and (one[:, 1] == 0).all()


def test_pca_keeps_separated_blobs_apart_and_tsne_runs():
    X, y = blobs()
    P = project(X)
    centres = np.array([P[y == c].mean(axis=0) for c in "abc"])
    spread = max(P[y == c].std(axis=0).max() for c in "abc")
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i)]
    assert min(gaps) > 2 * spread
    small, _ = blobs(n_per=4)
    assert project(small, method="tsne", random_state=0).shape == (len(small), 2)


def test_umap_keeps_separated_blobs_apart_and_is_repeatable():
    pytest.importorskip("umap", reason="umap-learn is the umap extra (in dev)")
    X, y = blobs()
    P = project(X, method="umap", random_state=0)
    assert P.shape == (len(X), 2) and P.dtype == np.float32
    centres = np.array([P[y == c].mean(axis=0) for c in "abc"])
    spread = max(P[y == c].std(axis=0).max() for c in "abc")
    assert min(np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i)) > (
        2 * spread
    )
    np.testing.assert_array_equal(P, project(X, method="umap", random_state=0))
    assert projection(X, y, method="umap").axes[0].get_xlabel() == "UMAP 1"
    assert project(X[:3], method="umap").shape == (3, 2)  # too few points for a spectral start


def test_umap_falls_back_to_pca_and_says_so_once(monkeypatch):
    import embetter.plot

    monkeypatch.setitem(sys.modules, "umap", None)  # as without the umap extra
    monkeypatch.setattr(embetter.plot, "_said_no_umap", False)
    X, y = blobs()
    with pytest.warns(UserWarning, match=r"umap-learn is not installed.*embetter\[umap\]"):
        P = project(X, method="umap")
    np.testing.assert_array_equal(P, project(X, method="pca"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time stays quiet
        fig = projection(X, y, method="umap")
    assert fig.axes[0].get_xlabel() == "PC1"


def test_bad_input_is_named():
    X, y = blobs()
    with pytest.raises(ValueError, match="method must be one of"):
        projection(X, y, method="mds")
    with pytest.raises(ValueError, match="y has 3 entries"):
        projection(X, y[:3])
    with pytest.raises(ValueError, match="NaN"):
        projection(np.full((3, 2), np.nan))


def test_a_umap_map_leaves_torchs_threads_as_they_were():
    # numba's OpenMP layer, started by UMAP, raised the count torch reads (1 -> 2 here)
    pytest.importorskip("umap", reason="umap-learn is the umap extra (in dev)")
    import os
    import subprocess
    import sys

    code = ("import torch, numpy as np\n"
            "from embetter.plot import project\n"
            "before = torch.get_num_threads()\n"
            "project(np.random.default_rng(0).normal(size=(60, 8)), method='umap')\n"
            "print(before, torch.get_num_threads())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "1 1"


@pytest.mark.parametrize("seed", [-1, "abc", 1.5, np.random.default_rng(0)])
def test_a_bad_random_state_is_named_before_any_work(seed):
    X = np.random.default_rng(0).normal(size=(30, 6))
    for rows in (X, X[:1], np.ones((5, 3))):  # (the early returns too)
        with pytest.raises(ValueError, match="random_state must be"):
            project(rows, random_state=seed)
    assert project(X, random_state=np.random.RandomState(0)).shape == (30, 2)


def test_classes_with_a_label_twice_are_refused():
    X = np.random.default_rng(0).normal(size=(6, 4))
    with pytest.raises(ValueError, match=r"classes holds a label more than once: \['a'\]"):
        projection(X, list("ababab"), classes=["a", "b", "a"])
