"""Models that work on pairs of inputs."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, clone, is_regressor

# (at import, not inside fit: see embetter/_torch/fit.py)
from sklearn.linear_model import LogisticRegression
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from embetter._estimator_checks import all_or_nothing, check_steps_fitted, learns
from embetter._labels import as_labels
from embetter._validation import as_matrix


def _head_has(method: str):
    """For `available_if`: whether the head (fitted, else the one `fit` makes) has `method`,
    so `hasattr(clf, "predict_proba")` tells the truth, as for scikit-learn's own."""

    def check(self) -> bool:
        head = self.__dict__.get("clf_", self.clf_head)
        if head is None:  # the default LogisticRegression has both
            return True
        if not hasattr(head, method):
            raise AttributeError(f"clf_head {type(head).__name__} has no {method}; use "
                                 "predict, or a classifier that has it")
        return True

    return check


class DifferenceClassifier(ClassifierMixin, BaseEstimator):
    """Classify pairs `(x1, x2)` from `|enc(x1) - enc(x2)|`, for example "are these duplicates?".

    Arguments:
        enc: a transformer that turns one input into a vector (a `SentenceEncoder`, a
            pipeline, ...); `None` (the default): `SentenceEncoder()`, the bundled
            all-MiniLM-L6-v2, made in `fit`. Used as it is when stateless, and as a copy
            when fitted (refitting your encoder later leaves the classifier as it is); one
            that needs fitting is fitted, as a copy, on the texts of both sides. `clone`
            gives an unfitted copy, fitted there on both sides: wrap a fitted encoder in
            `sklearn.frozen.FrozenEstimator` to keep it across clones. A vectorizer's sparse
            output stays sparse for a head that takes sparse input.
        clf_head: the classifier trained on the absolute differences; default
            `LogisticRegression(class_weight="balanced")`, created in `fit`.

    Usage:

    ```python
    from embetter.model import DifferenceClassifier
    from embetter.text import SentenceEncoder

    X1 = ["a cat sits", "stocks fell", "I love pizza", "rain is coming"]
    X2 = ["a kitten sits", "markets dropped", "the train is late", "my phone broke"]
    clf = DifferenceClassifier(enc=SentenceEncoder()).fit(X1, X2, [1, 1, 0, 0])
    assert clf.predict_proba(X1, X2).shape == (4, 2)
    ```
    """

    def __init__(self, enc=None, clf_head=None):
        self.enc = enc
        self.clf_head = clf_head

    def _features(self, enc, X1, X2, head):
        E1, E2 = enc.transform(X1), enc.transform(X2)
        if sparse.issparse(E1) and sparse.issparse(E2) and _takes_sparse(head):
            # a vectorizer's, for a head that takes them so: kept sparse
            E1, E2 = (sparse.csr_matrix(E, dtype=np.float32) for E in (E1, E2))
        else:
            E1 = as_matrix(E1, "enc.transform(X1)", allow_empty=True)
            E2 = as_matrix(E2, "enc.transform(X2)", allow_empty=True)
        if E1.shape[0] != E2.shape[0]:
            raise ValueError(
                f"X1 and X2 must hold the same number of items, got {E1.shape[0]} and {E2.shape[0]}"
            )
        if E1.shape != E2.shape:
            raise ValueError(
                f"the encoder gave X1 and X2 embeddings of different widths ({E1.shape[1]} and "
                f"{E2.shape[1]}): give both sides the same kind of input")
        return abs(E1 - E2)  # (a sparse matrix's too)

    @all_or_nothing
    def fit(self, X1, X2, y):
        """Train the head on the absolute difference of the encoded pairs."""
        for name, given in (("enc", self.enc), ("clf_head", self.clf_head)):
            if isinstance(given, type):
                raise TypeError(f"{name} must be an instance, got the class {given.__name__}; "
                                f"pass {given.__name__}()")
        if self.enc is not None and not hasattr(self.enc, "transform"):
            raise TypeError(f"enc must be None or a transformer (an object with transform, "
                            f"such as SentenceEncoder()), got {type(self.enc).__name__}")
        if self.clf_head is not None and (
                not all(hasattr(self.clf_head, m) for m in ("fit", "predict"))
                or is_regressor(self.clf_head)):
            raise TypeError(f"clf_head must be None or a classifier (fit and predict), got "
                            f"{type(self.clf_head).__name__}")
        X1, X2 = _sized(X1, "X1"), _sized(X2, "X2")
        if self.enc is None:
            from embetter.text import SentenceEncoder

            self.enc_ = SentenceEncoder()
        else:
            self.enc_ = _fitted(self.enc, X1, X2)
        head = LogisticRegression(class_weight="balanced", max_iter=1000)
        head = clone(self.clf_head) if self.clf_head is not None else head
        features = self._features(self.enc_, X1, X2, head)
        y = as_labels(y, "y", n_samples=features.shape[0], counted="X1 and X2 hold {n} pairs")
        self.clf_ = head
        self.clf_.fit(features, y)
        self.classes_ = self.clf_.classes_
        return self

    def _encoder(self):
        check_is_fitted(self, "clf_")
        return self.__dict__.get("enc_", self.enc)  # a 0.10.0 pickle has no enc_

    def predict(self, X1, X2):
        features = self._features(self._encoder(), X1, X2, self.clf_)  # NotFittedError first
        if not features.shape[0]:  # no pairs: no predictions (the head refuses 0 rows)
            return self.classes_[:0]
        return self.clf_.predict(features)

    @available_if(_head_has("predict_proba"))
    def predict_proba(self, X1, X2):
        """Class probabilities of the pairs (a head with `predict_proba`)."""
        features = self._features(self._encoder(), X1, X2, self.clf_)
        if not features.shape[0]:
            return np.zeros((0, len(self.classes_)))
        return self.clf_.predict_proba(features)

    @available_if(_head_has("decision_function"))
    def decision_function(self, X1, X2):
        """The head's decision function of the pairs (a head with one)."""
        features = self._features(self._encoder(), X1, X2, self.clf_)
        if not features.shape[0]:
            return np.zeros((0,) if len(self.classes_) == 2 else (0, len(self.classes_)))
        return self.clf_.decision_function(features)

    def score(self, X1, X2, y, sample_weight=None):
        """Mean accuracy of `predict(X1, X2)` against `y`."""
        from sklearn.metrics import accuracy_score

        predicted = self.predict(X1, X2)
        y = as_labels(y, "y", n_samples=len(predicted), counted="X1 and X2 hold {n} pairs")
        return accuracy_score(y, predicted, sample_weight=sample_weight)


def _takes_sparse(head) -> bool:
    """Whether the head fits on a sparse matrix (its scikit-learn tags say so)."""
    from sklearn.utils import get_tags

    try:
        return bool(get_tags(head).input_tags.sparse)
    except Exception:  # not a scikit-learn estimator: dense, as before
        return False


def _sized(X, name: str):
    """A generator read once into a list (it is encoded, and maybe fitted on, twice); a
    pyarrow Array or ChunkedArray as the list of its values (its items are pyarrow scalars,
    not the texts an encoder fitted on both sides reads)."""
    if hasattr(X, "to_pylist") and hasattr(X, "null_count"):
        return X.to_pylist()
    if hasattr(X, "__len__"):
        return X
    if X is None or isinstance(X, (str, bytes)) or not hasattr(X, "__iter__"):
        raise TypeError(f"{name} must be a collection of items (texts, rows), got "
                        f"{type(X).__name__}")
    return list(X)


def _ndim(X) -> int:
    """How many dimensions `X` has as a table; 1 for items numpy cannot stack (token lists)."""
    if hasattr(X, "ndim"):
        return int(X.ndim)
    try:
        return int(np.ndim(X))
    except ValueError:
        return 1


def _one_column(X):
    """An `(n, 1)` array or a one-column frame as 1-D; anything else as it is."""
    if _ndim(X) == 2 and np.shape(X)[1] == 1:
        return X.iloc[:, 0] if hasattr(X, "iloc") else np.asarray(X)[:, 0]
    return X


def _fitted(enc, X1, X2):
    """`enc` itself when it learns nothing, a copy of it when it is fitted (refitting the
    caller's object later must not change this classifier), else a copy fitted on both
    sides."""
    import copy

    from sklearn.exceptions import NotFittedError

    if not hasattr(enc, "get_params"):  # not a scikit-learn estimator: used as it is
        return enc
    try:
        check_steps_fitted(enc)
        return copy.deepcopy(enc) if learns(enc) else enc
    except NotFittedError:
        if _ndim(X1) != _ndim(X2):  # texts on one side, a one-column table on the other
            X1, X2 = _one_column(X1), _one_column(X2)
            if _ndim(X1) != _ndim(X2):
                raise ValueError(
                    "X1 and X2 must hold their items in the same form to fit the encoder on "
                    f"both, got shapes {np.shape(X1)} and {np.shape(X2)}") from None
        if hasattr(X1, "iloc") and hasattr(X2, "iloc") and X1.ndim == X2.ndim:
            import pandas as pd

            # frames keep their columns, matched by name (an encoder reads them by name);
            # only frames whose names differ, as many on each side, go by position
            if (X1.ndim == 2 and X1.shape[1] == X2.shape[1]
                    and set(X1.columns) != set(X2.columns)):
                X2 = X2.set_axis(X1.columns, axis=1)
            both = pd.concat([X1, X2], ignore_index=True)
        elif hasattr(X1, "shape"):
            both_sparse = sparse.issparse(X1) and sparse.issparse(X2)
            A, B = (X1, X2) if both_sparse else (np.asarray(X1), np.asarray(X2))
            if A.shape[1:] != B.shape[1:]:
                raise ValueError(
                    "X1 and X2 must hold their items in the same form to fit the encoder on "
                    f"both, got shapes {A.shape} and {B.shape}") from None
            both = sparse.vstack([A, B]) if both_sparse else np.concatenate([A, B])
        elif isinstance(X1, Mapping) and isinstance(X2, Mapping):  # dicts of columns
            both = {k: list(X1[k]) + list(X2[k]) for k in X1 if k in X2}
        else:
            both = list(X1) + list(X2)
        return clone(enc).fit(both)
    except TypeError:  # not an estimator: used as it is
        return enc
