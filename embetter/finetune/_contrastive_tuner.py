"""ContrastiveTuner: labels -> index pairs (PairSampler, fresh every epoch) -> the projection and
pair losses of ContrastiveLearner (`PairHead`) on the shared engine, over one table: the
embedding matrix, uploaded once."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from embetter._estimator_checks import (
    Interval,
    StrOptions,
    all_or_nothing,
    check_estimator_input,
    check_label_columns,
    check_stream_classes,
    first_classes,
    require_y,
)
from embetter._labels import as_targets, encode_known_labels
from embetter._torch.engine import ENGINE_CONSTRAINTS
from embetter._torch.stream import REFIT_CONSTRAINTS
from embetter.finetune._contrastive import LOSS_CONSTRAINTS, PairHead, resolve_loss
from embetter.finetune._pairs import PairSampler

#: `learning_rate="auto"`: the step size with three classes or more (or multi-label y), and
#: with two classes, where the cosine loss pulls every row towards one of two directions and a
#: full step flattens what a logistic regression needs (measured by
#: benchmarks/tuner_defaults.py on rows of the training splits, see the class docstring).
AUTO_LEARNING_RATE = 3e-3
AUTO_BINARY_LEARNING_RATE = 1e-3


class ContrastiveTuner(PairHead, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Fine-tune embeddings towards labels by contrasting pairs, as a pipeline step.

    Each epoch draws fresh pairs from the labels (every item with `n_pos` items of its class
    and `n_neg` items of other classes, see `generate_pairs`; with two classes,
    `anchors="auto"` draws as many anchors from each class) as index pairs into `X`, and
    the projection of `ContrastiveLearner` (identity at the start, output scaled to unit
    length) trains on them with its pair loss, on the engine every head shares: `X` goes to
    the device once, pairs are never copied out of it. Fresh pairs every epoch show the
    projection far more of the label structure than one fixed sample. A 2-D 0/1 `y` is read
    as multi-label (items sharing a label are similar).

    `partial_fit(X, y, classes=...)` continues the same projection and optimizer. Its training
    follows the rows it sees: a stream earns the steps `fit` would take on all rows seen so far
    (`epochs` passes of `n_pos + n_neg` pairs per row, up to `max_steps`), then each new row
    the share of `max_steps` a `fit` on all rows so far would give it; fractions of a step
    carry over to the next call. Each pass pairs the new rows and at least as many remembered
    ones (`replay_size`; enough to fill a gradient step) with partners from everything
    remembered; the new rows get their whole share of those steps, and the remembered rows
    replayed with them (as many as new ones, at most) earn theirs on top, so the last batches
    of a stream train as much as the first. A call that brings the rows seen to
    `refit_growth` times those of the last start retrains from the start instead, as `fit`
    on every row seen. So a stream in batches of any size, each seen once, ends close to one
    `fit` on the same rows (benchmarks/streaming.py).

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
        learning_rate: step size of the optimizer, or `"auto"` (default): 3e-3, and 1e-3 when
            there are only two classes. With two classes the cosine loss pulls every row
            towards one of two directions, and 3e-3 flattened what a logistic regression
            needs: on rows of the training splits not labelled (benchmarks/tuner_defaults.py,
            200 labels, seeds 0-2) it left LR 0.6 and 1.4 points under the raw space on subj
            and sms_spam, 1e-3 +0.5 and -0.6; with three classes or more 3e-3 gave the larger
            5-NN gains (1e-3 cost 5-NN 1.6 points on emotion and 1.9 on trec_fine).
        batch_size: pairs per gradient step.
        loss: `"cosine"` (default: the cosine similarity of a pair is regressed onto 1 for
            the same class, 0 for different ones) or `"cosine_margin"` (formerly
            `"contrastive"`, which still works with a FutureWarning); see
            `ContrastiveLearner`. On benchmarks/tuners.py the cosine loss kept a logistic
            regression on the tuned space as accurate as on the raw one; the margin loss
            bent the space harder and cost it up to 2 points on emotion.
        margin: see `ContrastiveLearner`.
        strategy: how negatives are drawn, see `generate_pairs`.
        anchors: which rows the pairs start from, each pass: `"all"` (every row, `n_pos` and
            `n_neg` times), `"balanced"` (as many rows, the same number from each class: a
            small class's rows more than once, a sample of a large one's) or
            `"auto"` (default): `"balanced"` with two classes, `"all"` otherwise. With two
            classes of 26 and 174 rows (sms_spam, 200 labels), every row anchoring let the
            large class pull the space into one direction, and a logistic regression on the
            tuned space lost 0.9 points against the raw one; balanced anchors 0.4 (rows of
            the training splits not labelled, benchmarks/tuner_defaults.py, seeds 0-9; the
            other two-class sets moved by 0.2 at most, 5-NN by -0.2 to +0.8). With three
            classes or more, balanced anchors cost 5-NN up to 1.5 points on the imbalanced
            sets (emotion, trec_fine), so `"auto"` keeps every row there. Single-label only.
        early_stopping: hold out `validation_fraction` of the rows, score each epoch on fixed
            pairs among them (`history_` gets `valid_loss`), stop when that loss has not
            improved by `tol` for `n_iter_no_change` epochs, and keep the best epoch.
        validation_fraction: share of the rows held out for early stopping.
        n_iter_no_change: epochs without improvement before stopping.
        tol: minimum improvement of the validation loss that counts as progress.
        weight_decay: weight decay of the optimizer (towards 0).
        identity_penalty: strength of an L2 penalty on the projection's distance from the
            identity, `identity_penalty * ||W - I||^2` added to every step's loss ("L2-SP":
            decay towards the starting point, not towards 0, Li et al., 2018), so the tuned
            space bends away from the pretrained one only as far as the pairs pay for; only
            when the projection is square (`hidden_dim=None` or the input dimension). 3e-4
            (default) was chosen on rows of the training splits that were not labelled
            (benchmarks/tuner_defaults.py, all nine classification sets, 200 labels, seeds
            0-2): against 0 it raised the logistic regression on the tuned space on four sets
            (banking77 +0.6 points, mr +0.5, clinc150 +0.3, trec_fine +0.2), moved it by 0.2
            at most on the others, and kept 5-NN within 0.2 points; 1e-3 cost 5-NN 1.4 points
            on clinc150, 1e-2 up to 3.4 (banking77). 0 turns it off (and is what heads
            pickled before this parameter existed trained with).
        replay_size: rows of `fit` and of earlier `partial_fit` batches remembered (a uniform
            sample of the stream); each call draws its pairs among the new rows and as many
            remembered ones, so a small batch still finds partners of its classes and does not
            pull the space towards itself alone. 0 turns replay off.
        refit_growth: when the rows seen reach this many times those of the last start,
            `partial_fit` trains a fresh projection as `fit` on all of them (see
            `FeedForwardTuner`, where the default 1.5 is explained); `None` never retrains.
        verbose: show a progress bar with the loss per epoch.
        random_state: seed for pairs, initialisation and shuffling (int for repeatable fits).
        device: `None` (cuda, then mps, then cpu), `"cpu"`, `"cuda"`, ...

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

    _EPOCHS_PARAM = "epochs"
    #: what a head pickled before `identity_penalty` (or `anchors`) existed trained with
    #: (instances set them)
    identity_penalty = 0.0
    anchors = "all"
    _STOP_ON_TRAIN_LOSS = False  # fit runs its epochs (up to max_steps) unless early_stopping
    _MIN_SPLIT_ROWS = 2  # validation pairs need two held-out rows, training pairs two rows

    _parameter_constraints: dict = {
        "hidden_dim": [None, Interval(Integral, 1, None, closed="left")],
        "n_neg": [Interval(Integral, 0, None, closed="left")],
        "n_pos": [Interval(Integral, 0, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "max_steps": [None, Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "loss": [StrOptions({"cosine", "cosine_margin", "contrastive"},
                            deprecated={"contrastive"})],
        "margin": LOSS_CONSTRAINTS["margin"],
        "strategy": [StrOptions({"random", "balanced"})],
        "anchors": [StrOptions({"auto", "all", "balanced"})],
        "identity_penalty": [Interval(Real, 0, None, closed="left")],
        **{k: v for k, v in ENGINE_CONSTRAINTS.items() if k not in ("optimizer", "learning_rate")},
        **REFIT_CONSTRAINTS,
    }

    def __init__(
        self,
        hidden_dim=None,
        n_neg=3,
        n_pos=1,
        epochs=10,
        max_steps=50,
        learning_rate="auto",
        batch_size=512,
        loss="cosine",
        margin=0.1,
        strategy="random",
        anchors="auto",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=3,
        tol=1e-4,
        weight_decay=0.0,
        identity_penalty=3e-4,
        replay_size=2048,
        refit_growth=1.5,
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
        self.anchors = anchors
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.weight_decay = weight_decay
        self.identity_penalty = identity_penalty
        self.replay_size = replay_size
        self.refit_growth = refit_growth
        self.verbose = verbose
        self.random_state = random_state
        self.device = device

    # -- the head on the engine ---------------------------------------------------------------
    _ARCHITECTURE = ("hidden_dim",)

    def _out_width(self) -> int:
        width = self._arch("hidden_dim")
        return self.n_features_in_ if width is None else width

    def _sampler(self, labels, random_state, anchors=None):
        return PairSampler(labels, n_neg=self.n_neg, n_pos=self.n_pos, strategy=self.strategy,
                           random_state=random_state, anchors=anchors or self._anchors())

    def _binary(self) -> bool:
        """Two classes, single-label (what the `"auto"` choices look at)."""
        return self.classes_.size == 2 and not getattr(self, "_multilabel", False)

    def _anchors(self) -> str:
        """`anchors="auto"`: `"balanced"` with two classes, else `"all"` (class docstring)."""
        if self.anchors != "auto":
            return self.anchors
        return "balanced" if self._binary() else "all"

    def _items(self, rows, anchors, partners=None):
        """Fresh pairs every pass: those of the rows `anchors()` picks, with partners among
        `partners` (fit, holding out a validation set) or among all rows (streams: the new
        rows and the replay memory)."""
        X, labels = rows
        if partners is not None:  # fit: both sides among these rows
            if (self.early_stopping and self.n_neg == 0
                    and not _two_of_a_class(labels[partners])):
                # (fit checks all rows; those left to train on after the split may hold none;
                # a stream's retrain draws nothing instead, later batches bring pairs)
                raise ValueError("no training pairs: n_neg=0 and no class holds two rows")
            sampler = self._sampler(labels[partners], self._rng)

            def draw():
                i, j, similar = sampler.draw()
                return [partners[i], partners[j], similar]

            return X, draw
        # a stream with a single class (or label set) so far: nothing to contrast yet
        sampler = self._sampler(labels, self._rng) if self._can_refit(rows) else None

        def draw():
            if sampler is None:
                return [np.zeros(0, dtype=np.int64)] * 2 + [np.zeros(0, dtype=np.float32)]
            i, j, similar = sampler.draw()
            mine = np.isin(i, anchors())
            return [i[mine], j[mine], similar[mine]]

        return X, draw

    def _validation_items(self, rows, held):
        """Fixed pairs anchored on the held-out rows, partners among them; where those give
        none (the held-out rows hold one class, or no two of one for `n_neg=0`), partners
        among every row, every held-out row an anchor."""
        try:
            items = super()._validation_items(rows, held)
        except ValueError:  # a single class among the held-out rows
            items = [np.zeros(0)]
        if items[0].shape[0]:
            return items
        i, j, similar = self._sampler(rows[1], self._rng, anchors="all").draw()
        mine = np.isin(i, held)
        return [i[mine], j[mine], similar[mine]]

    def _stratify(self, rows):
        return None if rows[1].ndim == 2 else rows[1]

    def _can_refit(self, rows) -> bool:
        # `fit` pairs rows of one class with rows of others: it needs two classes (two
        # distinct label sets, multi-label)
        return np.unique(rows[1], axis=0).shape[0] >= 2

    def _items_per_row(self) -> float:
        return self.n_pos + self.n_neg

    def _max_steps(self):
        return self.max_steps

    def _learning_rate(self) -> float:
        """`learning_rate="auto"`: `AUTO_LEARNING_RATE`, and `AUTO_BINARY_LEARNING_RATE` when
        there are only two classes (see the class docstring)."""
        if self.learning_rate != "auto":
            return float(self.learning_rate)
        return AUTO_BINARY_LEARNING_RATE if self._binary() else AUTO_LEARNING_RATE

    def _replay_at_least(self) -> int:
        # each pass: pairs for the new rows and at least as many remembered ones, enough
        # anchors to fill a gradient step; partners come from everything remembered, so a
        # small batch neither trains on itself alone nor pulls the space towards itself
        return -(-int(self.batch_size) // (self.n_pos + self.n_neg))

    def _penalty(self, module):
        """`identity_penalty * ||W - I||^2` for a square projection (see the class docstring)."""
        weight = module.linear.weight
        if not self.identity_penalty or weight.shape[0] != weight.shape[1]:
            return None
        eye = torch.eye(weight.shape[0], device=weight.device, dtype=weight.dtype)
        return float(self.identity_penalty) * (weight - eye).pow(2).sum()

    def _replay_on_top(self) -> float:
        # each new row trains on as many pairs as its share of `fit` gives it, and as many
        # remembered rows as new ones are rehearsed on top: when they shared the new rows'
        # budget, the first batches of a stream were replayed again and again while the last
        # ones got half their share, and a stream of batches of 50-100 ended up to 3 points
        # under one fit on many classes (benchmarks/streaming.py --rows 600 --dev)
        return 1.0

    def _stream_budget(self, n_rows):
        """Gradient steps a stream has earned after `n_rows` rows: what `fit` on them would
        take (`epochs` passes of `n_pos + n_neg` pairs per row) until `max_steps`; after that,
        each new row earns the share of `max_steps` that `fit` on all rows so far gives a row
        (`max_steps / n_rows` each: a logarithmic total), so later labels count as much as
        the first ones did in a `fit` of that size."""
        full = self._fit_steps(n_rows)
        if self.max_steps is None or full <= self.max_steps:
            return full
        covered = self.max_steps / self._fit_steps(1)
        return self.max_steps * (1.0 + np.log(n_rows / covered))

    # -- training ----------------------------------------------------------------------------
    def fit(self, X, y):
        """Train a fresh projection on pairs drawn from `(X, y)`; returns `self`."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """Train on pairs drawn from one batch, continuing the same projection.

        Arguments:
            X: the batch of embeddings.
            y: their labels (the new rows, and as many remembered ones, are paired with
                partners from everything remembered).
            classes: every label the stream will contain; later batches may only use these.
        """
        return self._fit(X, y, incremental=True, classes=classes)

    @all_or_nothing
    def _fit(self, X, y, incremental, classes=None):
        """Check the input, set the classes on a fresh start, and train (see the engine)."""
        first = not incremental or getattr(self, "module_", None) is None
        self._validate_params()  # every call: set_params may come between partial_fits
        resolve_loss(self)
        require_y(self, y)
        X = check_estimator_input(self, X, reset=first)
        labels, multilabel = as_targets(y, "y", n_samples=X.shape[0])
        if not incremental:
            # checks the labels once, clearly, before anything is trained
            self.classes_ = self._sampler(labels, random_state=0, anchors="all").classes
        elif first:
            if multilabel:
                check_label_columns(classes, labels.shape[1])
                self.classes_ = np.arange(labels.shape[1])
            else:
                self.classes_ = first_classes(labels, classes, "ContrastiveTuner", True)
        else:
            self._check_later_batch(labels, multilabel, classes)
        if self.n_pos + self.n_neg == 0:  # (a stream would draw no pair, and say nothing)
            raise ValueError("n_neg and n_pos are both 0: no pairs would be generated")
        # (a stream's batch may lack pairs: later ones bring them)
        if not incremental and self.n_neg == 0 and not _two_of_a_class(labels):
            raise ValueError(
                "no training pairs: n_neg=0 and no class holds two rows, so no positive "
                "pair can be drawn; give at least two rows of a class, or n_neg > 0")
        for name in ("anchors", "strategy"):
            if multilabel and getattr(self, name) == "balanced":
                raise ValueError(f"{name}='balanced' needs single-label y (1-D labels); use "
                                 f"the default for multi-label rows")
        if multilabel and labels.shape[1] != self.classes_.size:
            raise ValueError(
                f"y has {labels.shape[1]} label columns, the first batch had {self.classes_.size}"
            )
        if first:
            self._multilabel = multilabel
        codes = labels if multilabel else encode_known_labels(labels, self.classes_)
        return self._train([X, codes], incremental)

    def _check_later_batch(self, labels, multilabel, classes):
        """A later `partial_fit` batch: the same kind of `y` as the first, and `classes` (if
        given again) the same."""
        if multilabel != getattr(self, "_multilabel", multilabel):
            raise ValueError(
                f"y is {labels.ndim}-D but the first partial_fit call's was "
                f"{1 if multilabel else 2}-D; a stream keeps one kind of label "
                "(1-D classes, or 0/1 rows for multi-label)")
        if not multilabel:
            check_stream_classes(classes, self.classes_)

    def __setstate__(self, state):
        learner = state.pop("learner_", None)
        super().__setstate__(state)
        if learner is not None:
            # saved by embetter 0.10: the projection, its optimizer and the step counts lived
            # in a ContrastiveLearner beside this tuner's RNG and replay memory
            self.module_, self.optimizer_ = learner.module_, learner.optimizer_
            self.device_ = learner.device_
            for name in ("_step_credit", "_n_steps", "_n_streamed"):
                setattr(self, name, getattr(learner, name, 0))

    def transform(self, X):
        """The tuned embedding of `X`: float32 `(n, hidden_dim)`, unit length."""
        check_is_fitted(self)
        X = check_estimator_input(self, X, reset=False, allow_empty=True)
        return self._forward(X, lambda m, x: m(x))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def _two_of_a_class(labels) -> bool:
    """Whether some class (or label of multi-label rows) holds two rows: a positive pair."""
    shared = labels.sum(axis=0) if labels.ndim == 2 else np.unique(labels, return_counts=True)[1]
    return shared.max(initial=0) >= 2
