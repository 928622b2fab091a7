"""How a head's `partial_fit` trains: a budget that follows the rows seen, a replay memory
mixed into every call, and a fresh start (as `fit` on every row seen) each time the stream has
grown `refit_growth` times. Mixed into `TorchHeadMixin`, whose `_train` calls `_stream`."""

from __future__ import annotations

from numbers import Real

from embetter._estimator_checks import Interval
from embetter._torch.fit import UnusableSplit
from embetter._torch.replay import (
    replay_add,
    replay_count,
    replay_len,
    replay_pool,
    replay_subsets,
)

#: `_parameter_constraints` of `refit_growth`, for the heads that take it (the tuners; not
#: ContrastiveLearner, which streams without retraining).
REFIT_CONSTRAINTS = {"refit_growth": [None, Interval(Real, 1, None, closed="neither")]}


class StreamTraining:
    """`partial_fit` for the engine's heads (see `TorchHeadMixin`): `_stream(rows)`.

    Uses the engine's `_items`, `_run`, `_fit_steps`, `_start_training`, `_fit_plan` and
    `_fit_planned`; heads tune it with the hooks below and `_can_refit`.
    """

    #: a head without the parameter (ContrastiveLearner), or pickled before it existed,
    #: streams without retraining (instances of the tuners set it)
    refit_growth = None

    # -- hooks -------------------------------------------------------------------------------
    def _stream_budget(self, n_rows: int) -> float:
        """Gradient steps a stream has earned after `n_rows` rows (default: `_fit_steps`)."""
        return self._fit_steps(n_rows)

    def _first_steps(self, n_rows: int) -> float:
        """The steps `fit` takes on `n_rows` rows fewer than a batch: one a pass (at most
        `_max_steps`)."""
        steps, cap = float(self._n_epochs(n_rows)), self._max_steps()
        return steps if cap is None else min(steps, float(cap))

    def _replay_at_least(self) -> int:
        """Rows (new and remembered) each stream pass needs at least."""
        return 0

    def _replay_on_top(self) -> float:
        """How much a stream call's remembered rows add to the budget its new rows earn, at
        most (0: they share it, so the new rows get part of their share of `fit`'s steps)."""
        return 0.0

    # -- a stream call -----------------------------------------------------------------------
    def _stream(self, rows):
        """`partial_fit`: the new rows and as many remembered ones, for the steps the new rows
        earn (`_stream_budget` of all rows seen, less that of the rows before them; fractions
        of a step carry over to the next call); then the new rows join the memory. A call
        that brings the rows seen to `refit_growth` times those of the last start retrains
        from the start instead (`_refit_due`)."""
        n_new = rows[0].shape[0]
        # replay_size=0 (perhaps set between calls) replays nothing, though the memory stays
        memory = self._replay if int(self.replay_size) else {"rows": None, "seen": 0}
        pool = replay_pool(memory, rows)
        if self._refit_due(pool, memory):
            # a fresh network and optimizer, trained as `fit` on every row seen; where early
            # stopping's split of them is unusable (a random split of rare label sets), the
            # stream goes on as it was and a later call retrains on another split
            kept = dict(self.__dict__)
            self._start_training(within_stream=True)
            try:
                plan = self._fit_plan(pool)
            except UnusableSplit:
                self.__dict__.update(kept)
            else:
                self._fit_planned(pool, plan)
                return
        if not self.__dict__.get("refit_rows_"):  # the first call of a stream starts it
            self.refit_rows_ = n_new
        at_least = self._replay_at_least()
        anchors = replay_subsets(memory, n_new, self._rng, at_least=at_least)
        table, draw = self._items(pool, anchors)
        before = getattr(self, "_n_streamed", 0)
        self._n_streamed = before + n_new
        first = not before or self.__dict__.get("_n_steps", 1) == 0  # nothing trained yet
        earned = self._earned(before, self._n_streamed, first)
        if not first:  # (the first earns fit's steps on every row so far, remembered too)
            # remembered rows replayed on top of the new rows' own share (`_replay_on_top`)
            on_top = min(replay_count(memory, n_new, at_least), self._replay_on_top() * n_new)
            earned = earned * (n_new + on_top) / n_new
        self._step_credit += earned
        steps = int(self._step_credit + 1e-9)
        self._step_credit -= steps
        if steps:
            # every pass takes at least one step: `steps` passes is an upper bound
            self._run(table, draw, epochs=steps, max_steps=steps)
        replay_add(self._replay, rows, self.replay_size, self._rng)

    def _earned(self, before: int, now: int, first: bool) -> float:
        """The steps a call that brings the rows seen from `before` to `now` earns: the
        budget's growth (`_stream_budget`). The stream's first call that trains (a first
        call of one class draws no pair) trains as `fit` on the rows so far, a step a pass
        however few (fewer than a batch earned a fraction of a step a pass: 0-1 steps for 10
        rows); later calls earn only what the budget grows beyond that, so a stream still
        trains as much as one `fit` on its rows. (What was credited is kept with the settings
        it was counted in: a `set_params` of the batch size or epochs counts afresh.)"""
        budget = self._stream_budget(now)
        settings = (int(self.batch_size), getattr(self, self._EPOCHS_PARAM, None),
                    self._items_per_row(), self._max_steps())
        credited, counted_in = self.__dict__.get("_credited", (0.0, None))
        if first:
            target, base = max(budget, self._first_steps(now)), 0.0
        else:
            target = budget
            base = self._stream_budget(before)
            if counted_in == settings:
                base = max(base, credited)
        self._credited = (max(target, base), settings)
        return max(0.0, target - base)

    def _refit_due(self, pool, memory) -> bool:
        """Retrain from the start on this call (`pool`: its rows, then the remembered ones):
        the rows seen, these included, have grown to `refit_growth` times those of the last
        start (`refit_rows_`: `fit`, the first `partial_fit` call or the last retrain), the
        replay memory still holds every row seen (a stream longer than `replay_size` carries
        on without retraining), and `fit` could train on them (`_can_refit`)."""
        seen = memory["seen"]
        if self.refit_growth is None or not seen or replay_len(memory) < seen:
            return False
        n = pool[0].shape[0]
        if n < float(self.refit_growth) * self.__dict__.get("refit_rows_", 0):
            return False
        if getattr(self, "early_stopping", False) and not self._split_fits(n):
            return False
        return self._can_refit(pool)

    def _can_refit(self, rows) -> bool:
        """Whether `fit` can train on `rows` (a pair head needs two classes)."""
        return True
