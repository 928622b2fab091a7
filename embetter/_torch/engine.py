"""The one mini-batch training engine of the small torch heads (FeedForwardTuner,
ContrastiveTuner, ContrastiveLearner): `fit` and `partial_fit` both run `_train`."""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch

from embetter._estimator_checks import (
    Interval,
    StrOptions,
    check_stream_settled,
    refuse_bool_numbers,
)
from embetter._state_bytes import torch_state_from_bytes, torch_state_to_bytes
from embetter._torch.device import (
    available_device,
    grad_enabled,
    restored_device,
    seed_from,
    seeded,
    to_cpu,
    train_threads,
)
from embetter._torch.fit import FitTraining
from embetter._torch.progress import Progress
from embetter._torch.replay import new_replay
from embetter._torch.rollback import roll_back, snapshot
from embetter._torch.stream import StreamTraining

#: `_parameter_constraints` of the parameters the engine reads, shared by the heads (a head
#: may leave some out: ContrastiveTuner sets its own `learning_rate` and no `optimizer`).
ENGINE_CONSTRAINTS = {
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "optimizer": [StrOptions({"adam", "adamw"})],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0, None, closed="left")],
    "replay_size": [Interval(Integral, 0, None, closed="left")],
    "verbose": ["verbose"],
    "random_state": ["random_state"],
    "device": [None, str, torch.device],
}


class TorchHeadMixin(FitTraining, StreamTraining):
    """The training engine shared by the small torch heads.

    A head trains on *items*, rows of index arrays into one *table* (the embedding matrix):
    `FeedForwardTuner` on `(row, class)`, `ContrastiveLearner` and `ContrastiveTuner` on
    `(i, j, similar)` pairs. The table goes to the device once; each mini-batch is a slice of
    the items, and the head's loss gathers the table rows it needs. A head checks its input,
    turns it into aligned arrays of *rows* (`[X, codes]`, `[X1, X2, y]`) and calls
    `_train(rows, incremental)`, as scikit-learn's MLP calls its `_fit`. It provides:

    - `_build_module()`: a fresh `torch.nn.Module` from its parameters and fitted shapes;
    - `_batch_loss(module, table, *items)`: a scalar loss for one mini-batch of device tensors;
    - `_items(rows, anchors, partners=None)`: the table and a `draw()` giving the items of one
      pass over the rows `anchors()` picks. In `fit`, `partners` holds the same rows (all, or
      those not held out for validation) and a pair head draws both sides of its pairs among
      them; in a stream (and for the fixed validation items) it is `None`, and partners may
      be any row (new or remembered).

    The engine owns everything else, the same way for every head:

    - the module is built lazily (skorch style), so `clone`/`set_params` stay honest;
    - `fit` starts from scratch, `partial_fit` continues the same network *and* optimizer state;
    - `partial_fit` trains a budget that follows the rows it sees, not a count of passes: each
      call the share of `fit`'s steps its new rows earn (`_stream_budget` of the rows seen,
      less that of the rows before them; the stream's first training call at least what
      `fit` takes on its rows, a step a pass), fractions carried over to the next call, so a
      stream in batches of any size trains about as much as one `fit` on the same rows; each
      pass mixes as many rows of the replay memory (a uniform sample of the stream) as new
      ones, and a call that brings the rows seen to `refit_growth` times those of the last
      start retrains from the start as `fit` (`StreamTraining`, in stream.py; `fit` itself is
      `FitTraining`, in fit.py);
    - one RandomState (`_rng`, from `random_state`) seeds initialisation, shuffling, dropout,
      pairs and the replay memory: two fits are bit-identical on CPU, and the global torch
      RNG is left untouched (with `random_state=None` the seed is drawn from numpy's global
      RNG, as scikit-learn draws it);
    - `early_stopping`, `validation_fraction`, `n_iter_no_change` and `tol` mean what they mean
      in sklearn's `MLPClassifier`; `loss_curve_`, `history_` (one record per pass: epoch,
      step, train_loss and, with a validation set, valid_loss) and `n_iter_` record training;
    - torch's CPU thread count is lowered while training and put back afterwards;
    - pickling stores CPU state dicts (never a live module on a device) and rebuilds on load.

    Parameters read from the estimator: `learning_rate`, `batch_size`, `optimizer`,
    `weight_decay`, `early_stopping`, `validation_fraction`, `n_iter_no_change`, `tol`,
    `replay_size`, `verbose`, `random_state`, `device`.
    """

    _EPOCHS_PARAM = "n_epochs"

    def _validate_params(self):
        super()._validate_params()
        refuse_bool_numbers(self)

    # -- head hooks --------------------------------------------------------------------------
    def _build_module(self) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _batch_loss(self, module, table, *items) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _items(self, rows, anchors, partners=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def _stratify(self, rows):
        """Labels to stratify an early-stopping split by (`None`: a plain split)."""
        return None

    def _items_per_row(self) -> float:
        """Items one pass draws per row (1 for rows, pairs per row for a sampler)."""
        return 1.0

    def _n_epochs(self, n_rows: int) -> float:
        """Passes `fit` makes over `n_rows` rows: the epochs parameter (a tuner may resolve an
        `"auto"` value from the rows; `fit` rounds it, a stream's budget does not)."""
        return int(getattr(self, self._EPOCHS_PARAM))

    def _learning_rate(self) -> float:
        """The optimizer's step size: the `learning_rate` parameter (a head may resolve an
        `"auto"` value from what `fit` saw)."""
        return float(self.learning_rate)

    def _max_steps(self):
        """At most this many gradient steps in `fit` (`None`: no limit)."""
        return None

    def _fit_steps(self, n_rows: int) -> float:
        """Gradient steps `fit` spends on `n_rows` rows (a step per batch of items; `fit`
        takes at least one a pass, which a stream's first call takes too, see `_stream`)."""
        return n_rows * self._n_epochs(n_rows) * self._items_per_row() / int(self.batch_size)

    def _penalty(self, module):
        """A regulariser added to each training step's loss (not to the recorded losses), or
        `None` (default)."""
        return None

    # -- the one entry point -----------------------------------------------------------------
    def _train(self, rows, incremental: bool):
        """Train on `rows` (aligned arrays, one entry per row): from scratch, or, when
        `incremental`, continuing the current network, optimizer and replay memory."""
        saved = None
        if not incremental or getattr(self, "module_", None) is None:
            self._start_training()
        else:
            # a set_params that reshapes the network is refused, not taken at a retrain
            check_stream_settled(self, self.__dict__.get("_architecture", {}), self._settled)
            with grad_enabled():  # copies that train again, even under inference_mode
                saved = snapshot(self)
        try:
            with train_threads(self.device_):
                if incremental:
                    self._stream(rows)
                else:
                    self._fit_all(rows)
        except BaseException:
            if saved is not None:
                with grad_enabled():
                    roll_back(self, saved)
            raise
        return self

    #: the parameters that shape the network (`_arch` reads them) or settle how a stream
    #: trains (its optimizer, its loss): recorded when it is built, so a pickle or saved file
    #: rebuilds the network trained, whatever `set_params` did since, and a stream's later
    #: call refuses a new value (it would be ignored until a retrain took it silently)
    _ARCHITECTURE: tuple = ()

    def _arch(self, name):
        """A parameter that shapes the network, as it was when the network was built."""
        return self.__dict__.get("_architecture", {}).get(name, getattr(self, name))

    def _settled(self, name):
        """A parameter of `_ARCHITECTURE` in the form a stream's start keeps it."""
        return getattr(self, name)

    def _start_training(self, within_stream: bool = False):
        """A fresh network, optimizer, RNG and replay memory. `within_stream`: a stream's
        retrain, which goes on where the stream runs when the device it started with is not
        on this machine (a head trained on a GPU, loaded on a CPU-only one), as every call
        before it did; a device set since then must be there."""
        self._rng = np.random.RandomState(seed_from(self.random_state))
        started = self.__dict__.get("_started_device", self.device)
        restored = within_stream and _same_setting(self.device, started)
        self.device_ = (restored_device if restored else available_device)(self.device)
        if not within_stream:
            self._started_device = self.device
        self._architecture = {name: self._settled(name) for name in self._ARCHITECTURE}
        # float32 (the rows' dtype) whatever the caller set as torch's default dtype
        with seeded(self._rng.randint(0, 2**31 - 1), self.device_), grad_enabled():
            # built on the CPU (its seeded generator) whatever torch's default device
            with torch.device("cpu"):
                module = self._build_module()
            self.module_ = module.to(self.device_, torch.float32)
        self.optimizer_ = self._make_optimizer(self.module_)
        self.loss_curve_ = []
        self.history_ = []
        self.n_iter_ = 0
        self._step_credit = 0.0
        self._credited = (0.0, None)
        self._n_steps = 0
        self._n_streamed = 0
        self._replay = new_replay()
        self.refit_rows_ = 0

    def _make_optimizer(self, module):
        # a head without an `optimizer` parameter (ContrastiveTuner) trains with AdamW
        kind = {"adam": torch.optim.Adam,
                "adamw": torch.optim.AdamW}[getattr(self, "optimizer", "adamw")]
        return kind(module.parameters(), lr=self._learning_rate(),
                    weight_decay=float(self.weight_decay))

    # -- the loop ----------------------------------------------------------------------------
    def _run(self, table, draw, *, epochs: int, max_steps=None, stop_early: bool = False,
             valid=None):
        """Train `self.module_` for up to `epochs` passes and at most `max_steps` steps.

        `table` (numpy) goes to the device once; `draw()` gives the items of one pass (numpy
        arrays of one length); `valid`, fixed items for the validation loss. `stop_early`
        enables sklearn-style stopping: on the validation loss when `valid` is given (best
        weights restored), otherwise on the training loss.
        """
        device = self.device_
        seed = self._rng.randint(0, 2**31 - 1)
        # a copy of a read-only array (a memmap): torch warns on tensors it cannot write
        table = torch.as_tensor(table if table.flags.writeable else table.copy(), device=device)
        valid = None if valid is None else [torch.as_tensor(a, device=device) for a in valid]
        for group in self.optimizer_.param_groups:  # honour set_params between partial_fits
            group["lr"] = self._learning_rate()
            group["weight_decay"] = float(self.weight_decay)

        module = self.module_
        steps_left = np.inf if max_steps is None else int(max_steps)
        best, best_state, stale = np.inf, None, 0
        progress = Progress(epochs, self.verbose, type(self).__name__)
        try:
            # a caller's torch.no_grad() or inference_mode() must not stop training
            with seeded(seed, device), grad_enabled():
                for _ in range(epochs):
                    if steps_left <= 0:
                        break
                    items = [torch.as_tensor(a, device=device) for a in draw()]
                    n = items[0].shape[0]
                    if n == 0:
                        break
                    batch_size = max(1, min(int(self.batch_size), n))
                    n_steps = int(min(-(-n // batch_size), steps_left))
                    train_loss = self._one_pass(table, items, batch_size, n_steps)
                    steps_left -= n_steps
                    self._n_steps += n_steps
                    record = {"epoch": self.n_iter_ + 1, "step": self._n_steps,
                              "train_loss": train_loss}
                    if valid is not None:
                        record["valid_loss"] = self._eval_loss(module, table, valid, batch_size)
                    self.n_iter_ += 1
                    self.loss_curve_.append(record["train_loss"])
                    self.history_.append(record)
                    progress.update(self.n_iter_, record)
                    watched = record.get("valid_loss", record["train_loss"])
                    if not np.isfinite(watched):
                        raise FloatingPointError(
                            f"{type(self).__name__}: the loss became {watched} at epoch "
                            f"{self.n_iter_}; lower learning_rate"
                        )
                    if not stop_early:
                        continue
                    # sklearn MLP rule: an epoch counts as progress when it beats the best by tol
                    stale = stale + 1 if watched > best - self.tol else 0
                    if watched < best:
                        best = watched
                        if valid is not None:
                            best_state = copy.deepcopy(module.state_dict())
                    if stale >= self.n_iter_no_change:
                        break
        finally:
            progress.close()
        if best_state is not None:  # early stopping keeps the weights of the best epoch
            module.load_state_dict(best_state)
        module.eval()
        return self

    def _one_pass(self, table, items, batch_size: int, n_steps: int) -> float:
        """`n_steps` optimiser steps over the items in a seeded random order: the mean loss
        of the items seen (one device sync per pass, not per step)."""
        module, optimizer = self.module_, self.optimizer_
        n = items[0].shape[0]
        order = torch.as_tensor(self._rng.permutation(n), device=self.device_)
        module.train()
        # float32 whatever torch's default dtype (float16 overflowed at 65504)
        total = torch.zeros((), device=self.device_, dtype=torch.float32)
        seen = 0
        for step in range(n_steps):
            index = order[step * batch_size:(step + 1) * batch_size]
            loss = self._batch_loss(module, table, *(t[index] for t in items))
            penalty = self._penalty(module)
            optimizer.zero_grad(set_to_none=True)
            (loss if penalty is None else loss + penalty).backward()
            optimizer.step()
            total += loss.detach() * index.shape[0]
            seen += index.shape[0]
        return float(total) / seen

    def _eval_loss(self, module, table, items, batch_size) -> float:
        module.eval()
        n = items[0].shape[0]
        total = 0.0
        with torch.no_grad():
            for start in range(0, n, batch_size):
                batch = [t[start:start + batch_size] for t in items]
                total += float(self._batch_loss(module, table, *batch)) * batch[0].shape[0]
        module.train()
        return total / n

    def _forward(self, X: np.ndarray, fn, batch_size: int = 4096) -> np.ndarray:
        """Apply `fn(module, x)` to X in eval mode, in chunks, and return float32 numpy."""
        module = self.module_
        module.eval()
        out = []
        with torch.no_grad():
            for start in range(0, X.shape[0], batch_size):
                x = torch.tensor(X[start:start + batch_size], device=self.device_)
                out.append(fn(module, x).float().cpu().numpy())
        if not out:
            return np.zeros((0, self._n_features_out), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    # -- pickling ----------------------------------------------------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: the default state is the live __dict__
        module = state.pop("module_", None)
        optimizer = state.pop("optimizer_", None)
        if module is not None:
            # Plain CPU tensors: the pickle loads on a machine without the training device.
            # as bytes: data that skops can store, read back with torch.load(weights_only=True)
            state["_module_state"] = torch_state_to_bytes(to_cpu(module.state_dict()))
            state["_optimizer_state"] = torch_state_to_bytes(to_cpu(optimizer.state_dict()))
            state.pop("device_", None)
        return state

    def __setstate__(self, state):
        module_state = state.pop("_module_state", None)
        optimizer_state = state.pop("_optimizer_state", None)
        super().__setstate__(state)
        if module_state is not None:
            self._restore(module_state, optimizer_state)

    def _restore(self, module_state, optimizer_state=None):
        """Rebuild the module from the parameters and fitted shapes, then load its weights."""
        self.device_ = restored_device(self.device)
        # the weights are loaded: keep the caller's RNG
        with torch.random.fork_rng(devices=[]), grad_enabled():
            with torch.device("cpu"):  # whatever torch's default device
                module = self._build_module().to(torch.float32)
            module.load_state_dict(torch_state_from_bytes(module_state))
        self.module_ = module.to(self.device_).eval()
        self.optimizer_ = self._make_optimizer(self.module_)
        if optimizer_state is not None:
            with grad_enabled():  # (loaded under inference_mode: moments training can update)
                self.optimizer_.load_state_dict(torch_state_from_bytes(optimizer_state))


def _same_setting(a, b) -> bool:
    """Whether two `device` settings are the same one (a str, a torch.device or None)."""
    return a is b or (a is not None and b is not None and str(a) == str(b))
