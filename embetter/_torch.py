"""Torch plumbing shared by every torch-backed estimator: device choice, seeding, and the one
mini-batch training engine for the small heads (FeedForwardTuner, ContrastiveLearner)."""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
from sklearn.utils import check_random_state

from embetter._skops import torch_state_from_bytes, torch_state_to_bytes


def resolve_device(device=None) -> torch.device:
    """Pick the device: an explicit value wins; `None` means cuda, then mps, then cpu."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device must be None, 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device, got {device!r}"
        ) from e


def device_name(device=None) -> str:
    """The resolved device as a string, as sentence-transformers expects it."""
    return str(resolve_device(device))


def _usable(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available()
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return mps is not None and mps.is_available()
    return True


def seed_from(random_state) -> int:
    """An int seed from anything sklearn accepts as `random_state` (None, int, RandomState)."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Run torch code under `seed` without touching the caller's global RNG state.

    Weight initialisation and dropout draw from torch's global generator; forking it makes two
    fits with the same `random_state` bit-identical on CPU and leaves the user's RNG alone.
    """
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


#: Intra-op threads used while a small head trains on the CPU. Its matrices are a few hundred
#: wide: splitting each op over threads costs more than it saves, and on a busy machine the
#: extra threads spin against each other (measured: 10x slower with 2 threads than with 1 under
#: load). `None` keeps torch's own setting.
CPU_TRAIN_THREADS: int | None = 1


@contextlib.contextmanager
def train_threads(estimator):
    """Train with `CPU_TRAIN_THREADS` threads on the CPU; restore torch's setting afterwards."""
    device = resolve_device(estimator.device)
    before = torch.get_num_threads()
    wanted = CPU_TRAIN_THREADS
    if device.type != "cpu" or wanted is None or wanted >= before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def to_cpu(obj):
    """Deep-copy a (nested) state dict with every tensor moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


class _Progress:
    """An epoch progress bar (tqdm when installed, plain lines otherwise); silent unless verbose."""

    def __init__(self, total: int, verbose, desc: str):
        self.bar = None
        self.verbose = bool(verbose)
        self.desc = desc
        if self.verbose:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, leave=False)
            except ImportError:  # pragma: no cover - tqdm ships with sentence-transformers
                self.bar = None

    def update(self, epoch: int, record: dict):
        if not self.verbose:
            return
        shown = {k: f"{v:.4g}" for k, v in record.items() if k != "epoch"}
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)
        else:
            print(f"{self.desc} epoch {epoch}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))

    def close(self):
        if self.bar is not None:
            self.bar.close()


# -- replay for streams ---------------------------------------------------------------------
# A stream seen once trains each batch while it is there; without replay, the gradient steps a
# small batch earns pull the head towards that batch and away from the earlier ones. Mixing as
# many remembered rows as new ones into each `partial_fit` call keeps the stream close to one
# fit on everything it has seen. The memory is plain data (a dict of aligned numpy arrays and
# a count), so estimators holding it pickle, and store in skops files, like any other state.


def new_replay() -> dict:
    """An empty memory: `rows` (aligned arrays: embeddings, label codes...) and `seen`."""
    return {"rows": None, "seen": 0}


def replay_len(memory: dict) -> int:
    return 0 if memory["rows"] is None else memory["rows"][0].shape[0]


def replay_pool(memory: dict, arrays) -> list:
    """The new rows followed by the remembered ones, as one set of arrays."""
    if not replay_len(memory):
        return list(arrays)
    return [np.concatenate([a, m]) for a, m in zip(arrays, memory["rows"])]


def replay_subsets(memory: dict, n_new: int, rng, at_least: int = 0):
    """A function drawing, on each call, the new rows plus as many remembered ones (fresh ones
    each time; with `at_least`, enough to make that many rows in all), as indices into
    `replay_pool`'s arrays."""
    stored = replay_len(memory)
    new = np.arange(n_new)
    if not stored:
        return lambda: new
    k = min(stored, max(n_new, at_least - n_new))
    return lambda: np.concatenate([new, n_new + rng.choice(stored, k, replace=False)])


def replay_add(memory: dict, arrays, size: int, rng) -> None:
    """Remember new rows as a reservoir sample: every row of the stream is kept with the same
    probability, `size / seen`."""
    size = int(size)
    n = arrays[0].shape[0]
    if size > 0:
        free = min(max(size - replay_len(memory), 0), n)
        if free:
            head = [np.array(a[:free]) for a in arrays]
            memory["rows"] = head if memory["rows"] is None else [
                np.concatenate([m, h]) for m, h in zip(memory["rows"], head)]
        rest = np.arange(free, n)
        if rest.size:
            keep = rng.random_sample(rest.size) < size / (memory["seen"] + rest + 1)
            slots = rng.randint(0, size, size=int(keep.sum()))
            for m, a in zip(memory["rows"], arrays):
                m[slots] = a[rest[keep]]
    memory["seen"] += n


class TorchHeadMixin:
    """The training engine shared by the small torch heads.

    A head trains on *items*, rows of index arrays into one *table* (the embedding matrix):
    `FeedForwardTuner` on `(row, class)`, `ContrastiveLearner` on `(i, j, similar)` pairs. The
    table goes to the device once; each mini-batch is a slice of the items, and the head's
    loss gathers the table rows it needs. A subclass provides `_build_module()` (a fresh
    `torch.nn.Module` built from its parameters and the shapes seen by `fit`) and
    `_batch_loss(module, table, *items)` (a scalar loss for one mini-batch of device tensors).
    The engine owns everything else, the same way for every head:

    - the module is built lazily in `fit` (skorch style), so `clone`/`set_params` stay honest;
    - `fit` starts from scratch, `partial_fit` continues the same network *and* optimizer state;
    - the items of an epoch come from `draw()`, called once per pass: fixed rows, or fresh
      pairs from a `PairSampler` every epoch;
    - `partial_fit` trains a budget that follows the rows it sees, not a count of passes: the
      steps `fit` would spend on the rows seen so far, less those already trained
      (`_fit_steps`), fractions carried over to the next call, so a stream in batches of any
      size trains about as much as one `fit` on the same rows; the optimizer state (Adam's
      moments, step count) carries on;
    - `random_state` seeds initialisation, shuffling and dropout: two fits are bit-identical
      on CPU, and the global torch/numpy RNGs are left untouched;
    - `early_stopping`, `validation_fraction`, `n_iter_no_change` and `tol` mean what they mean
      in sklearn's `MLPClassifier`; `loss_curve_`, `history_` (one record per pass: epoch,
      step, train_loss and, with a validation set, valid_loss) and `n_iter_` record training;
    - pickling stores CPU state dicts (never a live module on a device) and rebuilds on load.

    Parameters read from the estimator: `learning_rate`, `batch_size`, `optimizer`,
    `weight_decay`, `early_stopping`, `validation_fraction`, `n_iter_no_change`, `tol`,
    `verbose`, `random_state`, `device`.
    """

    _EPOCHS_PARAM = "n_epochs"

    # -- subclass hooks ----------------------------------------------------------------------
    def _build_module(self) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _batch_loss(self, module, table, *items) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _items_per_row(self) -> float:
        """Items one pass draws per table row (1 for rows, pairs per row for a sampler)."""
        return 1.0

    def _n_epochs(self, n_rows: int) -> float:
        """Passes `fit` makes over `n_rows` rows: the epochs parameter (a tuner may resolve an
        `"auto"` value from the rows; `fit` rounds it, a stream's budget does not)."""
        return int(getattr(self, self._EPOCHS_PARAM))

    def _fit_steps(self, n_rows: int) -> float:
        """Gradient steps `fit` spends on `n_rows` rows: the budget a stream follows."""
        return n_rows * self._n_epochs(n_rows) * self._items_per_row() / int(self.batch_size)

    # -- state -------------------------------------------------------------------------------
    def _start_training(self):
        """A fresh network and optimizer: what `fit` (and a first `partial_fit`) begins with."""
        self._rng = np.random.RandomState(seed_from(self.random_state))
        self.device_ = resolve_device(self.device)
        with seeded(self._rng.randint(0, 2**31 - 1), self.device_):
            self.module_ = self._build_module().to(self.device_)
        self.optimizer_ = self._make_optimizer(self.module_)
        self.loss_curve_ = []
        self.history_ = []
        self.n_iter_ = 0
        self._step_credit = 0.0
        self._n_steps = 0
        self._n_streamed = 0
        self._replay = new_replay()

    def _make_optimizer(self, module):
        kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[self.optimizer]
        return kind(module.parameters(), lr=float(self.learning_rate),
                    weight_decay=float(self.weight_decay))

    def _check_engine_params(self):
        """Checks for the engine's parameters that `_parameter_constraints` cannot express."""
        if getattr(self, "early_stopping", False) and not 0 < self.validation_fraction < 1:
            raise ValueError(
                "validation_fraction must be in (0, 1) when early_stopping=True, "
                f"got {self.validation_fraction!r}"
            )

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
        table = torch.as_tensor(table, device=device)
        valid = None if valid is None else [torch.as_tensor(a, device=device) for a in valid]
        for group in self.optimizer_.param_groups:  # honour set_params between partial_fits
            group["lr"] = float(self.learning_rate)
            group["weight_decay"] = float(self.weight_decay)

        module, optimizer = self.module_, self.optimizer_
        steps_left = np.inf if max_steps is None else int(max_steps)
        best, best_state, stale = np.inf, None, 0
        name = getattr(self, "_progress_name", type(self).__name__)
        progress = _Progress(epochs, self.verbose, name)
        try:
            with seeded(seed, device):
                for _ in range(epochs):
                    if steps_left <= 0:
                        break
                    items = [torch.as_tensor(a, device=device) for a in draw()]
                    n = items[0].shape[0]
                    if n == 0:
                        break
                    batch_size = max(1, min(int(self.batch_size), n))
                    n_steps = int(min(-(-n // batch_size), steps_left))
                    order = torch.as_tensor(self._rng.permutation(n), device=device)
                    module.train()
                    total = torch.zeros((), device=device)
                    seen = 0
                    for step in range(n_steps):
                        index = order[step * batch_size:(step + 1) * batch_size]
                        loss = self._batch_loss(module, table, *(t[index] for t in items))
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        total += loss.detach() * index.shape[0]
                        seen += index.shape[0]
                    steps_left -= n_steps
                    self._n_steps += n_steps
                    # one device sync per pass, not per step
                    record = {"epoch": self.n_iter_ + 1, "step": self._n_steps,
                              "train_loss": float(total) / seen}
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

    def _split_validation(self, arrays, stratify=None):
        """Hold out `validation_fraction` of the items (stratified when possible)."""
        from sklearn.model_selection import train_test_split

        n = arrays[0].shape[0]
        n_valid = int(np.ceil(self.validation_fraction * n))
        if n_valid < 1 or n - n_valid < 1:
            raise ValueError(
                f"early_stopping needs at least 2 samples (validation_fraction="
                f"{self.validation_fraction} of {n}); turn early_stopping off for tiny data"
            )
        try:
            parts = train_test_split(*arrays, test_size=n_valid, stratify=stratify,
                                     random_state=self._rng.randint(0, 2**31 - 1))
        except ValueError:  # a class too small to stratify: fall back to a plain split
            parts = train_test_split(*arrays, test_size=n_valid,
                                     random_state=self._rng.randint(0, 2**31 - 1))
        return parts[0::2], parts[1::2]

    def _fit_items(self, table, items, stratify=None):
        """`fit` on fixed items: a fresh network, the epochs parameter, stopping rules."""
        self._check_engine_params()
        self._start_training()
        valid = None
        if self.early_stopping:
            items, valid = self._split_validation(items, stratify)
        return self._run(table, lambda: items,
                         epochs=int(round(self._n_epochs(items[0].shape[0]))),
                         stop_early=True, valid=valid)

    def _stream_pool(self, arrays):
        """`partial_fit`'s data: the batch's rows plus the replay memory's, and a function
        drawing each pass's rows (the new ones, as many remembered ones) as pool indices."""
        if getattr(self, "module_", None) is None:
            self._check_engine_params()
            self._start_training()
        return (replay_pool(self._replay, arrays),
                replay_subsets(self._replay, arrays[0].shape[0], self._rng))

    def _remember(self, arrays):
        replay_add(self._replay, arrays, self.replay_size, self._rng)

    def _partial_fit_items(self, table, draw, n_rows: int, budget=None):
        """`partial_fit`: the step budget of `n_rows` new rows, same network and optimizer.

        `budget(n)` is the total of gradient steps a stream has earned after `n` rows
        (default `_fit_steps`: what `fit` would spend on them); a call earns the budget of all
        rows streamed so far minus that of the rows before it, so a whole stream trains as
        much as `budget` says for its rows. Fractions of a step carry over to the next call.
        """
        if getattr(self, "module_", None) is None:
            self._check_engine_params()
            self._start_training()
        budget = self._fit_steps if budget is None else budget
        before = getattr(self, "_n_streamed", 0)
        self._n_streamed = before + n_rows
        self._step_credit += max(0.0, budget(self._n_streamed) - budget(before))
        steps = int(self._step_credit + 1e-9)
        self._step_credit -= steps
        if steps == 0:
            return self
        # every pass takes at least one step: `steps` passes is an upper bound
        return self._run(table, draw, epochs=steps, max_steps=steps)

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
        device = resolve_device(self.device)
        self.device_ = device if _usable(device) else torch.device("cpu")
        module = self._build_module()
        module.load_state_dict(torch_state_from_bytes(module_state))
        self.module_ = module.to(self.device_).eval()
        self.optimizer_ = self._make_optimizer(self.module_)
        if optimizer_state is not None:
            self.optimizer_.load_state_dict(torch_state_from_bytes(optimizer_state))

