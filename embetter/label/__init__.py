"""Which texts to label next: query strategies and a labelling loop that learns in rounds.

`suggest(model, X, k)` returns the positions of the `k` pool rows a fitted classifier (or
pipeline) would learn most from; `LabellingLoop` holds a pool's embeddings (computed once)
and updates a pipeline with `partial_fit` after each round of labels. `LabellingMap` (the
`notebook` extra, imported on first use) is a map to lasso and label in a notebook.
"""

from embetter.label._loop import LabellingLoop
from embetter.label._suggest import STRATEGIES, suggest

__all__ = ["suggest", "LabellingLoop", "STRATEGIES", "LabellingMap"]


def __getattr__(name):
    # the map needs anywidget (an extra): import it on first use, not with embetter.label
    if name == "LabellingMap":
        from embetter.label._widget import LabellingMap

        return LabellingMap
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
