"""Fine-tuning: tuners (pipeline steps trained on labels) and learners (trained on pairs)."""

from embetter.finetune._contrastive import ContrastiveLearner, ContrastiveTuner
from embetter.finetune._forward import FeedForwardTuner
from embetter.finetune._pairs import generate_pairs, pairs_from_records

__all__ = [
    "FeedForwardTuner",
    "ContrastiveTuner",
    "ContrastiveLearner",
    "generate_pairs",
    "pairs_from_records",
]
