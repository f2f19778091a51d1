"""``--max_minutes``: the time budget of one training stage, read on its clock at every iteration.

The budget is checked before every iteration, so a stage stops within one iteration of it (not at the end of an
epoch: one epoch of a large configuration on a CPU can take an hour). While a budget is set, the learning-rate
schedule runs on the spent fraction of it (or on the iterations done, whichever is further), so the poly decay
reaches zero where the budget ends. The seconds spent are stored in the checkpoints, so a run continued with --c
goes on with what is left of the same budget.
"""
from __future__ import annotations

import time
from typing import Callable

# what --max_minutes counts: elapsed wall-clock seconds, or CPU seconds of this process (all its threads)
BUDGET_CLOCKS: dict[str, Callable[[], float]] = {"wall": time.time, "cpu": time.process_time}


class StageBudget:
    """``max_minutes`` of one stage (None = no budget) on ``clock``; ``spent_s`` were spent before this run (--c)."""

    def __init__(self, max_minutes: float | None, clock: Callable[[], float], spent_s: float = 0.0):
        self.seconds = None if max_minutes is None else float(max_minutes) * 60.0
        self.clock = clock
        self.spent_before_s = float(spent_s)
        self.started_at = clock()

    @property
    def limited(self) -> bool:
        return self.seconds is not None

    def spent_s(self) -> float:
        """Seconds of the budget spent so far, earlier runs of the stage included."""
        return self.spent_before_s + self.clock() - self.started_at

    def fraction(self, spent_s: float) -> float:
        """Share of the budget that ``spent_s`` seconds are (0 without a budget)."""
        return 0.0 if self.seconds is None else min(1.0, spent_s / self.seconds)


def epochs_that_fit(budget: StageBudget, spent_s: float, epochs_done: int, epochs_this_run: int,
                    requested_epochs: int) -> int:
    """Epochs the stage will reach: the ones done plus as many as the rest of the budget starts, at this run's mean
    epoch time (the last one usually cut by the clock), never beyond the requested epochs. Re-estimated every epoch:
    a slow first epoch (start-up, a busy machine) must not lock in a short run."""
    if not budget.limited:
        return requested_epochs
    per_epoch = (spent_s - budget.spent_before_s) / max(1, epochs_this_run)
    left = budget.seconds - spent_s
    more = 0 if left <= 0 else int(-(-left // max(per_epoch, 1e-9)))  # ceil: a started epoch counts
    return min(requested_epochs, epochs_done + more)
