"""Pictures of an embedding space: a 2-D projection coloured by label.

matplotlib is an optional extra (`pip install 'embetter[plot]'`); it is imported only when a
picture is drawn, so `import embetter.plot` always works. So is umap-learn
(`pip install 'embetter[umap]'`): without it `method="umap"` projects with PCA, and says so once.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings

import numpy as np

# (at import, not at the first projection: see embetter/_torch/fit.py)
from sklearn.decomposition import PCA

from embetter._labels import as_labels
from embetter._validation import as_matrix, as_random_state, is_missing

METHODS = ("pca", "tsne", "umap")
_AXIS = {"pca": "PC", "tsne": "t-SNE ", "umap": "UMAP "}
_said_no_umap = False


def _method_to_use(method: str) -> str:
    """`method`, or `"pca"` for `"umap"` when umap-learn is not installed (warned once)."""
    global _said_no_umap
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if method != "umap" or importlib.util.find_spec("umap") is not None:
        return method
    if not _said_no_umap:
        _said_no_umap = True
        warnings.warn("umap-learn is not installed, so the projection uses PCA instead; "
                      "install it with `pip install 'embetter[umap]'`", UserWarning, stacklevel=3)
    return "pca"


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "embetter.plot needs matplotlib, which is not installed; "
            "install it with `pip install 'embetter[plot]'`"
        ) from e
    return Figure


def method_for(method: str, shape) -> str:
    """The method `project` runs on rows of `shape`: PCA where UMAP has no neighbour besides
    a point's own (under 3 rows) and with one feature (its values are the first axis)."""
    n, d = shape
    return "pca" if (method == "umap" and n < 3) or d == 1 else method


def project(X, method: str = "pca", random_state=0) -> np.ndarray:
    """Project the rows of `X` to 2-D with PCA, t-SNE or UMAP; returns a float32 `(n, 2)` array.

    Arguments:
        X: a 2-D array of embeddings, one row per item.
        method: `"pca"` (fast, linear, shows the large-scale layout), `"tsne"` (slower,
            shows local neighbourhoods) or `"umap"` (local neighbourhoods and more of the
            global layout, on cosine distance; needs umap-learn, else PCA with a warning).
        random_state: seed for t-SNE, UMAP and PCA's randomized solver (used on larger inputs).

    Usage:

    ```python
    import numpy as np
    from embetter.plot import project

    X = np.eye(5, 8)
    assert project(X).shape == (5, 2)
    ```
    """
    method = _method_to_use(method)
    X = as_matrix(X)
    as_random_state(random_state)  # (checked before any work; passed on as given)
    n, d = X.shape
    out = np.zeros((n, 2), dtype=np.float32)
    # With a single row or a single feature there is no second axis to find: pad with zeros.
    k = min(2, n, d)
    if k == 0 or n < 2:
        return out
    if not np.ptp(X, axis=0).any():  # every row the same: one place (t-SNE would crash)
        return out
    method = method_for(method, X.shape)
    if method == "pca":
        # a seed for the randomized solver PCA picks on larger inputs (the global one otherwise)
        out[:, :k] = PCA(n_components=k, random_state=random_state).fit_transform(X)
    elif method == "umap":
        out[:, :] = _umap(X, random_state)
    else:
        from sklearn.manifold import TSNE

        # perplexity must stay below the number of points
        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        out[:, :] = TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=random_state
        ).fit_transform(X)
    return out


def _umap(X: np.ndarray, random_state) -> np.ndarray:
    # numba's OpenMP layer, started by UMAP, may raise the process's OpenMP threads, which a
    # torch already loaded reads: its count is put back too
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    import numba
    import umap

    n = X.shape[0]
    threads = numba.get_num_threads()  # UMAP sets 1 and restores it only when it succeeds
    with warnings.catch_warnings():
        # a seed makes UMAP single-threaded; it says so on every call, and we chose it
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        reducer = umap.UMAP(
            n_components=2, metric="cosine", n_neighbors=max(2, min(15, n - 1)),
            # the spectral start needs more points than dimensions to find its eigenvectors
            init="spectral" if n > 10 else "random", random_state=random_state,
        )
        try:
            return reducer.fit_transform(X)
        finally:
            numba.set_num_threads(threads)
            if torch_threads is not None and torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)


def _check_figure_params(figsize, point_size) -> None:
    """`projection`'s figure settings, checked before any work (matplotlib's own errors
    would come from deep inside it, after the projection)."""
    def positive(v) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
            v, bool) and np.isfinite(v) and v > 0

    if (isinstance(figsize, (str, bytes)) or np.ndim(figsize) != 1 or len(figsize) != 2
            or not all(positive(v) for v in figsize)):
        raise ValueError(f"figsize must be (width, height) in inches, two positive numbers, "
                         f"got {figsize!r:.80}")
    if not positive(point_size):
        raise ValueError(f"point_size must be a positive number (the marker area), got "
                         f"{point_size!r:.80}")


def projection(
    X,
    y=None,
    title: str | None = None,
    method: str = "pca",
    random_state=0,
    classes=None,
    figsize=(6.0, 5.0),
    point_size: float = 14.0,
):
    """Draw a 2-D projection (PCA by default) of embeddings, coloured by label.

    Returns a matplotlib `Figure` (not registered with pyplot, so it never shows twice in a
    notebook and is safe on a headless machine): display it in a notebook by leaving it as
    the cell's value, or save it with `fig.savefig("space.png")`.

    Arguments:
        X: a 2-D array of embeddings, one row per item.
        y: optional labels, one per row (any hashable values); points are coloured by label.
            Rows without one (None, NaN, pd.NA: a pool labelled in part) show in grey.
        title: the figure's title.
        method: `"pca"`, `"tsne"` or `"umap"`, see `project`.
        random_state: seed for t-SNE and UMAP.
        classes: the labels in legend order; pass the same list to several plots so that a
            label keeps its colour across them (default: the sorted labels present in `y`).
        figsize: the figure size in inches.
        point_size: the marker area.

    Usage:

    ```python
    from embetter.plot import projection
    from embetter.text import SentenceEncoder

    texts = ["my card never arrived", "where is my new card", "the exchange rate is bad",
             "why this conversion rate", "my top-up failed", "top up did not work"]
    labels = ["card", "card", "rate", "rate", "topup", "topup"]
    X = SentenceEncoder().transform(texts)
    fig = projection(X, labels, title="raw MiniLM embeddings")
    fig.savefig("space.png")
    ```
    """
    _check_figure_params(figsize, point_size)
    method = _method_to_use(method)
    points = project(X, method=method, random_state=random_state)
    ran = method_for(method, np.shape(X))  # PCA where the method asked for cannot run
    Figure = _figure_class()
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    if y is None:
        ax.scatter(points[:, 0], points[:, 1], s=point_size, alpha=0.8, linewidths=0)
    else:
        # a pool labelled in part (a labelling session): the rest shows in grey
        values = list(y.to_numpy() if hasattr(y, "to_numpy") else y)
        unlabelled = np.array([is_missing(v) for v in values], dtype=bool)
        if len(values) != points.shape[0] or not unlabelled.any():
            # (the values read: a generator given as y is spent)
            y = as_labels(y if hasattr(y, "__len__") else values, "y",
                          n_samples=points.shape[0])
            unlabelled = None
        else:
            ax.scatter(points[unlabelled, 0], points[unlabelled, 1], s=point_size, alpha=0.5,
                       linewidths=0, color="lightgrey", label="(unlabelled)")
            y = np.full(len(values), None, dtype=object)
            known = as_labels([v for v, m in zip(values, unlabelled) if not m], "y")
            if known.dtype.kind == "f" and (known == np.round(known)).all():
                known = known.astype(np.int64)  # integer labels with gaps were read as floats
            y[~unlabelled] = known
        present = list(np.unique(y if unlabelled is None else y[~unlabelled]))
        if classes is not None and (isinstance(classes, (str, bytes))
                                    or not hasattr(classes, "__iter__")):
            raise TypeError(f"classes must be a list of labels (legend order) or None, got "
                            f"{classes!r:.60}")
        order = present if classes is None else list(classes)
        if len(set(order)) != len(order):  # (a label twice: drawn twice, in another colour)
            twice = [c for i, c in enumerate(order) if c in order[:i]]
            raise ValueError(f"classes holds a label more than once: {twice[:5]!r}")
        missing = [c for c in present if c not in order]
        if missing:
            raise ValueError(f"y holds labels that are not in classes: "
                             f"{np.asarray(missing[:5]).tolist()}")
        cmap = _colormap(len(order))
        for i, label in enumerate(order):
            mask = y == label
            if unlabelled is not None:
                mask &= ~unlabelled
            if not mask.any():
                continue
            ax.scatter(points[mask, 0], points[mask, 1], s=point_size, alpha=0.8,
                       linewidths=0, color=cmap(i), label=str(label))
        ax.legend(loc="best", fontsize="small", markerscale=1.5, framealpha=0.8)
    axis = _AXIS[ran]
    ax.set_xlabel(f"{axis}1")
    ax.set_ylabel(f"{axis}2")
    if title:
        ax.set_title(title)
    return fig


def _colormap(n: int):
    from matplotlib import colormaps

    # tab10/tab20 keep neighbouring classes distinct; beyond 20 a continuous map is the best
    # we can do.
    if n <= 10:
        return colormaps["tab10"]
    if n <= 20:
        return colormaps["tab20"]
    base = colormaps["viridis"]
    return lambda i: base(i / max(1, n - 1))
