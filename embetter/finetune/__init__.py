"""Fine-tuning: tuners (pipeline steps trained on labels) and learners (trained on pairs)."""

from embetter.finetune._mining import mine_hard_negatives
from embetter.finetune._pairs import generate_pairs
from embetter.finetune._sbert import SbertLearner, SbertTuner

__all__ = ["generate_pairs"]
__all__ += ["SbertLearner", "SbertTuner", "mine_hard_negatives"]
