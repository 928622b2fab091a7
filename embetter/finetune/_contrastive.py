"""ContrastiveLearner (learns from pairs of embeddings) and ContrastiveTuner (labels -> pairs ->
learner), sharing one training engine with the other small heads."""

from __future__ import annotations

import os
import tempfile
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from embetter._torch import TorchHeadMixin, _Progress, train_threads
from embetter._validation import (
    as_labels,
    check_estimator_input,
    check_pairs,
    encode_known_labels,
    require_y,
)
from embetter.finetune._pairs import generate_pairs

_F = torch.nn.functional
_FORMAT = "embetter.ContrastiveLearner/1"


class _Projection(torch.nn.Module):
    """x -> W x, scaled to unit length. W starts as the identity (or a random rotation when
    the output size differs), so training begins from the pretrained geometry and only has to
    learn how to bend it."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.linear = torch.nn.Linear(n_in, n_out, bias=False)
        with torch.no_grad():
            if n_in == n_out:
                self.linear.weight.copy_(torch.eye(n_out))
            else:
                torch.nn.init.orthogonal_(self.linear.weight)

    def forward(self, x):
        return _F.normalize(self.linear(x), dim=1)


def _contrastive_loss(a, b, y, margin):
    cos = (a * b).sum(dim=1)
    # similar pairs are pulled to cos = 1; dissimilar ones pushed only while cos > margin,
    # so unrelated items keep the geometry they already had
    return (y * (1 - cos) ** 2 + (1 - y) * _F.relu(cos - margin) ** 2).mean()


def _cosine_loss(a, b, y):
    return ((a * b).sum(dim=1) - y).pow(2).mean()


def _infonce_loss(a, b, temperature):
    # every other pair's second item in the batch serves as a negative for this anchor
    logits = a @ b.T / temperature
    return _F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


_ENGINE_CONSTRAINTS = {
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "loss": [StrOptions({"contrastive", "cosine", "infonce"})],
    "margin": [Interval(Real, -1, 1, closed="both")],
    "temperature": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "optimizer": [StrOptions({"adam", "adamw"})],
    "partial_fit_epochs": [Interval(Integral, 1, None, closed="left")],
    "verbose": ["verbose"],
    "random_state": ["random_state"],
    "device": [None, str, torch.device],
}


class ContrastiveLearner(TorchHeadMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                         BaseEstimator):
    """Learn a new embedding from pairs of embeddings that should (not) be similar.

    A single linear map `W` (shared by both sides of a pair, output scaled to unit length)
    is trained so that the cosine similarity of `(W x1, W x2)` follows `y`. `W` starts as the
    identity, so the learner bends the pretrained space instead of replacing it. Losses, by
    the data they expect:

    - `"contrastive"`: 0/1 labels; similar pairs are pulled together, dissimilar pairs pushed
      apart until their cosine similarity is below `margin`.
    - `"cosine"`: float scores; the cosine similarity is regressed onto `y` (mean squared error).
    - `"infonce"`: positive pairs only (`y` may be omitted; pairs with `y == 0` are skipped);
      for each pair, the second items of the other pairs in the batch act as negatives.

    Arguments:
        shape_out: output dimension; `None` keeps the input dimension.
        batch_size: pairs per gradient step.
        epochs: maximum passes over the pairs in `fit`.
        learning_rate: step size of the optimizer.
        loss: `"contrastive"`, `"cosine"` or `"infonce"` (see above).
        margin: cosine similarity below which dissimilar pairs stop being pushed apart.
        temperature: softmax temperature of the `"infonce"` loss.
        weight_decay: weight decay of the optimizer.
        optimizer: `"adamw"` or `"adam"`.
        early_stopping, validation_fraction, n_iter_no_change, tol: as in sklearn's MLP: stop
            when the (validation) loss has not improved by `tol` for `n_iter_no_change` epochs.
        partial_fit_epochs: passes over the pairs in each `partial_fit` call.
        verbose: show a progress bar with the loss per epoch.
        random_state: seed for initialisation and shuffling (int for repeatable fits).
        device: `None` (cuda if available, else cpu), `"cpu"`, `"cuda"`, ...

    Usage:

    ```python
    import numpy as np
    from embetter.finetune import ContrastiveLearner

    rng = np.random.default_rng(0)
    X1, X2 = rng.normal(size=(2, 100, 8)).astype("float32")
    y = (np.sign(X1[:, 0]) == np.sign(X2[:, 0])).astype("float32")
    learner = ContrastiveLearner(epochs=5, random_state=0).fit(X1, X2, y)
    assert learner.transform(X1).shape == (100, 8)
    assert learner.predict(X1, X2).shape == (100,)
    ```
    """

    _EPOCHS_PARAM = "epochs"

    _parameter_constraints: dict = {
        "shape_out": [None, Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        **_ENGINE_CONSTRAINTS,
    }

    def __init__(
        self,
        shape_out=None,
        batch_size=512,
        epochs=10,
        learning_rate=3e-3,
        loss="contrastive",
        margin=0.1,
        temperature=0.05,
        weight_decay=0.0,
        optimizer="adamw",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        partial_fit_epochs=1,
        verbose=False,
        random_state=None,
        device=None,
    ):
        self.shape_out = shape_out
        self.batch_size = batch_size
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.loss = loss
        self.margin = margin
        self.temperature = temperature
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.partial_fit_epochs = partial_fit_epochs
        self.verbose = verbose
        self.random_state = random_state
        self.device = device

    # -- the network -------------------------------------------------------------------------
    def _build_module(self):
        return _Projection(self.n_features_in_, self._n_features_out)

    def _batch_loss(self, module, x1, x2, y):
        a, b = module(torch.cat([x1, x2])).split(x1.shape[0])  # one matmul for both sides
        if self.loss == "contrastive":
            return _contrastive_loss(a, b, y, float(self.margin))
        if self.loss == "cosine":
            return _cosine_loss(a, b, y)
        return _infonce_loss(a, b, float(self.temperature))

    @property
    def _n_features_out(self):
        return self.n_features_in_ if self.shape_out is None else self.shape_out

    # -- training ----------------------------------------------------------------------------
    def _pairs(self, X1, X2, y, reset):
        if self.loss != "infonce":
            require_y(self, y)
        checked = check_pairs(X1, X2, y, n_features=None if reset else self.n_features_in_)
        # records n_features_in_ (and the column names of a DataFrame X1), or checks them
        check_estimator_input(self, X1, reset=reset, name="X1")
        X1, X2, y = checked
        if self.loss == "contrastive" and not np.isin(y, (0, 1)).all():
            raise ValueError(
                "loss='contrastive' needs 0/1 labels in y (1 = similar); for float scores use "
                f"loss='cosine'. Got values such as {np.unique(y)[:5].tolist()}"
            )
        if self.loss == "infonce":
            if y is not None:
                keep = y == 1
                X1, X2 = X1[keep], X2[keep]
            if X1.shape[0] == 0:
                raise ValueError("loss='infonce' needs positive pairs (y == 1); got none")
            y = np.ones(X1.shape[0], dtype=np.float32)
        return [X1, X2, y]

    def fit(self, X1, X2, y=None):
        """Train a fresh projection on the pairs `(X1[i], X2[i])` with similarity `y[i]`."""
        self._validate_params()
        arrays = self._pairs(X1, X2, y, reset=True)
        with train_threads(self):
            return self._fit_arrays(arrays)

    def partial_fit(self, X1, X2, y=None):
        """Train on one batch of pairs, continuing the current projection and optimizer."""
        first = getattr(self, "module_", None) is None
        if first:
            self._validate_params()
        arrays = self._pairs(X1, X2, y, reset=first)
        with train_threads(self):
            return self._partial_fit_arrays(arrays)

    # -- output ------------------------------------------------------------------------------
    def transform(self, X):
        """The learned embedding of `X`: float32 `(n, shape_out)`, unit length."""
        check_is_fitted(self)
        X = check_estimator_input(self, X, reset=False, allow_empty=True)
        return self._forward(X, lambda m, x: m(x))

    def predict(self, X1, X2):
        """Cosine similarity of each pair `(X1[i], X2[i])` in the learned space, float32."""
        check_is_fitted(self)
        X1, X2, _ = check_pairs(X1, X2, n_features=self.n_features_in_)
        a, b = (self._forward(X, lambda m, x: m(x)) for X in (X1, X2))
        return (a * b).sum(axis=1)

    # -- saving ------------------------------------------------------------------------------
    def save(self, path):
        """Write the fitted learner to `path` (atomically: never a half-written file)."""
        check_is_fitted(self)
        path = os.fspath(path)
        state = self.__getstate__()
        params = self.get_params()
        params.pop("device")  # chosen again on load
        if not isinstance(params["random_state"], (int, type(None))):
            params["random_state"] = None
        fitted = {k: state[k] for k in ("n_features_in_", "n_iter_", "loss_curve_", "history_")}
        if "feature_names_in_" in state:
            fitted["feature_names_in_"] = [str(c) for c in state["feature_names_in_"]]
        # plain python values and tensors only: the file loads with torch's weights_only=True
        payload = {
            "format": _FORMAT,
            "params": params,
            "fitted": fitted,
            "module": state["_module_state"],
            "optimizer": state["_optimizer_state"],
        }
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return path

    @classmethod
    def load(cls, path, device=None):
        """Read a learner written by `save`; it transforms exactly as the saved one did."""
        payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path!r} is not a file written by ContrastiveLearner.save")
        learner = cls(**payload["params"], device=device)
        fitted = payload["fitted"]
        if "feature_names_in_" in fitted:
            fitted["feature_names_in_"] = np.asarray(fitted["feature_names_in_"], dtype=object)
        learner.__dict__.update(fitted)
        learner._rng = check_random_state(learner.random_state)
        learner._restore(payload["module"], payload["optimizer"])
        return learner

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


class ContrastiveTuner(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Fine-tune embeddings towards labels by contrasting pairs, as a pipeline step.

    Each epoch draws fresh pairs from the labels with `generate_pairs` (every item with
    `n_pos` items of its class and `n_neg` items of other classes) and trains a
    `ContrastiveLearner`, built in `fit` from this tuner's parameters, on them. Fresh pairs
    every epoch show the learner far more of the label structure than one fixed sample.
    A 2-D 0/1 `y` is read as multi-label (items sharing a label are similar).

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
        partial_fit_epochs: passes (each with new pairs) over the batch in each `partial_fit`
            call. One pass is the default: on 10-batch streams of 2,000 rows, more passes made
            the learner chase the latest batch (benchmarks/tuners.py).
        weight_decay: weight decay of the optimizer.
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
        "partial_fit_epochs": [Interval(Integral, 1, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
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
        partial_fit_epochs=1,
        weight_decay=0.0,
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
        self.partial_fit_epochs = partial_fit_epochs
        self.weight_decay = weight_decay
        self.verbose = verbose
        self.random_state = random_state
        self.device = device

    def _new_learner(self, seed):
        return ContrastiveLearner(
            shape_out=self.hidden_dim, batch_size=self.batch_size, epochs=1,
            learning_rate=self.learning_rate, loss=self.loss, margin=self.margin,
            weight_decay=self.weight_decay, partial_fit_epochs=1, verbose=False,
            random_state=seed, device=self.device,
        )

    def _labels(self, y, n):
        arr = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
        if arr.ndim == 2 and arr.shape[1] > 1:  # multi-label indicator matrix
            if arr.shape[0] != n:
                raise ValueError(f"y has {arr.shape[0]} rows but X has {n} rows")
            return arr, np.arange(arr.shape[1])
        arr = as_labels(arr, "y", n_samples=n)
        return arr, None

    def _train(self, X, y, passes, max_steps=None):
        batch = int(self.batch_size)
        steps_left = np.inf if max_steps is None else int(max_steps)
        progress = _Progress(passes, self.verbose, type(self).__name__)
        for _ in range(passes):
            if steps_left <= 0:
                break
            i, j, similar = generate_pairs(y, n_neg=self.n_neg, n_pos=self.n_pos,
                                           strategy=self.strategy, random_state=self._rng)
            if i.size > steps_left * batch:  # the last pass within max_steps: fewer pairs
                keep = self._rng.permutation(i.size)[: int(steps_left * batch)]
                i, j, similar = i[keep], j[keep], similar[keep]
            steps_left -= -(-i.size // batch)
            self.learner_.partial_fit(X[i], X[j], similar)
            progress.update(self.learner_.n_iter_, self.learner_.history_[-1])
        progress.close()
        self.n_iter_ = self.learner_.n_iter_
        self.loss_curve_ = list(self.learner_.loss_curve_)
        return self

    def fit(self, X, y):
        """Train a fresh learner on pairs drawn from `(X, y)`; returns `self`."""
        self._validate_params()
        require_y(self, y)
        X = check_estimator_input(self, X, reset=True)
        y, columns = self._labels(y, X.shape[0])
        self.classes_ = columns if columns is not None else np.unique(y)
        self._rng = check_random_state(self.random_state)
        self.learner_ = self._new_learner(self._rng.randint(0, 2**31 - 1))
        return self._train(X, y, int(self.epochs), self.max_steps)

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
        y, columns = self._labels(y, X.shape[0])
        if first:
            self._rng = check_random_state(self.random_state)
            self.learner_ = self._new_learner(self._rng.randint(0, 2**31 - 1))
            if columns is not None:
                self.classes_ = columns
            else:
                self.classes_ = np.unique(y if classes is None else as_labels(classes, "classes"))
        if columns is None:
            encode_known_labels(y, self.classes_)
        elif y.shape[1] != self.classes_.size:
            raise ValueError(
                f"y has {y.shape[1]} label columns, the first batch had {self.classes_.size}"
            )
        return self._train(X, y, int(self.partial_fit_epochs))

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
