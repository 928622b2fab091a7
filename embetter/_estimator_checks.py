"""Checks an estimator makes around its training calls: labels against a stream's classes,
`n_features_in_` bookkeeping, `y` required, and a failed call leaving the estimator as it was.

Also the one import of scikit-learn's parameter constraints (`Interval`, `StrOptions`, for
`_parameter_constraints`): they live in a private module, with no public home (1.8), so a
move there is mended here alone."""

from __future__ import annotations

import functools

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions  # noqa: F401 (see above)

from embetter._labels import as_labels
from embetter._validation import as_matrix


def refuse_bool_numbers(estimator) -> None:
    """After sklearn's parameter checks: a bool given for a number is refused (its `Interval`
    takes `True` for 1, so `epochs=True` would train one epoch and `learning_rate=True` at
    1.0), unless the parameter takes booleans too."""
    for name, constraints in estimator._parameter_constraints.items():
        value = getattr(estimator, name, None)
        if (isinstance(value, (bool, np.bool_)) and isinstance(constraints, list)
                and "boolean" not in constraints
                and any(isinstance(c, Interval) for c in constraints)):
            raise TypeError(f"{type(estimator).__name__}: {name} must be a number, "
                            f"got the bool {value!r}")


def check_stream_classes(classes, known: np.ndarray) -> None:
    """`classes=` given again on a later `partial_fit` call: the first call's classes."""
    if classes is not None and not np.array_equal(
            np.unique(as_labels(classes, "classes")), known):
        raise ValueError(
            f"classes={np.unique(classes).tolist()[:10]} differs from the classes this "
            f"stream started with (fit, or the first partial_fit call) {known.tolist()[:10]}")


def check_stream_settled(estimator, settled: dict, as_settled=None) -> None:
    """Refuse a stream's later call after `set_params` changed a parameter its start settled
    (`settled`: name -> value then): it would be ignored until a retrain, which would then
    take it silently in mid-stream (the output width, the loss...). `as_settled(name)`: the
    parameter now, in the form its start kept (default: as set)."""
    for name, value in settled.items():
        now = getattr(estimator, name) if as_settled is None else as_settled(name)
        if now is not value and now != value:
            raise ValueError(
                f"{name} was set to {getattr(estimator, name)!r:.80} since this stream "
                f"started with {value!r:.80}; partial_fit continues that stream: call fit to "
                f"start again with the new {name}, or set it back")


def plain_scalar(value):
    """A numpy scalar as the Python value it holds (for messages: 'a', not np.str_('a'))."""
    return value.item() if isinstance(value, np.generic) else value


def first_classes(y, classes, owner: str, incremental: bool) -> np.ndarray:
    """The classes a fresh start learns: those of `classes=` if given, else of `y`; at least
    two (a stream's later batches could never bring another)."""
    found = np.unique(y if classes is None else as_labels(classes, "classes"))
    if found.size >= 2:
        return found
    if incremental:
        raise ValueError(f"partial_fit needs at least two classes, got {found.tolist()}; "
                         "pass all labels of the stream with classes=...")
    raise ValueError(f"y has only one class ({plain_scalar(found[0])!r}); {owner} needs at "
                     "least two classes to learn from")


def check_label_columns(classes, n_columns: int) -> None:
    """Multi-label y (one 0/1 column per label) with `classes=`: one class per column (or
    one array of values per column, as MultiOutputClassifier takes them), or the 0/1
    values themselves (at most two, each 0 or 1)."""
    if classes is None:
        return
    size = len(classes) if hasattr(classes, "__len__") else np.size(classes)
    if size == n_columns:
        return
    values = list(classes) if hasattr(classes, "__iter__") else [classes]
    binary = (size <= 2 and all(np.ndim(v) == 0 and v in (0, 1) for v in values)
              and len(set(values)) == size)
    if not binary:
        raise ValueError(f"classes lists {size} labels, but y has {n_columns} label columns "
                         "(multi-label y: one 0/1 column per label)")


def require_y(estimator, y) -> None:
    """A supervised estimator called without labels: say so in the words sklearn uses."""
    if y is None:
        raise ValueError(
            f"{type(estimator).__name__} requires y to be passed, but the target y is None"
        )


def check_estimator_input(estimator, X, *, reset: bool, allow_empty: bool = False,
                          name: str = "X") -> np.ndarray:
    """`as_matrix` plus the sklearn bookkeeping of a fitted estimator.

    With `reset=True` (in `fit`) it records `n_features_in_` and, for a DataFrame,
    `feature_names_in_`; otherwise it checks X against them, with sklearn's messages.
    """
    from sklearn.utils.validation import validate_data

    arr = as_matrix(X, name, allow_empty=allow_empty)
    validate_data(estimator, X, reset=reset, skip_check_array=True)
    return arr


def all_or_nothing(method):
    """Decorates an estimator's training call: one that raises (an input refused half-way
    through its checks, a training interrupted) leaves the estimator's attributes as they were
    before the call, unfitted or fitted, never half-recorded (a `classes_` without a model, a
    new `n_features_in_` beside the old model). What a `partial_fit` changes in place (the
    weights and records of a head, an SBERT model's served weights) its estimator puts back
    itself (the heads: `embetter._torch.rollback`)."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        before = dict(self.__dict__)
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    return call


def check_steps_fitted(enc, lenient: bool = False, _before_last: bool = False) -> None:
    """`check_is_fitted` of every step that learns, inside pipelines, feature unions and disk
    caches (scikit-learn's looks at a pipeline's last step only: an unfitted vectorizer
    before a stateless `Normalizer` passed). `lenient`: a step before a pipeline's last one
    (wrapped or not) is judged only where its fitted state can be read: scikit-learn's,
    embetter's, one with `__sklearn_is_fitted__` (a stateless class of the user's shows no
    fitted attribute, and scikit-learn's check calls it unfitted; so would it an unfitted
    one of the user's, which the lenient check then lets through)."""
    from sklearn.utils.validation import check_is_fitted

    parts = _parts(enc)
    if parts is None:
        if not (lenient and _before_last and not _judged(enc)):
            check_is_fitted(enc)
        return
    for k, part in enumerate(parts):
        before_last = _before_last or (_is_pipeline(enc) and k < len(parts) - 1)
        if learns(part):
            check_steps_fitted(part, lenient, before_last)


def learns(enc) -> bool:
    """Whether `enc` holds fitted state (a pipeline, a feature union or a disk cache: whether
    a part of it does; a pipeline of stateless steps, such as a grabber and a sentence model,
    holds none)."""
    from sklearn.utils import get_tags

    parts = _parts(enc)
    if parts is not None:
        return any(learns(part) for part in parts)
    return bool(get_tags(enc).requires_fit)


def _is_pipeline(enc) -> bool:
    from sklearn.pipeline import Pipeline

    return isinstance(enc, Pipeline)


def _parts(enc):
    """The estimators `enc` is made of (a pipeline's steps, a feature union's transformers, a
    disk cache's encoder), None for any other estimator."""
    from sklearn.pipeline import FeatureUnion, Pipeline

    from embetter._cache import CachedEncoder

    if isinstance(enc, Pipeline):
        steps = [step for _, step in enc.steps]
    elif isinstance(enc, FeatureUnion):
        steps = [step for _, step in enc.transformer_list]
    elif isinstance(enc, CachedEncoder):
        steps = [enc.encoder]
    else:
        return None
    return [step for step in steps if step is not None and not isinstance(step, str)]


def _judged(step) -> bool:
    """Whether `check_is_fitted` can tell if `step` is fitted."""
    return (type(step).__module__.split(".")[0] in ("sklearn", "embetter")
            or hasattr(step, "__sklearn_is_fitted__"))
