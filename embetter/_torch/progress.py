"""The epoch progress bar of the small torch heads' training engine."""

from __future__ import annotations


class Progress:
    """An epoch progress bar; silent unless `verbose`."""

    def __init__(self, total: int, verbose, desc: str):
        self.bar = None
        self.verbose = bool(verbose)
        self.desc = desc
        if self.verbose:
            try:
                from tqdm.auto import tqdm

                # kept on screen at the end, with the last losses (sklearn's MLP prints them)
                self.bar = tqdm(total=total, desc=desc, leave=True)
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
