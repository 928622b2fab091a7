"""Text encoders: pretrained sentence models, static (model2vec) models and a light TF-IDF
encoder."""

from embetter.text._lite import LiteTextEncoder
from embetter.text._models import ModelNotFoundError
from embetter.text._sbert import MatryoshkaEncoder, SentenceEncoder
from embetter.text._static import TextEncoder

__all__ = [
    "SentenceEncoder",
    "MatryoshkaEncoder",
    "TextEncoder",
    "LiteTextEncoder",
    "ModelNotFoundError",
]
