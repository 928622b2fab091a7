"""Text encoders: pretrained sentence models and a light TF-IDF encoder."""

from embetter.text._lite import LiteTextEncoder
from embetter.text._models import ModelNotFoundError
from embetter.text._sbert import MatryoshkaEncoder, SentenceEncoder

__all__ = ["SentenceEncoder", "MatryoshkaEncoder", "LiteTextEncoder", "ModelNotFoundError"]
