"""Another thread's `warnings.catch_warnings()` block, begun inside the code under test and
ended after it: the overlap that restores a filter list the code had changed meanwhile."""

from __future__ import annotations

import threading
import warnings


class ForeignWarningsBlock:
    """`begin()` (call it inside the code under test) enters the other thread's block;
    `end()` leaves it, putting back the filters it found when it began."""

    def __init__(self):
        self.entered, self.leave = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        with warnings.catch_warnings():
            self.entered.set()
            self.leave.wait(30)

    def begin(self):
        if not self.entered.is_set() and not self.thread.is_alive():
            self.thread.start()
            self.entered.wait(30)

    def end(self):
        self.leave.set()
        if self.thread.is_alive():
            self.thread.join(30)
