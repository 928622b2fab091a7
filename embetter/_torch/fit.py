"""How a head's `fit` trains: every row for the epochs parameter, with scikit-learn's
stopping rules, and early stopping's split of the rows. Mixed into `TorchHeadMixin`, whose
`_train` calls `_fit_all` (and `StreamTraining`'s retrain, `_fit_plan` and `_fit_planned`)."""

from __future__ import annotations

import numpy as np

# (at import, not inside a fit: scikit-learn's subpackages import rich on first use, which
# draws from Python's `random` then, and a caller's seeded sequence shifted at the first fit)
from sklearn.model_selection import train_test_split

from embetter._torch.replay import replay_add


class UnusableSplit(ValueError):
    """Early stopping's split of the rows leaves nothing to validate or to train on."""


class FitTraining:
    """`fit` for the engine's heads (see `TorchHeadMixin`): `_fit_all(rows)`.

    Uses the engine's `_items`, `_run`, `_n_epochs`, `_max_steps` and `_stratify`.
    """

    #: `fit` without a validation set also stops when the training loss stalls (sklearn MLP)
    _STOP_ON_TRAIN_LOSS = True
    #: rows each side of an early-stopping split needs at least
    _MIN_SPLIT_ROWS = 1

    def _fit_all(self, rows):
        """`fit`: the epochs parameter over all rows, with sklearn's stopping rules; with
        `early_stopping`, on the rows not held out, watching the loss on the held-out ones."""
        self._fit_planned(rows, self._fit_plan(rows))

    def _fit_plan(self, rows):
        """What `_fit_all` trains on: (train rows, validation items or None, table, draw).
        Changes nothing but the RNG; `UnusableSplit` where early stopping's split leaves
        nothing to validate or to train on."""
        n = rows[0].shape[0]
        train, valid = np.arange(n), None
        if self.early_stopping:
            train, held = self._split(n, self._stratify(rows))
            valid = self._validation_items(rows, held)
            if valid[0].shape[0] == 0:
                raise UnusableSplit(
                    f"early_stopping: the {held.size} held-out rows (validation_fraction="
                    f"{self.validation_fraction} of {n}) give no validation pairs; raise "
                    "validation_fraction or set early_stopping=False"
                )
        try:
            table, draw = self._items(rows, lambda: train, partners=train)
        except ValueError as error:
            if not self.early_stopping:
                raise
            raise UnusableSplit(
                f"early_stopping: the {train.size} rows left to train on after holding out "
                f"validation_fraction={self.validation_fraction} cannot be trained on ({error}); "
                "lower validation_fraction or set early_stopping=False"
            ) from None
        return train, valid, table, draw

    def _fit_planned(self, rows, plan):
        train, valid, table, draw = plan
        stop_early = valid is not None or self._STOP_ON_TRAIN_LOSS
        self._run(table, draw, epochs=int(round(self._n_epochs(train.size))),
                  max_steps=self._max_steps(), stop_early=stop_early, valid=valid)
        # a later partial_fit continues this stream: the fitted rows are what it has seen,
        # and they are remembered as a stream's would be
        self._n_streamed = self.refit_rows_ = rows[0].shape[0]
        replay_add(self._replay, rows, self.replay_size, self._rng)

    def _validation_items(self, rows, held):
        """The fixed items of the held-out rows that the validation loss is taken on (a pair
        head's partners among them too)."""
        return self._items(rows, lambda: held, partners=held)[1]()

    def _split_fits(self, n) -> bool:
        """Whether `n` rows leave `_MIN_SPLIT_ROWS` on each side of an early-stopping split."""
        n_valid = int(np.ceil(self.validation_fraction * n))
        return n_valid >= self._MIN_SPLIT_ROWS and n - n_valid >= self._MIN_SPLIT_ROWS

    def _split(self, n, stratify=None):
        """Row indices to train on and to hold out (`validation_fraction`, stratified when
        possible)."""
        n_valid = int(np.ceil(self.validation_fraction * n))
        if not self._split_fits(n):
            raise ValueError(
                f"early_stopping holds out validation_fraction={self.validation_fraction} of "
                f"the rows: {n_valid} of {n} here, and needs at least {self._MIN_SPLIT_ROWS} "
                f"held out and {self._MIN_SPLIT_ROWS} left to train on; add rows, change "
                "validation_fraction or set early_stopping=False"
            )
        seed = self._rng.randint(0, 2**31 - 1)
        try:
            train, held = train_test_split(np.arange(n), test_size=n_valid, stratify=stratify,
                                           random_state=seed)
        except ValueError:  # a class too small to stratify: a shuffled split that leaves
            # one row of every class to train on (held-out rows come from the others first)
            order = np.random.RandomState(self._rng.randint(0, 2**31 - 1)).permutation(n)
            if stratify is not None and np.ndim(stratify) == 1:
                first = np.unique(np.asarray(stratify)[order], return_index=True)[1]
                order = np.concatenate([np.delete(order, first), order[first]])
            held, train = order[:n_valid], order[n_valid:]
        return train, held
