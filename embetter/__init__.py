"""embetter: scikit-learn compatible text embeddings, and fine-tuning them to your task.

Importing the package is cheap: torch and sentence-transformers are only imported by the
modules that need them (`embetter.text`, `embetter.finetune`).
"""

__version__ = "0.15.0"
