"""ContrastiveTuner: labels -> index pairs (PairSampler, fresh every epoch) -> the engine of a
ContrastiveLearner, over one table: the embedding matrix, uploaded once."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from embetter._torch import new_replay, replay_add, replay_pool, replay_subsets
from embetter._validation import (
    as_labels,
    as_targets,
    check_estimator_input,
    encode_known_labels,
    require_y,
)
from embetter.finetune._contrastive import ContrastiveLearner
from embetter.finetune._pairs import PairSampler


class ContrastiveTuner(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Fine-tune embeddings towards labels by contrasting pairs, as a pipeline step.

    Each epoch draws fresh pairs from the labels (every item with `n_pos` items of its class
    and `n_neg` items of other classes, see `generate_pairs`) as index pairs into `X`, and a
    `ContrastiveLearner`, built in `fit` from this tuner's parameters, trains on them: `X` is
    handed over once, pairs are never copied out of it. Fresh pairs every epoch show the
    learner far more of the label structure than one fixed sample. A 2-D 0/1 `y` is read as
    multi-label (items sharing a label are similar).

    `partial_fit(X, y, classes=...)` continues the same learner and optimizer, with pairs formed
    inside each batch, and trains as many gradient steps per row as `fit` does without
    `max_steps` (`epochs * (n_pos + n_neg) / batch_size`, fractions carried to the next call):
    a stream in batches of any size, each seen once, trains about as much as one `fit`.

    Arguments:
        hidden_dim: output dimension; `None` keeps the input dimension (the projection then
            starts as the identity: the pretrained geometry).
        n_neg: dissimilar pairs per item and epoch.
        n_pos: similar pairs per item and epoch.
        epochs: passes (each with new pairs) in `fit`.
        max_steps: at most this many gradient steps in `fit` (`None`: no limit). Large data
            shows the learner plenty of pairs in a few passes: the default (50 steps of 512
            pairs, ten passes over 600 rows) keeps `fit` on thousands of rows under a second
            on a CPU.
        learning_rate: step size of the optimizer.
        batch_size: pairs per gradient step.
        loss: `"cosine"` (default: the cosine similarity of a pair is regressed onto 1 for
            the same class, 0 for different ones) or `"contrastive"` (margin); see
            `ContrastiveLearner`. On benchmarks/tuners.py the cosine loss kept a logistic
            regression on the tuned space as accurate as on the raw one; the margin loss
            bent the space harder and cost it up to 2 points on emotion.
        margin: see `ContrastiveLearner`.
        strategy: how negatives are drawn, see `generate_pairs`.
        weight_decay: weight decay of the optimizer.
        replay_size: rows of earlier `partial_fit` batches remembered (a uniform sample of the
            stream); each call draws its pairs among the new rows and as many remembered ones,
            so a small batch still finds partners of its classes and does not pull the space
            towards itself alone. 0 turns replay off.
        verbose: show a progress bar with the loss per epoch.
        random_state: seed for pairs, initialisation and shuffling (int for repeatable fits).
        device: `None` (cuda if available, else cpu), `"cpu"`, `"cuda"`, ...

    Usage:

    ```python
    import numpy as np
    from embetter.finetune import ContrastiveTuner

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)).astype("float32")
    y = (X[:, 0] > 0).astype(int)
    tuner = ContrastiveTuner(epochs=5, random_state=0).fit(X, y)
    assert tuner.transform(X).shape == (60, 8)
    assert len(tuner.history_) == tuner.n_iter_ == 5
    ```
    """

    _parameter_constraints: dict = {
        "hidden_dim": [None, Interval(Integral, 1, None, closed="left")],
        "n_neg": [Interval(Integral, 0, None, closed="left")],
        "n_pos": [Interval(Integral, 0, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "max_steps": [None, Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "loss": [StrOptions({"contrastive", "cosine"})],
        "margin": [Interval(Real, -1, 1, closed="both")],
        "strategy": [StrOptions({"random", "balanced"})],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "replay_size": [Interval(Integral, 0, None, closed="left")],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "device": [None, str, torch.device],
    }

    def __init__(
        self,
        hidden_dim=None,
        n_neg=3,
        n_pos=1,
        epochs=10,
        max_steps=50,
        learning_rate=3e-3,
        batch_size=512,
        loss="cosine",
        margin=0.1,
        strategy="random",
        weight_decay=0.0,
        replay_size=2048,
        verbose=False,
        random_state=None,
        device=None,
    ):
        self.hidden_dim = hidden_dim
        self.n_neg = n_neg
        self.n_pos = n_pos
        self.epochs = epochs
        self.max_steps = max_steps
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.loss = loss
        self.margin = margin
        self.strategy = strategy
        self.weight_decay = weight_decay
        self.replay_size = replay_size
        self.verbose = verbose
        self.random_state = random_state
        self.device = device

    def _new_learner(self, seed):
        return ContrastiveLearner(
            shape_out=self.hidden_dim, batch_size=self.batch_size, epochs=self.epochs,
            learning_rate=self.learning_rate, loss=self.loss, margin=self.margin,
            weight_decay=self.weight_decay, replay_size=0, verbose=self.verbose,
            random_state=seed, device=self.device,
        )

    def _sampler(self, labels):
        return PairSampler(labels, n_neg=self.n_neg, n_pos=self.n_pos, strategy=self.strategy,
                           random_state=self._rng)

    def _report(self):
        """The learner's training record, as this tuner's (sklearn names)."""
        self.n_iter_ = self.learner_.n_iter_
        self.loss_curve_ = list(self.learner_.loss_curve_)
        self.history_ = list(self.learner_.history_)
        return self

    def _start(self, seed_source):
        rng = check_random_state(seed_source)
        # RandomState, not Generator: plain state for pickle and skops; each PairSampler
        # draws its own seed from it
        self._rng = np.random.RandomState(rng.randint(0, 2**31 - 1))
        self._replay = new_replay()
        self.learner_ = self._new_learner(rng.randint(0, 2**31 - 1))

    def fit(self, X, y):
        """Train a fresh learner on pairs drawn from `(X, y)`; returns `self`."""
        self._validate_params()
        require_y(self, y)
        X = check_estimator_input(self, X, reset=True)
        labels, _ = as_targets(y, "y", n_samples=X.shape[0])
        self._start(self.random_state)
        sampler = self._sampler(labels)
        self.classes_ = sampler.classes
        self.learner_._fit_sampler(X, sampler.draw, epochs=int(self.epochs),
                                   max_steps=self.max_steps)
        return self._report()

    def partial_fit(self, X, y, classes=None):
        """Train on pairs drawn from one batch, continuing the same learner.

        Arguments:
            X: the batch of embeddings.
            y: their labels (pairs are formed inside the batch).
            classes: every label the stream will contain; later batches may only use these.
        """
        first = getattr(self, "learner_", None) is None
        if first:
            self._validate_params()
        require_y(self, y)
        X = check_estimator_input(self, X, reset=first)
        labels, multilabel = as_targets(y, "y", n_samples=X.shape[0])
        if first:
            self._start(self.random_state)
            if multilabel:
                self.classes_ = np.arange(labels.shape[1])
            else:
                known = labels if classes is None else as_labels(classes, "classes")
                self.classes_ = np.unique(known)
        if multilabel and labels.shape[1] != self.classes_.size:
            raise ValueError(
                f"y has {labels.shape[1]} label columns, the first batch had {self.classes_.size}"
            )
        codes = labels if multilabel else encode_known_labels(labels, self.classes_)
        table, pool_codes = replay_pool(self._replay, [X, codes])
        rows = replay_subsets(self._replay, X.shape[0], self._rng)

        def draw():  # pairs among the new rows and as many remembered ones, fresh each pass
            picked = rows()
            try:
                i, j, similar = self._sampler(pool_codes[picked]).draw()
            except ValueError:  # a single class: nothing to contrast in this pass
                return [np.zeros(0, dtype=np.int64)] * 2 + [np.zeros(0, dtype=np.float32)]
            return [picked[i], picked[j], similar]

        per_row = int(self.epochs) * (self.n_pos + self.n_neg) / int(self.batch_size)
        self.learner_._partial_fit_sampler(table, draw, X.shape[0], per_row)
        replay_add(self._replay, [X, codes], self.replay_size, self._rng)
        return self._report()

    @property
    def _n_features_out(self):
        return self.learner_._n_features_out

    def transform(self, X):
        """The tuned embedding of `X`: float32 `(n, hidden_dim)`, unit length."""
        check_is_fitted(self)
        X = check_estimator_input(self, X, reset=False, allow_empty=True)
        return self.learner_.transform(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
