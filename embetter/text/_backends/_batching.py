"""The batching pipeline every fast path shares: tokenise in worker threads, bucket by length."""

from __future__ import annotations

import itertools
import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from embetter.text._backends._tokenize import TextTokenizer, pad_batch


def bucketed_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Positions grouped into batches of similar token length (longest first), so padding
    costs little and the first batch shows the peak memory."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def iter_batches(texts, tokenizer: TextTokenizer, prompt, batch_size: int,
                 window: int = 4096, workers: int = 2):
    """Yield `(positions, inputs)` batches while worker threads tokenise the next windows.

    Texts are cut into windows; a worker tokenises a whole window (the Rust tokenizer releases
    the GIL), buckets it by token length and pads each batch, while the caller runs the model
    on the previous window. Positions index into `texts`.
    """

    def prepare(start: int):
        chunk = texts[start : start + window]
        encodings = tokenizer.encode(chunk, prompt)
        out = []
        for idx in bucketed_batches([len(e.ids) for e in encodings], batch_size):
            arrays = pad_batch([encodings[i] for i in idx], tokenizer.input_names,
                               tokenizer.pad_id)
            out.append((idx + start, arrays))
        return out

    starts = iter(range(0, len(texts), window))
    with ThreadPoolExecutor(max_workers=max(1, workers),
                            thread_name_prefix="embetter-tokenize") as pool:
        pending = deque(pool.submit(prepare, s) for s in itertools.islice(starts, workers + 1))
        while pending:
            batches = pending.popleft().result()
            nxt = next(starts, None)
            if nxt is not None:
                pending.append(pool.submit(prepare, nxt))
            yield from batches


def _progress(batches, total: int, show: bool):
    if not show:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, total=total, desc="Batches")


def _needs_prompt_length(model) -> bool:
    """Pooling that leaves the prompt's tokens out needs their count, which we do not pass."""
    return any(getattr(m, "include_prompt", True) is False for m in model)


def _check_prompt(prompt, needs_prompt_length: bool, backend: str) -> None:
    if prompt and needs_prompt_length:
        raise ValueError(
            f"backend={backend!r} does not support a prompt with a model whose pooling excludes "
            "the prompt tokens (include_prompt=False); use backend='torch'"
        )


class ExportedEngine:
    """The part every engine over the cached ONNX export shares: the export's metadata and
    tokenizer, and the batch loop. Subclasses set `backend` and implement `_run(arrays)`."""

    backend = ""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.tokenizer = TextTokenizer.load(self.folder, self.meta)
        self.dim = int(self.meta["dim"])
        self.needs_prompt_length = bool(self.meta["needs_prompt_length"])

    def _run(self, arrays: dict) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts, batch_size: int, prompt=None, show_progress_bar=False) -> np.ndarray:
        _check_prompt(prompt, self.needs_prompt_length, self.backend)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = iter_batches(texts, self.tokenizer, prompt, batch_size, workers=1)
        for positions, arrays in _progress(batches, -(-len(texts) // batch_size),
                                           show_progress_bar):
            out[positions] = self._run(arrays)
        return out
