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

    `partial_fit(X, y, classes=...)` continues the same learner and optimizer. Its training
    follows the rows it sees: a stream earns the steps `fit` would take on all rows seen so far
    (`epochs` passes of `n_pos + n_neg` pairs per row, up to `max_steps`), then each new row
    the share of `max_steps` a `fit` on all rows so far would give it; fractions of a step
    carry over to the next call. Each pass pairs the new rows and at least as many remembered
    ones (`replay_size`; enough to fill a gradient step) with partners from everything
    remembered. So a stream in batches of any size, each seen once, ends close to one `fit`
    on the same rows (benchmarks/streaming.py).

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
        early_stopping: hold out `validation_fraction` of the rows, score each epoch on fixed
            pairs among them (`history_` gets `valid_loss`), stop when that loss has not
            improved by `tol` for `n_iter_no_change` epochs, and keep the best epoch.
        validation_fraction: share of the rows held out for early stopping.
        n_iter_no_change: epochs without improvement before stopping.
        tol: minimum improvement of the validation loss that counts as progress.
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
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
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
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=3,
        tol=1e-4,
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
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.weight_decay = weight_decay
        self.replay_size = replay_size
        self.verbose = verbose
        self.random_state = random_state
        self.device = device

    def _new_learner(self, seed):
        return ContrastiveLearner(
            shape_out=self.hidden_dim, batch_size=self.batch_size, epochs=self.epochs,
            learning_rate=self.learning_rate, loss=self.loss, margin=self.margin,
            weight_decay=self.weight_decay, n_iter_no_change=self.n_iter_no_change,
            tol=self.tol, replay_size=0, verbose=self.verbose,
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
        self.learner_._progress_name = type(self).__name__

    def fit(self, X, y):
        """Train a fresh learner on pairs drawn from `(X, y)`; returns `self`."""
        self._validate_params()
        require_y(self, y)
        X = check_estimator_input(self, X, reset=True)
        labels, _ = as_targets(y, "y", n_samples=X.shape[0])
        self._start(self.random_state)
        self.classes_ = self._sampler(labels).classes  # checks the labels once, clearly
        train, valid = self._split(labels) if self.early_stopping else (None, None)
        if valid is None:
            draw = self._sampler(labels).draw
        else:
            sampler = self._sampler(labels[train])

            def draw():
                i, j, similar = sampler.draw()
                return [train[i], train[j], similar]

        self.learner_._fit_sampler(X, draw, epochs=int(self.epochs), max_steps=self.max_steps,
                                   valid=valid)
        return self._report()

    def _split(self, labels):
        """Rows to train on, and fixed validation pairs: each held-out row with partners from
        all rows (does a new row land near its class?), never trained on as an anchor or
        partner."""
        from sklearn.model_selection import train_test_split

        n = labels.shape[0]
        n_valid = int(np.ceil(self.validation_fraction * n))
        if n_valid < 2 or n - n_valid < 2:
            raise ValueError(
                f"early_stopping needs at least 4 rows (validation_fraction="
                f"{self.validation_fraction} of {n}); turn early_stopping off for tiny data"
            )
        rows = np.arange(n)
        seed = self._rng.randint(0, 2**31 - 1)
        try:
            train, held = train_test_split(rows, test_size=n_valid, random_state=seed,
                                           stratify=None if labels.ndim == 2 else labels)
        except ValueError:  # a class too small to stratify: a plain split
            train, held = train_test_split(rows, test_size=n_valid, random_state=seed)
        i, j, similar = self._sampler(labels).draw()
        mine = np.isin(i, held)
        return train, [i[mine], j[mine], similar[mine]]

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
        # each pass: pairs for the new rows and at least as many remembered ones, enough
        # anchors to fill a gradient step; partners come from everything remembered, so a
        # small batch neither trains on itself alone nor pulls the space towards itself
        anchors = -(-int(self.batch_size) // (self.n_pos + self.n_neg))
        rows = replay_subsets(self._replay, X.shape[0], self._rng, at_least=anchors)
        try:
            sampler = self._sampler(pool_codes)
        except ValueError:  # a single class so far: nothing to contrast yet
            sampler = None

        def draw():
            if sampler is None:
                return [np.zeros(0, dtype=np.int64)] * 2 + [np.zeros(0, dtype=np.float32)]
            i, j, similar = sampler.draw()
            mine = np.isin(i, rows())
            return [i[mine], j[mine], similar[mine]]

        self.learner_._partial_fit_sampler(table, draw, X.shape[0], self._stream_steps)
        replay_add(self._replay, [X, codes], self.replay_size, self._rng)
        return self._report()

    def _stream_steps(self, n_rows):
        """Gradient steps a stream has earned after `n_rows` rows: what `fit` on them would
        take (`epochs` passes of `n_pos + n_neg` pairs per row) until `max_steps`; after that,
        each new row earns the share of `max_steps` that `fit` on all rows so far gives a row
        (`max_steps / n_rows` each: a logarithmic total), so later labels count as much as
        the first ones did in a `fit` of that size."""
        per_pass = (self.n_pos + self.n_neg) / int(self.batch_size)
        full = int(self.epochs) * per_pass * n_rows
        if self.max_steps is None or full <= self.max_steps:
            return full
        covered = self.max_steps / (int(self.epochs) * per_pass)
        return self.max_steps * (1.0 + np.log(n_rows / covered))

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
