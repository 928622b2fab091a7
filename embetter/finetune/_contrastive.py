"""ContrastiveLearner: learns a new embedding from pairs of embeddings, on the training engine
shared by the small heads (embetter._torch)."""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from embetter._atomic import atomic_path
from embetter._torch import TorchHeadMixin, train_threads
from embetter._validation import (
    check_estimator_input,
    check_pairs,
    require_y,
)

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
        replay_size: pairs of earlier `partial_fit` batches remembered (a uniform sample) and
            mixed, as many as new ones, into each call's training; 0 turns replay off.
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
        "replay_size": [Interval(Integral, 0, None, closed="left")],
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
        replay_size=2048,
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
        self.replay_size = replay_size
        self.verbose = verbose
        self.random_state = random_state
        self.device = device

    # -- the network -------------------------------------------------------------------------
    def _build_module(self):
        return _Projection(self.n_features_in_, self._n_features_out)

    def _batch_loss(self, module, table, i, j, y):
        # one gather and one matmul for both sides of the pairs
        a, b = module(table[torch.cat([i, j])]).split(i.shape[0])
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
        """The checked pairs as one table (X1 rows, then X2 rows) and items `(i, j, y)`."""
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
        X1, X2, y = self._pairs(X1, X2, y, reset=True)
        n = X1.shape[0]
        # one table (X1 rows, then X2 rows); the pairs are index triples into it
        items = [np.arange(n), np.arange(n, 2 * n), y]
        with train_threads(self):
            return self._fit_items(np.concatenate([X1, X2]), items)

    def partial_fit(self, X1, X2, y=None):
        """Train on one batch of pairs, continuing the current projection and optimizer.

        Each call trains as many gradient steps per pair as `fit` (`epochs / batch_size`,
        fractions carried to the next call): a stream of pairs in batches of any size trains
        about as much as one `fit` on all of them.
        """
        first = getattr(self, "module_", None) is None
        if first:
            self._validate_params()
        batch = self._pairs(X1, X2, y, reset=first)
        (X1, X2, y), rows = self._stream_pool(batch)
        n = X1.shape[0]

        def draw():
            picked = rows()
            return [picked, n + picked, y[picked]]

        with train_threads(self):
            self._partial_fit_items(np.concatenate([X1, X2]), draw, batch[0].shape[0])
        self._remember(batch)
        return self

    def _fit_sampler(self, table, draw, *, epochs, max_steps=None, valid=None):
        """`fit` on pairs drawn by `draw()` each epoch, as index triples into `table` (already
        checked): the path of `ContrastiveTuner`, which never copies pair rows. With `valid`
        (fixed index triples), stop early on their loss and keep the best epoch's weights."""
        self._check_engine_params()
        self.n_features_in_ = table.shape[1]
        self._start_training()
        with train_threads(self):
            return self._run(table, draw, epochs=epochs, max_steps=max_steps,
                             stop_early=valid is not None, valid=valid)

    def _partial_fit_sampler(self, table, draw, n_rows, budget):
        if getattr(self, "module_", None) is None:
            self.n_features_in_ = table.shape[1]
        with train_threads(self):
            return self._partial_fit_items(table, draw, n_rows, budget)

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
        fitted = {k: state[k] for k in ("n_features_in_", "n_iter_", "loss_curve_", "history_",
                                        "_step_credit", "_n_steps")}
        memory = state["_replay"]
        if "feature_names_in_" in state:
            fitted["feature_names_in_"] = [str(c) for c in state["feature_names_in_"]]
        # plain python values and tensors only: the file loads with torch's weights_only=True
        payload = {
            "format": _FORMAT,
            "params": params,
            "fitted": fitted,
            "module": state["_module_state"],
            "optimizer": state["_optimizer_state"],
            "replay": {"seen": memory["seen"],
                       "rows": [torch.from_numpy(a) for a in memory["rows"] or []]},
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(payload, f)
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
        replay = payload["replay"]
        learner._replay = {"seen": replay["seen"], "rows": [t.numpy() for t in replay["rows"]]
                           or None}
        learner._restore(payload["module"], payload["optimizer"])
        return learner

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
