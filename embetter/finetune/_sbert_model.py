"""The sentence model an SBERT learner trains: a private copy in, bytes or a folder out."""

from __future__ import annotations

import os
from pathlib import Path

from embetter import _st
from embetter._atomic import atomic_path


def private_model(source, device=None):
    """A model the learner may train: never the caller's instance, never a shared cached one.

    A `SentenceTransformer` is deep-copied (then moved to `device`), so the caller's model
    keeps its weights and its device; a name or path is loaded afresh; a `SentenceEncoder` is
    unwrapped into the name or model it holds (refused with a prompt, a truncation or
    normalisation, which the learner would lose; its backend and precision only set speed).
    """
    from embetter._torch import device_name
    from embetter.text._model_copies import moved_copy
    from embetter.text._models import load_sentence_transformer
    from embetter.text._sbert import SentenceEncoder

    if isinstance(source, SentenceEncoder):
        _check_unwrapped(source)
        source = source.name
    if _st.is_sentence_model(source):
        return moved_copy(source, device)
    if isinstance(source, (str, os.PathLike)):
        return load_sentence_transformer(source, device_name(device))
    raise TypeError(
        "sent_tfm must be a model name, a local path, a SentenceTransformer or a "
        f"SentenceEncoder, got {type(source).__name__}"
    )


def _check_unwrapped(encoder) -> None:
    """A `SentenceEncoder` gives the learner its model only: settings that shape its output
    would be lost without a word, so they are refused by name."""
    names = ("prompt", "normalize_embeddings", "truncate_dim", "dim")  # dim: Matryoshka's
    lost = {k: v for k, v in vars(encoder).items() if k in names and v not in (None, False, "")}
    if lost:
        given = ", ".join(f"{k}={v!r}" for k, v in lost.items())
        raise ValueError(
            f"sent_tfm is a {type(encoder).__name__} with {given}: only its model is "
            f"fine-tuned, so these would be lost. Pass the model ({encoder.name!r}) instead "
            "and put what you need after the tuner (sklearn's Normalizer, a column slice)")


def model_to_bytes(model) -> dict[str, bytes]:
    """Every file of a saved model, keyed by relative path (for pickling fine-tuned weights)."""
    from embetter._state_bytes import folder_to_bytes

    return folder_to_bytes(lambda folder: _st.save(model, folder))


def model_from_bytes(files: dict[str, bytes], device: str):
    from embetter._state_bytes import folder_from_bytes

    return folder_from_bytes(files, lambda folder: _st.load(folder, device))


def save_atomic(model, path) -> str:
    """Save a model directory so that `path` is either the old content or the complete new one."""
    path = Path(os.fspath(path)).expanduser()
    saved = ("modules.json", "config_sentence_transformers.json")  # a sentence model's files
    if path.is_dir() and any(path.iterdir()) and not any((path / f).is_file() for f in saved):
        # the folder is replaced as a whole: never one that holds something else
        raise ValueError(
            f"path {str(path)!r} is a folder holding files that are not a saved sentence model; "
            "the model replaces the whole folder, so give a new (or empty) folder, or one "
            "where a model was saved before")
    with atomic_path(path, folder=True) as tmp:
        _st.save(model, tmp)
    return str(path)
