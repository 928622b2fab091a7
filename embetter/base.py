"""Base class for stateless transformers."""

from __future__ import annotations

from sklearn.base import BaseEstimator, TransformerMixin


class EmbetterBase(TransformerMixin, BaseEstimator):
    """A stateless transformer: `fit` and `partial_fit` learn nothing and return `self`.

    Subclasses implement `transform`. Because nothing is learned, the estimator counts as
    fitted from the start (`check_is_fitted` passes, `requires_fit` is False), so it can be
    used on its own or as a step in any pipeline.
    """

    def fit(self, X, y=None):
        """No-op: a stateless transformer has nothing to learn."""
        return self

    def partial_fit(self, X, y=None, classes=None):
        """No-op: a stateless transformer has nothing to learn."""
        return self

    def __sklearn_is_fitted__(self):
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags


class ReadsTextsOnce:
    """`fit_transform` for an estimator whose `fit` reads the texts: an iterator of texts (a
    generator) is read once, into a list, so `transform` gets the texts `fit` learned from,
    not an exhausted iterator (and no rows). Put it before `TransformerMixin` in the bases."""

    def fit_transform(self, X, y=None, **fit_params):
        if not hasattr(X, "__len__") and hasattr(X, "__iter__"):
            X = list(X)
        return super().fit_transform(X, y, **fit_params)


class FitsPairs:
    """`fit_transform` for a learner whose `fit` takes pairs, `fit(X1, X2, y=None, ...)`:
    fit on them, then transform the first side (`TransformerMixin`'s takes `(X, y)` and
    cannot pass both sides). Put it before `TransformerMixin` in the bases."""

    def fit_transform(self, X1, X2, y=None, **fit_params):
        """Fit on the pairs `(X1[i], X2[i])` (with `y`, and `fit`'s keyword arguments), then
        return `transform(X1)`."""
        if not hasattr(X1, "__len__") and hasattr(X1, "__iter__"):
            X1 = list(X1)  # (a generator: fit reads it, transform reads it again)
        return self.fit(X1, X2, y, **fit_params).transform(X1)


def text_input_tags(tags):
    """Mark `tags` (from `__sklearn_tags__`) for an estimator that takes a 1-D list of texts."""
    tags.input_tags.string = True
    tags.input_tags.two_d_array = False
    tags.input_tags.one_d_array = True
    return tags
