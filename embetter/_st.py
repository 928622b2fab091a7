"""The one boundary with sentence-transformers and transformers.

Every place embetter touches those two libraries goes through this module: recognising a
sentence model (by its type), loading and saving one, its embedding size, its tokenizer and its
transformer, and the training losses (the SBERT learners train in their own loop,
`finetune/_trainer.py`). Elsewhere the package uses a model only through these functions
and the model's documented torch-module methods (`encode`, `to`, `eval`, `parameters`,
`state_dict`, `max_seq_length`).
`tests/test_boundary.py` enforces it, so a new release of either library is met here alone.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from dataclasses import dataclass


def is_sentence_model(obj) -> bool:
    """Whether `obj` is a loaded `SentenceTransformer` (by type, not by the methods it has).

    Nothing is imported to answer for a name or path, or while sentence-transformers has not
    been imported at all (then no such object can exist).
    """
    if isinstance(obj, (str, bytes, os.PathLike)) or "sentence_transformers" not in sys.modules:
        return False
    from sentence_transformers import SentenceTransformer

    return isinstance(obj, SentenceTransformer)


def _imported():
    """Import sentence-transformers (once) with Python's `random` state kept: its first
    import draws from that generator (rich, which it imports, does at import time), which
    would shift a caller's seeded sequence."""
    if "sentence_transformers" not in sys.modules:
        import random

        state = random.getstate()
        try:
            import sentence_transformers  # noqa: F401
        finally:
            random.setstate(state)


def load(path, device: str, **kwargs):
    """`SentenceTransformer(path, device=device)`: the caller turns its errors into advice.
    Without transformers' "Loading weights" bars (a guest prints no bars it was not asked
    for: `show_progress_bar` is about encoding, and off by default)."""
    _imported()
    from sentence_transformers import SentenceTransformer

    with progress_bars_off():
        return SentenceTransformer(os.fspath(path), device=device, **kwargs)


def hub_endpoint() -> tuple[str, bool]:
    """The Hugging Face Hub that models load from (`HF_ENDPOINT`), and whether
    huggingface_hub was told to stay offline (`HF_HUB_OFFLINE`)."""
    from huggingface_hub import constants

    return constants.ENDPOINT, bool(constants.HF_HUB_OFFLINE)


def hub_cached_folder(repo_id: str, cache_dir=None):
    """The folder of the cached snapshot (of `main`) of a Hugging Face model, the one that
    holds its `config.json` (or, for a sentence-transformers model without one at its root,
    such as the static-* models, its `modules.json`), or None when the cache has none
    (huggingface_hub's own cache lookup, in `cache_dir` or its default cache; no network)."""
    from pathlib import Path

    from huggingface_hub import try_to_load_from_cache

    for marker in ("config.json", "modules.json"):
        found = try_to_load_from_cache(repo_id, marker, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found).parent
    return None


def save(model, folder) -> None:
    """Save `model` into `folder` (weights, configs, tokenizer; no model card), without the
    "Writing model shards" bars."""
    with progress_bars_off():
        model.save(os.fspath(folder), create_model_card=False)


def embedding_dim(model, untruncated: bool = False) -> int:
    """The size of the model's sentence embeddings: what `encode` returns, or with
    `untruncated=True` what its modules compute before a `truncate_dim` cuts it."""
    if untruncated and getattr(model, "truncate_dim", None) is not None:
        for module in reversed(list(model)):  # as the model itself reads its modules
            for name in ("get_embedding_dimension", "get_sentence_embedding_dimension",
                         "get_word_embedding_dimension"):
                method = getattr(module, name, None)
                if callable(method) and method() is not None:
                    return int(method())
    return int(model.get_embedding_dimension())


def default_prompt(model) -> str | None:
    """The prompt `encode` adds when given none (the model's `default_prompt_name`)."""
    name = getattr(model, "default_prompt_name", None)
    return (getattr(model, "prompts", None) or {}).get(name) if name else None


def transformer(model):
    """The Hugging Face `PreTrainedModel` inside `model`, or `None` (e.g. a static model)."""
    return getattr(model, "transformers_model", None)


def pooling_excludes_prompt(model) -> bool:
    """Whether a pooling module of `model` leaves the prompt's tokens out (`include_prompt`)."""
    return any(getattr(m, "include_prompt", True) is False for m in model)


@dataclass(frozen=True)
class TokenizerSpec:
    """What the fast paths need to tokenise exactly as the model does."""

    json: str  # the Rust tokenizer, serialised
    max_length: int
    pad_id: int


def tokenizer_spec(model) -> TokenizerSpec:
    """The model's fast (Rust) tokenizer and its settings; `ValueError` when it has none."""
    hf_tok = getattr(model, "tokenizer", None)
    backend = getattr(hf_tok, "backend_tokenizer", None)
    max_len = getattr(model, "max_seq_length", None)
    if backend is None or not isinstance(max_len, int):
        raise ValueError(
            "the fast backends need a sentence-transformers text model with a fast "
            f"(Rust) tokenizer and a max_seq_length; got a first module "
            f"{type(model[0]).__name__} with tokenizer {type(hf_tok).__name__}. "
            "Use backend='torch' for this model."
        )
    pad_id = hf_tok.pad_token_id if hf_tok.pad_token_id is not None else 0
    return TokenizerSpec(backend.to_str(), max_len, int(pad_id))


def model_inputs(model, texts, prompt=None) -> dict:
    """The model's own inputs for `texts` (torch tensors keyed by input name)."""
    return model.preprocess(list(texts), prompt=prompt)


def token_counts(model, texts, special_tokens=True):
    """How many tokens the model's tokenizer makes of each text, nothing truncated, special
    tokens included (`special_tokens=False`: without them, so a word in the vocabulary counts
    1); `None` for a model without a text tokenizer (such as a static one)."""
    tokenizer = getattr(model, "tokenizer", None)
    if not callable(tokenizer):
        return None
    ids = tokenizer(list(texts), add_special_tokens=special_tokens, truncation=False,
                    verbose=False)["input_ids"]  # no "longer than the maximum" warning: we count
    return [len(row) for row in ids]


def token_embeddings(model) -> list:
    """The token embedding matrices of a model's transformer(s) (input embeddings).

    A static model (`StaticEmbedding`) has none here: its embedding bag is all it has to train.
    """
    found = []
    for module in model.modules():
        get = getattr(module, "get_input_embeddings", None)
        if callable(get) and hasattr(module, "config"):
            try:
                embedding = get()
            except (NotImplementedError, AttributeError):
                continue
            weight = getattr(embedding, "weight", None)
            if weight is not None and all(weight is not w for w in found):
                found.append(weight)
    return found


def losses():
    """sentence-transformers' `losses` module."""
    _imported()
    from sentence_transformers.sentence_transformer import losses as found

    return found


def load_hf(folder):
    """The Hugging Face model and tokenizer saved in `folder` (for model2vec's distillation)."""
    from transformers import AutoModel, AutoTokenizer

    with progress_bars_off():  # no "Loading weights" bar: see `load`
        return AutoModel.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(folder))


def resume_optimizer(optimizer, state) -> None:
    """Load the per-parameter state (AdamW's moments and step counts) of `state` into
    `optimizer` when its parameter groups have the same sizes.

    The groups' hyper-parameters (learning rate and the rest) stay the new optimizer's own:
    a state saved at the end of a linear decay holds a learning rate of 0.
    """
    if state is None:
        return
    saved = state["param_groups"]
    if [len(g["params"]) for g in optimizer.param_groups] != [len(g["params"]) for g in saved]:
        return  # e.g. freeze_embeddings changed between calls: start afresh
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": s["params"]}
              for g, s in zip(optimizer.param_groups, saved)]
    # a copy: on the device it was saved on, torch shares the tensors, and the steps would
    # move the saved state too (a call that fails part-way could not go back to it)
    optimizer.load_state_dict({"state": copy.deepcopy(state["state"]), "param_groups": groups})


def eager_attention(model) -> None:
    """Switch `model`'s transformer to plain ("eager") attention where it supports that (it
    traces to the pattern onnxruntime fuses); a model without it is left as it is."""
    auto = transformer(model)
    if auto is not None and hasattr(auto, "set_attn_implementation"):
        with contextlib.suppress(ValueError, ImportError):
            auto.set_attn_implementation("eager")


@contextlib.contextmanager
def progress_bars_off():
    """transformers' and huggingface_hub's progress bars (one per model load) off for the
    block, then as they were: both switches are process-wide."""
    try:
        from huggingface_hub.utils import (
            are_progress_bars_disabled,
            disable_progress_bars,
            enable_progress_bars,
        )
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - both ship with sentence-transformers
        yield
        return
    # the hub's switches per group of bars ("huggingface_hub.http_get", ...): its global
    # switch clears them all, and its public API cannot list them to set them back
    import importlib

    from embetter import _guest

    groups = getattr(importlib.import_module("huggingface_hub.utils.tqdm"),
                     "progress_bar_states", None)
    if not isinstance(groups, dict):  # pragma: no cover - another huggingface_hub
        groups = None

    def off():
        before = (hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled(),
                  None if groups is None else dict(groups))
        hf_logging.disable_progress_bar()  # transformers' own switch, and the hub's
        return before

    def back(before):
        was_on, hub_was_off, hub_groups = before
        if was_on:
            hf_logging.enable_progress_bar()  # turns the hub's on too: set it after
        if hub_groups is not None:
            groups.clear()
            groups.update(hub_groups)
        elif hub_was_off:
            disable_progress_bars()
        else:
            enable_progress_bars()

    # process-wide switches that threads may want off together: shared, nobody waits
    with _guest.SHARED.hold("progress bars", off, back):
        yield
