"""A sentence model's tokenisation, done by the Rust `tokenizers` library directly, and padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embetter import _st

# Texts that exercise the tokenizer: case, accents, punctuation, numbers, unknown words,
# an empty string, and one longer than any model's maximum length (truncation). The Greek
# capitals end in a sigma that Python's `str.lower` turns into a final "ς" and a tokenizer's
# own lowercasing into "σ": only the tokenizer's own normaliser gives the model's ids.
PROBE_TEXTS = [
    "A happy dog runs in the park.",
    "ΟΔΟΣ ΣΟΦΟΣ",
    "QUARTERLY tax filings are due on 15 April 2024!",
    "Café déjà vu: naïve façades, über-cool.",
    "",
    "short",
    "emojis 🙂 and symbols #hashtag @user http://example.com/a?b=c",
    "the market moves; our team predicts the weather, and a pilot follows the news",
    " ".join(f"word{i} and more text" for i in range(200)),
]


class TextTokenizer:
    """A sentence model's tokenisation done by the Rust `tokenizers` library directly.

    Built from a loaded `SentenceTransformer` and checked against its own `preprocess` on probe
    texts, so the fast paths feed the model exactly the token ids the reference path does.
    """

    def __init__(self, tokenizer, input_names, pad_id=0):
        self.tokenizer = tokenizer
        self.input_names = tuple(input_names)
        self.pad_id = int(pad_id)

    @classmethod
    def from_sentence_transformer(cls, model) -> TextTokenizer:
        from tokenizers import Tokenizer

        spec = _st.tokenizer_spec(model)
        tok = Tokenizer.from_str(spec.json)
        tok.no_padding()
        tok.enable_truncation(max_length=spec.max_length)
        reference = _st.model_inputs(model, PROBE_TEXTS[:2])
        names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in reference]
        # a model's `do_lower_case` is already in the serialised normaliser (sentence-transformers
        # puts a Lowercase there): the Rust tokenizer alone reproduces `preprocess`
        fast = cls(tok, names, pad_id=spec.pad_id)
        fast._check_against(model)
        return fast

    def _check_against(self, model) -> None:
        """Raise unless we produce the same inputs as `model.preprocess`, prompts included."""
        for prompt in (None, "query: "):
            ref = _st.model_inputs(model, PROBE_TEXTS, prompt=prompt)
            ours = pad_batch(self.encode(PROBE_TEXTS, prompt), self.input_names, self.pad_id)
            for name in self.input_names:
                theirs = ref[name].numpy()
                width = max(theirs.shape[1], ours[name].shape[1])
                if not np.array_equal(_widen(theirs, width), _widen(ours[name], width)):
                    left = getattr(getattr(model, "tokenizer", None), "padding_side",
                                   None) == "left"
                    why = ("; its tokenizer pads on the left (padding_side='left'), the fast "
                           "backends pad on the right") if left else ""
                    raise ValueError(
                        "the fast backends could not reproduce this model's tokenisation "
                        f"({name} differs from sentence-transformers' preprocess{why}). "
                        "Use backend='torch' for this model."
                    )

    def encode(self, texts, prompt=None) -> list:
        if prompt:
            texts = [prompt + t for t in texts]
        return self.tokenizer.encode_batch(texts, add_special_tokens=True)

    def save(self, folder: Path) -> None:
        self.tokenizer.save(str(folder / "tokenizer.json"))

    @classmethod
    def load(cls, folder: Path, meta: dict) -> TextTokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        return cls(tok, meta["input_names"], meta["pad_id"])


def _widen(a: np.ndarray, width: int) -> np.ndarray:
    # Padding values differ between tokenizers' conventions only where the mask is 0; compare
    # real tokens by zero-filling both sides to the same width.
    out = np.zeros((a.shape[0], width), dtype=np.int64)
    out[:, : a.shape[1]] = a
    return out


def pad_batch(encodings, input_names, pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad token encodings to the longest one: the model's int64 input arrays."""
    width = max((len(e.ids) for e in encodings), default=0)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        ids[row, :n] = enc.ids
        mask[row, :n] = 1
        types[row, :n] = enc.type_ids
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: arrays[name] for name in input_names}
