"""Models that work on pairs of inputs."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from embetter._validation import as_labels, as_matrix


class DifferenceClassifier(ClassifierMixin, BaseEstimator):
    """Classify pairs `(x1, x2)` from `|enc(x1) - enc(x2)|`, for example "are these duplicates?".

    Arguments:
        enc: any fitted or stateless transformer that turns one input into a vector
            (a `SentenceEncoder`, a pipeline, ...).
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

    def __init__(self, enc, clf_head=None):
        self.enc = enc
        self.clf_head = clf_head

    def _features(self, X1, X2):
        E1 = as_matrix(self.enc.transform(X1), "enc.transform(X1)", allow_empty=True)
        E2 = as_matrix(self.enc.transform(X2), "enc.transform(X2)", allow_empty=True)
        if E1.shape != E2.shape:
            raise ValueError(
                f"X1 and X2 must hold the same number of items, got {E1.shape[0]} and {E2.shape[0]}"
            )
        return np.abs(E1 - E2)

    def fit(self, X1, X2, y):
        """Train the head on the absolute difference of the encoded pairs."""
        from sklearn.linear_model import LogisticRegression

        features = self._features(X1, X2)
        y = as_labels(y, "y", n_samples=features.shape[0])
        head = LogisticRegression(class_weight="balanced", max_iter=1000)
        self.clf_ = clone(self.clf_head) if self.clf_head is not None else head
        self.clf_.fit(features, y)
        self.classes_ = self.clf_.classes_
        return self

    def predict(self, X1, X2):
        check_is_fitted(self, "clf_")
        return self.clf_.predict(self._features(X1, X2))

    def predict_proba(self, X1, X2):
        check_is_fitted(self, "clf_")
        return self.clf_.predict_proba(self._features(X1, X2))
