"""Fine-tuning: tuners (pipeline steps trained on labels) and learners (trained on pairs)."""

from embetter.finetune._contrastive import ContrastiveLearner
from embetter.finetune._contrastive_tuner import ContrastiveTuner
from embetter.finetune._forward import FeedForwardTuner
from embetter.finetune._mining import mine_hard_negatives
from embetter.finetune._pairs import generate_pairs, pairs_from_records
from embetter.finetune._sbert_learner import SbertLearner
from embetter.finetune._sbert_tuner import SbertTuner

__all__ = [
    "FeedForwardTuner",
    "ContrastiveTuner",
    "ContrastiveLearner",
    "SbertLearner",
    "SbertTuner",
    "generate_pairs",
    "pairs_from_records",
    "mine_hard_negatives",
]
