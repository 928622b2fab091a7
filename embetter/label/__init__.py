"""Which texts to label next: query strategies and a labelling loop that learns in rounds.

`suggest(model, X, k)` returns the positions of the `k` pool rows a fitted classifier (or
pipeline) would learn most from; `LabellingLoop` holds a pool's embeddings (computed once)
and updates a pipeline with `partial_fit` after each round of labels.
"""

from embetter.label._loop import LabellingLoop
from embetter.label._suggest import STRATEGIES, suggest

__all__ = ["suggest", "LabellingLoop", "STRATEGIES"]
