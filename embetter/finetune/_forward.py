"""FeedForwardTuner: a one-hidden-layer network trained on labels; its hidden layer is the
new embedding."""

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
    check_stream_classes,
    first_classes,
    require_y,
)
from embetter._labels import as_labels, check_class_labels, encode_known_labels
from embetter._torch import TorchHeadMixin
from embetter._torch.engine import ENGINE_CONSTRAINTS
from embetter._torch.stream import REFIT_CONSTRAINTS
from embetter._torch.unit import unit_rows

_ACTIVATIONS = {
    "relu": torch.nn.ReLU,
    "gelu": torch.nn.GELU,
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
    "identity": torch.nn.Identity,
}

#: Logit scale of the cosine classifier: cos in [-1, 1] times 10 lets softmax reach ~0.9999
#: for the right class without the unbounded logits (and over-confidence) of a plain linear head.
_LOGIT_SCALE = 10.0

#: `n_epochs="auto"`: this many passes while classes hold at least `AUTO_ROWS_PER_CLASS` rows
#: on average; with fewer, `sqrt(AUTO_ROWS_PER_CLASS / rows per class)` times as many, at
#: most `AUTO_MAX_FACTOR` times (see the class docstring).
AUTO_EPOCHS = 15
AUTO_ROWS_PER_CLASS = 50
AUTO_MAX_FACTOR = 1.5


class _FeedForward(torch.nn.Module):
    """x -> activation(Wx + b) = the embedding -> dropout -> cosine classifier -> logits."""

    def __init__(self, n_in, hidden_dim, n_classes, activation, dropout):
        super().__init__()
        # float32 whatever the caller's default dtype: the seed alone decides the start
        self.hidden = torch.nn.Linear(n_in, hidden_dim, dtype=torch.float32)
        self.activation = _ACTIVATIONS[activation]()
        self.dropout = torch.nn.Dropout(dropout)
        self.classes = torch.nn.Parameter(torch.empty(n_classes, hidden_dim,
                                                      dtype=torch.float32))
        torch.nn.init.kaiming_uniform_(self.classes, a=5**0.5)

    def embed(self, x):
        return self.activation(self.hidden(x))

    def forward(self, x):
        h = unit_rows(self.dropout(self.embed(x)))
        w = torch.nn.functional.normalize(self.classes, dim=1)
        return _LOGIT_SCALE * h @ w.T


class FeedForwardTuner(TorchHeadMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                       BaseEstimator):
    """Fine-tune embeddings towards labels with a small network; the hidden layer is the output.

    The network is `x -> activation(W x + b) -> dropout -> classifier`, trained with
    cross-entropy on the logits. The classifier compares the (normalised) hidden vector with
    one learned direction per class, so the classes gather in distinct directions of the
    hidden space: exactly what a cosine kNN, a bulk-labelling UI or a linear model downstream
    can use. `transform` returns the hidden layer, scaled to unit length.

    `fit` starts from scratch; `partial_fit(X, y, classes=...)` keeps training the same network
    and optimizer on a stream of batches. Each call trains as many gradient steps per row as
    `fit` on the rows seen so far does (`n_epochs / batch_size`, fractions carried to the next
    call), so a stream in batches of any size, each seen once, trains about as much as one
    `fit` on all its rows; a call that brings the rows seen to `refit_growth` times those of
    the last start retrains from the start instead, as `fit` on every row seen.

    The defaults come from benchmarks/tuners.py (200 labelled MiniLM embeddings per task): a
    wide hidden layer with strong dropout and a short, gentle training run keeps what the
    pretrained space knows; a narrow layer (the old default of 50) loses it on many classes.
    768 hidden units (twice MiniLM's width: a ReLU layer as wide as its input drops half of it
    for each row) and `n_epochs="auto"` were chosen on rows of the training splits that were
    not labelled (benchmarks/tuner_defaults.py, never the test split). `"auto"` trains 15
    epochs while the classes hold 50 rows or more on average, and `sqrt(50 / rows per class)`
    times as many below that, at most 1.5 times (22 epochs): on 200 labels, 30 epochs left a
    logistic regression on the tuned space up to 1.2 points lower than 15 on 2 and 4 classes
    (100 and 50 rows per class), while on 77 classes of 8 rows it lifted 5-NN by 2 points
    (0.798 to 0.818). Over nine public classification sets (benchmarks/tuner_defaults.py),
    30 epochs on clinc150's 150 classes of 8 rows left the logistic regression 0.6 points
    under the raw one on those rows, 22 epochs 0.4 (banking77 and trec_fine 5-NN 0.8 points
    lower than with 30), so the head never costs a logistic regression more than half a
    point there. A stream (`partial_fit`) counts the rows it has seen.

    Arguments:
        hidden_dim: size of the hidden layer, i.e. of the output embedding.
        n_epochs: maximum passes over the data in `fit`, or `"auto"` (see above).
        learning_rate: step size of the optimizer.
        batch_size: rows per gradient step.
        activation: `"relu"`, `"gelu"`, `"tanh"`, `"sigmoid"` or `"identity"`.
        dropout: dropout rate on the hidden layer during training.
        weight_decay: weight decay of the optimizer.
        optimizer: `"adamw"` or `"adam"`.
        early_stopping: hold out `validation_fraction` of the data and stop when its loss has
            not improved by `tol` for `n_iter_no_change` epochs (best weights are kept). When
            False, `fit` stops when the training loss stalls in the same way.
        validation_fraction: share of the data held out for early stopping.
        n_iter_no_change: epochs without improvement before stopping.
        tol: minimum improvement of the watched loss that counts as progress.
        replay_size: rows of `fit` and of earlier `partial_fit` batches remembered (a uniform
            sample of the stream) and mixed, as many as new ones, into each call's training; 0
            turns replay off. Without it, the steps a small batch earns pull the network towards
            that batch.
        refit_growth: `partial_fit` retrains from the start when the rows seen reach this
            many times those of the last start (`fit`, the first call or the last retrain:
            `refit_rows_`): a fresh network trained as `fit` on every row seen, while the
            replay memory holds them all (up to `replay_size`); `None` never retrains. 1.5
            (default, as `SbertTuner`) was chosen on rows of the training splits
            (benchmarks/streaming.py --dev, nine sets, seeds 0-2): it brought the mean gap of
            a stream in batches of 50, 100 or 500 to one fit from -0.4 to -0.1 points for
            both heads, none more than 1.3 behind (docs/streaming.md), for about three fits'
            training.
        verbose: show a progress bar with the loss per epoch.
        random_state: seed for initialisation, shuffling and dropout (int for repeatable fits).
        device: `None` (cuda, then mps, then cpu), `"cpu"`, `"cuda"`, ...

    Usage:

    ```python
    import numpy as np
    from embetter.finetune import FeedForwardTuner

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)).astype("float32")
    y = (X[:, 0] > 0).astype(int)
    tuner = FeedForwardTuner(hidden_dim=16, n_epochs=20, random_state=0).fit(X, y)
    assert tuner.transform(X).shape == (60, 16)
    ```
    """

    _EPOCHS_PARAM = "n_epochs"

    _parameter_constraints: dict = {
        "hidden_dim": [Interval(Integral, 1, None, closed="left")],
        "n_epochs": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "activation": [StrOptions(set(_ACTIVATIONS))],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        **ENGINE_CONSTRAINTS,
        **REFIT_CONSTRAINTS,
    }

    def __init__(
        self,
        hidden_dim=768,
        n_epochs="auto",
        learning_rate=8e-4,
        batch_size=128,
        activation="relu",
        dropout=0.5,
        weight_decay=0.0,
        optimizer="adamw",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        replay_size=2048,
        refit_growth=1.5,
        verbose=False,
        random_state=None,
        device=None,
    ):
        self.hidden_dim = hidden_dim
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.activation = activation
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.replay_size = replay_size
        self.refit_growth = refit_growth
        self.verbose = verbose
        self.random_state = random_state
        self.device = device

    # -- the network -------------------------------------------------------------------------
    _ARCHITECTURE = ("hidden_dim", "activation", "dropout", "optimizer")

    def _build_module(self):
        return _FeedForward(self.n_features_in_, self._arch("hidden_dim"), len(self.classes_),
                            self._arch("activation"), self._arch("dropout"))

    def _n_epochs(self, n_rows: int) -> float:
        """`n_epochs="auto"`: 15 passes, up to 1.5 times as many when classes have few rows."""
        if self.n_epochs != "auto":
            return int(self.n_epochs)
        per_class = max(n_rows, 1) / len(self.classes_)
        factor = np.clip(np.sqrt(AUTO_ROWS_PER_CLASS / per_class), 1, AUTO_MAX_FACTOR)
        return AUTO_EPOCHS * float(factor)

    def _batch_loss(self, module, table, rows, codes):
        return torch.nn.functional.cross_entropy(module(table[rows]), codes)

    @property
    def _n_features_out(self):
        """The fitted network's width (unfitted: none, so `get_feature_names_out` says so)."""
        module = self.__dict__.get("module_")
        if module is None:
            raise AttributeError("_n_features_out: not fitted yet")
        return module.hidden.out_features

    def _stratify(self, rows):
        return rows[1]

    def _items(self, rows, anchors, partners=None):
        """Items `(row, class code)` of the rows `anchors()` picks, over the table `X`."""
        table, codes = rows

        def draw():
            picked = anchors()
            return [picked, codes[picked]]

        return table, draw

    # -- training ----------------------------------------------------------------------------
    def fit(self, X, y):
        """Train a fresh network on `(X, y)`; returns `self`."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """Train on one batch, continuing the current network and optimizer state.

        Arguments:
            X: the batch of embeddings.
            y: their labels.
            classes: every label the stream will contain. Needed on the first call unless
                that batch already holds them all; later batches may only use these labels.
        """
        return self._fit(X, y, incremental=True, classes=classes)

    @all_or_nothing
    def _fit(self, X, y, incremental, classes=None):
        """Check the input, set the classes on a fresh start, and train (see the engine)."""
        first = not incremental or getattr(self, "module_", None) is None
        self._validate_params()  # every call: set_params may come between partial_fits
        require_y(self, y)
        X = check_estimator_input(self, X, reset=first)
        y = check_class_labels(as_labels(y, "y", n_samples=X.shape[0]))
        if first:
            self.classes_ = first_classes(y, classes, "FeedForwardTuner", incremental)
        else:
            check_stream_classes(classes, self.classes_)
        return self._train([X, encode_known_labels(y, self.classes_)], incremental)

    # -- output ------------------------------------------------------------------------------
    def transform(self, X):
        """The hidden layer of the network for `X`, unit length, float32 `(n, hidden_dim)`."""
        check_is_fitted(self)
        X = check_estimator_input(self, X, reset=False, allow_empty=True)
        return self._forward(
            X, lambda m, x: unit_rows(m.embed(x))
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
