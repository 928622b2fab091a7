"""LabellingLoop: label a pool in rounds, learning from each round with partial_fit."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags

from embetter._validation import as_positions, as_random_state, is_missing
from embetter.label._coverage import coverage_pick
from embetter.label._strategies import kcenter_greedy
from embetter.label._suggest import (
    as_space,
    check_k,
    check_strategy,
    checked_proba,
    pick,
    pool_size,
)


def _counts(head) -> bool:
    """A classifier whose `partial_fit` adds counts up (naive Bayes): given every label again
    each round it would count the early ones once per round, so it is refitted instead."""
    from sklearn.naive_bayes import (
        BernoulliNB,
        CategoricalNB,
        ComplementNB,
        GaussianNB,
        MultinomialNB,
    )

    return isinstance(head, (BernoulliNB, CategoricalNB, ComplementNB, GaussianNB, MultinomialNB))


def _numeric(pool) -> bool:
    """Whether the pool is a numeric matrix (embeddings) rather than texts or records."""
    if hasattr(pool, "toarray"):
        return True
    try:
        return np.asarray(pool).dtype.kind in "biuf"
    except (TypeError, ValueError):
        return False


#: sklearn's modules whose transformers learn from X alone (decompositions, text vectorisers,
#: scalers), as long as their tags ask for no y (TargetEncoder does)
_UNSUPERVISED_MODULES = ("sklearn.decomposition", "sklearn.feature_extraction",
                         "sklearn.preprocessing", "sklearn.random_projection")


def _unsupervised(step) -> bool:
    """A step known to learn from X alone (LiteTextEncoder's TF-IDF, a PCA): fitted once on
    the whole pool, not on the few rows labelled so far. Known, not guessed: a step without
    tags (or a selector, a nested pipeline holding a tuner) may need the labels."""
    from embetter.text import LiteTextEncoder, TextEncoder
    from embetter.utils import CachedEncoder

    if isinstance(step, CachedEncoder):  # what it wraps decides (`cached(LiteTextEncoder())`)
        return _unsupervised(step.encoder)
    if isinstance(step, LiteTextEncoder) or (isinstance(step, TextEncoder)
                                             and step.train_on_fit is True):
        return True
    parts = _parts(step)
    if parts is not None:  # a pipeline, union or column transformer of such steps (or of
        # stateless ones: fitted once, it records its columns)
        return all(_stateless(part) or _unsupervised(part) for part in parts)
    if not type(step).__module__.startswith(_UNSUPERVISED_MODULES):
        return False
    try:
        return get_tags(step).target_tags.required is False
    except Exception:
        return False


def _parts(step):
    """The steps inside a composite step (`Pipeline`, `FeatureUnion`, `ColumnTransformer`),
    or None for any other step."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion

    if isinstance(step, Pipeline):
        return [part for _, part in step.steps]
    if isinstance(step, FeatureUnion):
        return [part for _, part in step.transformer_list if part != "drop"]
    if isinstance(step, ColumnTransformer):
        remainder = [] if isinstance(step.remainder, str) else [step.remainder]
        return [part for _, part, _ in step.transformers if part != "drop"] + remainder
    return None


def _stateless(step) -> bool:
    """A step that learns nothing (an encoder, a column grabber): its output can be cached."""
    if step in (None, "passthrough"):
        return True
    try:
        return get_tags(step).requires_fit is False
    except Exception:  # an object without sklearn tags learns, as far as we know
        return False


class LabellingLoop:
    """Label a pool in rounds: suggest the next rows, learn from their labels, suggest again.

    The pipeline's leading steps that learn no labels are applied to the pool once, when the
    loop is made: the stateless ones (grabbers, pretrained encoders) as they are, and those
    that learn from the texts alone (`LiteTextEncoder`, `TextEncoder(train_on_fit=True)`, a
    `PCA`) fitted on the whole pool first, and so are pipelines, unions and column
    transformers made of such steps; their output (`embeddings_`) is reused by every round. Each
    `update` then trains the rest of the pipeline with the new labels: every tuner
    continues with `partial_fit` on the new rows (its replay memory keeps the earlier ones
    in play), and the classifier continues with `partial_fit` on every label seen so far,
    in the space the tuners give now (the tuners moved it); a classifier without
    `partial_fit`, one whose `partial_fit` adds counts up (naive Bayes), or one with
    `class_weight="balanced"` (refused in `partial_fit`) is refitted on them instead. Other
    learned steps without `partial_fit` are refitted on every label seen.

    Arguments:
        model: a classifier with `predict_proba`, or a pipeline ending in one (typically
            encoder -> tuner -> SGDClassifier(loss="log_loss")). It is cloned: the loop
            trains its own copy, `model_`.
        X: the pool of texts or rows (whatever `model` takes).
        classes: every label the rounds may bring.
        strategy: how `suggest` picks (see `embetter.label.suggest`). Until the classifier
            is first fitted (no labels yet, or labels of one class only) there are no
            probabilities to read: `"auto"` and `"kcenter"` pick by diversity alone in the
            pool's embeddings (at random when a learned step, such as `SbertTuner`, embeds
            the texts itself), `"margin"` and `"entropy"` at random.
        random_state: seed for the suggestions (set the tuners' own `random_state` too for
            a repeatable run).

    Usage:

    ```python
    from sklearn.linear_model import SGDClassifier
    from embetter.label import LabellingLoop

    X = [[0.0, 0.1], [0.2, 0.0], [5.0, 5.1], [5.2, 4.9], [2.5, 2.6], [0.1, 0.3], [4.8, 5.0]]
    truth = ["a", "a", "b", "b", "b", "a", "b"]
    loop = LabellingLoop(SGDClassifier(loss="log_loss", random_state=0), X,
                         classes=["a", "b"], random_state=0)
    for _ in range(2):
        picks = loop.suggest(k=2)
        loop.update(picks, [truth[i] for i in picks])
    print(len(loop.labelled_), loop.model_.predict([[5.0, 5.0]]))
    ```
    """

    def __init__(self, model, X, classes, *, strategy: str = "auto", random_state=None):
        if not hasattr(model, "predict_proba") and not hasattr(model, "steps"):
            raise TypeError(
                f"model must be a classifier with predict_proba (or a pipeline ending in one), "
                f"got {type(model).__name__}"
            )
        self.model = model
        self.classes = classes
        self.strategy = check_strategy(strategy)
        self.random_state = random_state
        self.classes_ = self._check_classes(classes)
        self.model_ = clone(model)
        steps = self.model_.steps if isinstance(self.model_, Pipeline) else [("model", self.model_)]
        if not hasattr(steps[-1][1], "predict_proba"):
            raise TypeError(
                f"the last step of model must have predict_proba, got "
                f"{type(steps[-1][1]).__name__}; e.g. SGDClassifier(loss='log_loss')"
            )
        n_frozen = 0
        while n_frozen < len(steps) - 1 and (_stateless(steps[n_frozen][1])
                                             or _unsupervised(steps[n_frozen][1])):
            n_frozen += 1
        self._learned = [step for _, step in steps[n_frozen:] if step not in (None, "passthrough")]
        self.n_pool_ = pool_size(X)
        if self.n_pool_ == 0:
            raise ValueError("X (the pool to label) is empty")
        frozen = [step for _, step in steps[:n_frozen] if step not in (None, "passthrough")]
        Z = X  # the leading steps that learn no labels: fitted once on the pool, then frozen
        for step in frozen:
            Z = step.transform(Z) if _stateless(step) else step.fit_transform(Z)
        if sp.issparse(Z) and Z.format not in ("csr", "csc"):  # (COO and others: no rows to
            Z = Z.tocsr()  # index as each round's labels are read back)
        self.embeddings_ = Z
        self.labelled_ = np.zeros(0, dtype=np.intp)
        self.labels_ = np.zeros(0, dtype=self.classes_.dtype)
        self.fitted_ = False
        self._rng = as_random_state(random_state)

    @staticmethod
    def _check_classes(classes) -> np.ndarray:
        if classes is None:
            raise ValueError("classes must list every label the rounds may bring (at least "
                             "two), got None")
        if isinstance(classes, (str, bytes, Mapping)) or not hasattr(classes, "__iter__"):
            raise TypeError(f"classes must be a list of labels (at least two), got "
                            f"{type(classes).__name__} {classes!r:.60}")
        if isinstance(classes, (set, frozenset)):  # no order of its own: np.unique sorts
            classes = list(classes)
        source = classes.to_numpy() if hasattr(classes, "to_numpy") else classes
        arr = np.asarray(source)
        if arr.ndim != 1 or arr.size < 2:
            raise ValueError(
                f"classes must list every label the rounds may bring (at least two), got "
                f"{arr.tolist()[:10] if arr.ndim == 1 else arr.shape}"
            )
        missing = [c for c in arr.tolist() if is_missing(c)]
        if missing:
            raise ValueError(f"classes must not hold a missing value, got {missing[0]!r} in "
                             f"{arr.tolist()[:10]}")
        values = np.asarray(source, dtype=object).ravel().tolist()  # (as given: np.asarray
        # turned a list's ints into strings beside a string)
        if any(isinstance(c, bytes) for c in values):  # (a classifier refuses them later)
            raise TypeError(f"classes must be strings or numbers, got bytes in {values[:10]}; "
                            "decode them")
        unique, mixed = None, len({isinstance(c, str) for c in values}) > 1
        if not mixed:
            try:
                unique = np.unique(arr)
            except TypeError:  # another unorderable mix
                mixed = True
        if mixed:
            raise ValueError(f"classes must be all strings or all numbers, got "
                             f"{sorted({type(c).__name__ for c in values})} in {values[:10]}")
        if unique.size != arr.size:
            raise ValueError(f"classes holds a label more than once: {arr.tolist()[:10]}")
        return unique

    def _head(self, Z):
        """The pool (or some of its rows) in the space the classifier sees now."""
        for step in self._learned[:-1]:
            Z = step.transform(Z)
        return Z

    def _rows(self, positions):
        Z = self.embeddings_
        if hasattr(Z, "iloc"):
            return Z.iloc[positions]
        if isinstance(Z, (list, tuple)):
            return [Z[i] for i in positions]
        return Z[positions]

    def suggest(self, k: int = 10) -> np.ndarray:
        """The positions (into the pool) of the next `k` rows to label; never a labelled one."""
        k = check_k(k)
        self.strategy = check_strategy(self.strategy)  # it may have been set since
        candidates = np.setdiff1d(np.arange(self.n_pool_, dtype=np.intp), self.labelled_)
        if k > candidates.size:
            raise ValueError(
                f"k={k} is larger than the rest of the pool: {candidates.size} of "
                f"{self.n_pool_} rows are not labelled yet"
            )
        if self.strategy == "random":  # (the model is not asked: no pool pass for nothing)
            return self._rng.choice(candidates, size=k, replace=False).astype(np.intp)
        if not self.fitted_:  # nothing learned yet: no probabilities to read
            if self.strategy in ("margin", "entropy") or not _numeric(self.embeddings_):
                # (texts that a learned step embeds have no space to measure before it learns)
                return self._rng.choice(candidates, size=k, replace=False).astype(np.intp)
            Z = as_space(self.embeddings_, self.strategy)
            if self.strategy == "kcenter":
                return kcenter_greedy(Z, candidates, self.labelled_, k, self._rng)
            # (labels of one class so far, or none: the regions they leave uncovered)
            return coverage_pick(Z, candidates, self.labelled_, k, self._rng)
        Z = self._head(self.embeddings_)
        proba = checked_proba(self._learned[-1].predict_proba(Z), self.n_pool_)
        return pick(self.strategy, proba, Z, k, candidates, self.labelled_, self._rng)

    def update(self, positions, labels) -> LabellingLoop:
        """Learn from one round of labels: `labels[i]` is the label of pool row `positions[i]`.

        The round's labels are recorded once its training succeeded: after an error they are
        not, so the same round can be given again (steps that trained before the error keep
        what they learned; undoing that would mean copying a fine-tuned sentence model every
        round)."""
        positions = as_positions(positions, self.n_pool_, "positions")
        labels = labels.to_numpy() if hasattr(labels, "to_numpy") else labels
        # before numpy reads them: it turns a NaN among strings into 'nan', and pd.NA breaks
        # the class check ("boolean value of NA is ambiguous")
        if not isinstance(labels, (str, bytes)) and hasattr(labels, "__iter__"):
            missing = next((i for i, v in enumerate(labels)
                            if np.ndim(v) == 0 and is_missing(v)), None)
            if missing is not None:
                raise ValueError(f"labels[{missing}] is missing: give every position its "
                                 "label, or leave the position out")
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != positions.shape[0]:
            raise ValueError(
                f"labels must hold one label per position: {positions.shape[0]} positions, "
                f"labels of shape {labels.shape}"
            )
        outside = labels[~np.isin(labels, self.classes_)]
        if outside.size:
            unknown = sorted({repr(v.item() if hasattr(v, "item") else v) for v in outside})
            hint = ""
            if {type(v) for v in outside.tolist()} != {
                    type(c) for c in self.classes_.tolist()}:
                hint = (f" (labels of type {type(outside.tolist()[0]).__name__}, classes of "
                        f"type {type(self.classes_.tolist()[0]).__name__}: convert one)")
            raise ValueError(
                f"labels outside classes: {', '.join(unknown[:5])}; classes are "
                f"{self.classes_.tolist()[:10]}{hint}"
            )
        again = np.intersect1d(positions, self.labelled_)
        if again.size:
            shown = again[:10].tolist()
            more = f" (and {again.size - 10} more)" if again.size > 10 else ""
            raise ValueError(f"{again.size} of the positions are labelled already: "
                             f"{shown}{more}")
        if positions.size == 0:
            return self
        labelled = np.concatenate([self.labelled_, positions])
        known = np.concatenate([self.labels_, labels.astype(self.labels_.dtype)])
        # recorded only once the round trained: a failed round can be retried as it is
        fitted = self._train(self._rows(positions), labels, self._rows(labelled), known)
        self.labelled_, self.labels_ = labelled, known
        self.fitted_ = self.fitted_ or fitted
        return self

    def _train(self, new, labels, seen, known) -> bool:
        """One round's training (see `update`); whether the classifier could be fitted."""
        for step in self._learned[:-1]:
            if hasattr(step, "partial_fit"):
                step.partial_fit(new, labels, **self._classes_for(step))
            else:
                step.fit(seen, known)
            new, seen = step.transform(new), step.transform(seen)
        head = self._learned[-1]
        # (scikit-learn refuses class_weight="balanced" in partial_fit: the loop holds every
        # label, so such a head is fitted on them all instead)
        if (hasattr(head, "partial_fit") and not _counts(head)
                and getattr(head, "class_weight", None) != "balanced"):
            head.partial_fit(seen, known, **self._classes_for(head))
        elif np.unique(known).size < 2:
            return False  # fit needs two classes; until then suggestions go by diversity
        else:
            head.fit(seen, known)
        return True

    def _classes_for(self, step) -> dict:
        """`classes=` for a `partial_fit` that takes it (tuners, classifiers); none for one
        that does not (a StandardScaler, an IncrementalPCA)."""
        try:
            takes = "classes" in inspect.signature(step.partial_fit).parameters
        except (TypeError, ValueError):  # no readable signature: assume the classifier kind
            takes = True
        return {"classes": self.classes_} if takes else {}
