"""ContrastiveLearner: learns a new embedding from pairs of embeddings, on the training engine
shared by the small heads (embetter._torch); `PairHead`, the projection and pair losses it
shares with ContrastiveTuner."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from embetter._atomic import atomic_path, user_path
from embetter._estimator_checks import (
    Interval,
    StrOptions,
    all_or_nothing,
    check_estimator_input,
    plain_scalar,
    require_y,
)
from embetter._torch import TorchHeadMixin, available_device, seed_from
from embetter._torch.engine import ENGINE_CONSTRAINTS
from embetter._torch.unit import unit_rows
from embetter._validation import check_pairs
from embetter.base import FitsPairs

_F = torch.nn.functional
_FORMAT = "embetter.ContrastiveLearner/1"


class _Projection(torch.nn.Module):
    """x -> W x, scaled to unit length. W starts as the identity (or a random rotation when
    the output size differs), so training begins from the pretrained geometry and only has to
    learn how to bend it."""

    def __init__(self, n_in, n_out):
        super().__init__()
        # float32 whatever the caller's default dtype: the seed alone decides the start
        self.linear = torch.nn.Linear(n_in, n_out, bias=False, dtype=torch.float32)
        with torch.no_grad():
            if n_in == n_out:
                self.linear.weight.copy_(torch.eye(n_out, dtype=torch.float32))
            else:
                torch.nn.init.orthogonal_(self.linear.weight)

    def forward(self, x):
        return unit_rows(self.linear(x))


def _cosine_margin_loss(a, b, y, margin):
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


#: The old name of the "cosine_margin" loss: sentence-transformers' ContrastiveLoss, which users
#: know by that name, is other maths (a distance margin of 0.5, `1 - cos`, halved).
_DEPRECATED_LOSSES = {"contrastive": "cosine_margin"}


def _renamed(loss):
    """A loss name as it is called now (a deprecated one: its successor's)."""
    return _DEPRECATED_LOSSES.get(loss, loss)


def resolve_loss(estimator) -> str:
    """The estimator's `loss`, with a FutureWarning for a deprecated name (during fit;
    `stacklevel` points at the caller of `fit`: fit, `all_or_nothing`, `_fit`, here)."""
    loss = estimator.loss
    if loss in _DEPRECATED_LOSSES:
        new = _DEPRECATED_LOSSES[loss]
        warnings.warn(
            f"{type(estimator).__name__}(loss={loss!r}) is deprecated and will be removed: it "
            f"is a cosine-margin loss (dissimilar pairs are pushed until their cosine "
            f"similarity is below `margin`), not sentence-transformers' ContrastiveLoss (a "
            f"distance margin of 0.5). Use loss={new!r} for the same training.",
            FutureWarning, stacklevel=5,
        )
        return new
    return loss


class PairHead(TorchHeadMixin):
    """A head on the engine that trains a `_Projection` on index pairs `(i, j, similar)`:
    `ContrastiveLearner` (pairs given) and `ContrastiveTuner` (pairs drawn from labels)."""

    def _build_module(self):
        return _Projection(self.n_features_in_, self._out_width())

    @property
    def _n_features_out(self):
        """The fitted projection's width (a `set_params` without a refit changes the next fit,
        not this one; unfitted: none, so `get_feature_names_out` says so)."""
        module = self.__dict__.get("module_")
        if module is None:
            raise AttributeError("_n_features_out: not fitted yet")
        return module.linear.out_features

    def _batch_loss(self, module, table, i, j, y):
        # one gather and one matmul for both sides of the pairs
        a, b = module(table[torch.cat([i, j])]).split(i.shape[0])
        loss = _renamed(self.loss)
        if loss == "cosine_margin":
            return _cosine_margin_loss(a, b, y, float(self.margin))
        if loss == "cosine":
            return _cosine_loss(a, b, y)
        return _infonce_loss(a, b, float(self.temperature))

    def __setstate__(self, state):
        # saved before the rename (embetter 0.10, where it was the learner's default): the
        # same maths under its new name, so a loaded head carries on without a warning
        if state.get("loss") in _DEPRECATED_LOSSES:
            state["loss"] = _DEPRECATED_LOSSES[state["loss"]]
        settled = state.get("_architecture") or {}
        if settled.get("loss") in _DEPRECATED_LOSSES:  # what a stream's start settled, too
            state["_architecture"] = {**settled, "loss": _DEPRECATED_LOSSES[settled["loss"]]}
        super().__setstate__(state)


#: `_parameter_constraints` of the pair loss, shared with ContrastiveTuner
LOSS_CONSTRAINTS = {
    "loss": [StrOptions({"cosine_margin", "cosine", "infonce", "contrastive"},
                        deprecated={"contrastive"})],
    "margin": [Interval(Real, -1, 1, closed="both")],
    "temperature": [Interval(Real, 0, None, closed="neither")],
}


class ContrastiveLearner(PairHead, ClassNamePrefixFeaturesOutMixin, FitsPairs, TransformerMixin,
                         BaseEstimator):
    """Learn a new embedding from pairs of embeddings that should (not) be similar.

    A single linear map `W` (shared by both sides of a pair, output scaled to unit length)
    is trained so that the cosine similarity of `(W x1, W x2)` follows `y`. `W` starts as the
    identity (a random orthogonal map when `shape_out` differs from the input width), so the
    learner bends the pretrained space instead of replacing it. Losses, by
    the data they expect:

    - `"cosine_margin"`: 0/1 labels; similar pairs are pulled to a cosine similarity of 1,
      dissimilar pairs pushed apart until their cosine similarity is below `margin`
      (`y (1 - cos)^2 + (1 - y) max(0, cos - margin)^2`). It was called `"contrastive"`, which
      still works with a FutureWarning; sentence-transformers' ContrastiveLoss is other maths
      (a margin of 0.5 on the distance `1 - cos`: pushes only pairs with cos > 0.5).
    - `"cosine"`: float scores; the cosine similarity is regressed onto `y` (mean squared error).
    - `"infonce"`: positive pairs only (`y` may be omitted; pairs with `y == 0` are skipped);
      for each pair, the second items of the other pairs in the batch act as negatives.

    Arguments:
        shape_out: output dimension; `None` keeps the input dimension.
        batch_size: pairs per gradient step.
        epochs: maximum passes over the pairs in `fit`.
        learning_rate: step size of the optimizer.
        loss: `"cosine_margin"`, `"cosine"` or `"infonce"` (see above).
        margin: cosine similarity below which dissimilar pairs stop being pushed apart.
        temperature: softmax temperature of the `"infonce"` loss.
        weight_decay: weight decay of the optimizer.
        optimizer: `"adamw"` or `"adam"`.
        early_stopping: stop when the loss on a held-out share of the pairs has not improved
            by `tol` for `n_iter_no_change` epochs (False: the training loss decides), as in
            sklearn's MLP.
        validation_fraction: the share of pairs held out with `early_stopping`.
        n_iter_no_change: epochs without improvement before training stops.
        tol: the least improvement of the loss that counts.
        replay_size: pairs of earlier `partial_fit` batches remembered (a uniform sample) and
            mixed, as many as new ones, into each call's training; 0 turns replay off.
        verbose: show a progress bar with the loss per epoch.
        random_state: seed for initialisation and shuffling (int for repeatable fits).
        device: `None` (cuda, then mps, then cpu), `"cpu"`, `"cuda"`, ...

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
        **LOSS_CONSTRAINTS,
        **ENGINE_CONSTRAINTS,
    }

    def __init__(
        self,
        shape_out=None,
        batch_size=512,
        epochs=10,
        learning_rate=3e-3,
        loss="cosine_margin",
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

    # (and the loss: a stream's replay memory holds pairs labelled for the loss it began with)
    _ARCHITECTURE = ("shape_out", "optimizer", "loss")

    def _settled(self, name):
        value = getattr(self, name)  # (a deprecated loss name is its successor's training)
        return _renamed(value) if name == "loss" else value

    def _out_width(self) -> int:
        width = self._arch("shape_out")
        return self.n_features_in_ if width is None else width

    def _items(self, rows, anchors, partners=None):
        """Pairs `(i, j, y)` of the rows `anchors()` picks, over one table: X1 rows, then X2."""
        X1, X2, y = rows
        n = X1.shape[0]

        def draw():
            picked = anchors()
            return [picked, n + picked, y[picked]]

        return np.concatenate([X1, X2]), draw

    # -- training ----------------------------------------------------------------------------
    def fit(self, X1, X2, y=None):
        """Train a fresh projection on the pairs `(X1[i], X2[i])` with similarity `y[i]`."""
        return self._fit(X1, X2, y, incremental=False)

    def partial_fit(self, X1, X2, y=None):
        """Train on one batch of pairs, continuing the current projection and optimizer.

        Each call trains as many gradient steps per pair as `fit` (`epochs / batch_size`,
        fractions carried to the next call): a stream of pairs in batches of any size trains
        about as much as one `fit` on all of them.
        """
        return self._fit(X1, X2, y, incremental=True)

    @all_or_nothing
    def _fit(self, X1, X2, y, incremental):
        """Check the pairs and train on them (see the engine)."""
        first = not incremental or getattr(self, "module_", None) is None
        self._validate_params()  # every call: set_params may come between partial_fits
        loss = resolve_loss(self)
        if loss != "infonce":
            require_y(self, y)
        checked = check_pairs(X1, X2, y, n_features=None if first else self.n_features_in_)
        # records n_features_in_ (and the column names of a DataFrame X1), or checks them
        check_estimator_input(self, X1, reset=first, name="X1")
        X1, X2, y = checked
        if (loss in ("cosine_margin", "infonce") and y is not None
                and not np.isin(y, (0, 1)).all()):  # (infonce skipped other values silently)
            raise ValueError(
                f"loss={self.loss!r} needs 0/1 labels in y (1 = similar); for float scores use "
                f"loss='cosine'. Got values such as {np.unique(y)[:5].tolist()}"
            )
        if loss == "cosine" and (y.min() < -1 or y.max() > 1):  # a cosine never reaches them
            raise ValueError(
                f"loss='cosine' needs scores in [-1, 1] (it regresses the cosine similarity), "
                f"got values from {y.min():g} to {y.max():g}; rescale them (e.g. y / 5 for STS "
                "scores)")
        if loss == "infonce":
            if y is not None:
                keep = y == 1
                X1, X2 = X1[keep], X2[keep]
            if X1.shape[0] == 0:
                raise ValueError("loss='infonce' needs positive pairs (y == 1); got none")
            y = np.ones(X1.shape[0], dtype=np.float32)
        return self._train([X1, X2, y], incremental)

    # -- output ------------------------------------------------------------------------------
    def transform(self, X):
        """The learned embedding of `X`: float32 `(n, shape_out)`, unit length."""
        check_is_fitted(self)
        X = check_estimator_input(self, X, reset=False, allow_empty=True)
        return self._forward(X, lambda m, x: m(x))

    def predict(self, X1, X2):
        """Cosine similarity of each pair `(X1[i], X2[i])` in the learned space, float32."""
        check_is_fitted(self)
        # X1's column names as in fit, as transform checks them (X2's may differ: pairs of
        # frames often name their sides apart, left_0 / right_0; their count is checked)
        check_estimator_input(self, X1, reset=False, allow_empty=True, name="X1")
        X1, X2, _ = check_pairs(X1, X2, n_features=self.n_features_in_, allow_empty=True)
        if X1.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        a, b = (self._forward(X, lambda m, x: m(x)) for X in (X1, X2))
        return (a * b).sum(axis=1)

    # -- saving ------------------------------------------------------------------------------
    def save(self, path):
        """Write the fitted learner to `path` (atomically: never a half-written file)."""
        check_is_fitted(self)
        path = user_path(path)
        state = self.__getstate__()
        params = self.get_params()
        params.pop("device")  # chosen again on load
        # as trained, whatever set_params did (but the device: chosen again on load)
        settled = {k: v for k, v in state.get("_architecture", {}).items() if k != "device"}
        params.update(settled)
        if isinstance(params["random_state"], Integral):  # numpy's ints too
            params["random_state"] = int(params["random_state"])
        elif params["random_state"] is not None:  # a RandomState: not plain data
            params["random_state"] = None
        # numpy scalars (np.float64(1e-3), np.bool_) as plain values: `load` reads plain data
        params = {k: plain_scalar(v) for k, v in params.items()}
        fitted = {k: state[k] for k in ("n_features_in_", "n_iter_", "loss_curve_", "history_",
                                        "_step_credit", "_n_steps", "_n_streamed",
                                        "refit_rows_") if k in state}
        # what the stream's start settled, and where its random draws are: a loaded learner
        # goes on (and refuses set_params) exactly as the pickled one does
        fitted["_architecture"] = {k: plain_scalar(v) for k, v in settled.items()}
        if "_credited" in state:  # the stream's steps so far, and the settings they count in
            credited, counted_in = state["_credited"]
            fitted["_credited"] = (float(credited), None if counted_in is None
                                   else tuple(plain_scalar(v) for v in counted_in))
        kind, keys, pos, has_gauss, cached = state["_rng"].get_state()
        fitted["_rng_state"] = {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                                "has_gauss": int(has_gauss), "cached": float(cached)}
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
        if device is not None:  # asked for by name: one this machine lacks is refused, as
            available_device(device)  # fit refuses it (a file saved on a GPU loads anyway)
        source = user_path(path)
        try:
            payload = torch.load(source, map_location="cpu", weights_only=True)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as e:  # not a torch file at all (torch's own error names no path)
            raise ValueError(f"{path!r} is not a file written by ContrastiveLearner.save (torch "
                             f"could not read it: {type(e).__name__})") from e
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path!r} is not a file written by ContrastiveLearner.save")
        missing = [k for k in ("params", "fitted", "module", "optimizer", "replay")
                   if k not in payload]
        if missing:
            raise ValueError(f"{path!r} is not a complete file written by "
                             f"ContrastiveLearner.save: it has no {', '.join(missing)}")
        params = payload["params"]
        params["loss"] = _renamed(params["loss"])  # see __setstate__
        learner = cls(**params, device=device)
        fitted = payload["fitted"]
        if "feature_names_in_" in fitted:
            fitted["feature_names_in_"] = np.asarray(fitted["feature_names_in_"], dtype=object)
        rng_state = fitted.pop("_rng_state", None)
        learner.__dict__.update(fitted)
        settled = learner.__dict__.get("_architecture", {})
        if "loss" in settled:  # as the parameter above: an older name is today's
            settled["loss"] = _renamed(settled["loss"])
        learner._rng = np.random.RandomState(seed_from(learner.random_state))
        if rng_state is not None:  # (files of 0.x before it was saved start from the seed)
            learner._rng.set_state(("MT19937", rng_state["keys"].numpy().astype(np.uint32),
                                    rng_state["pos"], rng_state["has_gauss"],
                                    rng_state["cached"]))
        replay = payload["replay"]
        learner._replay = {"seen": replay["seen"], "rows": [t.numpy() for t in replay["rows"]]
                           or None}
        learner._restore(payload["module"], payload["optimizer"])
        return learner

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.target_tags.required = self.loss != "infonce"  # (fit's third argument)
        return tags
