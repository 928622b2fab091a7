"""The batching pipeline every fast path shares: tokenise in worker threads, bucket by length."""

from __future__ import annotations

import contextlib
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


def token_budget_batches(lengths, max_tokens: int, max_texts: int | None = None
                         ) -> list[np.ndarray]:
    """Positions grouped, longest first, into batches whose padded size stays under a budget.

    A batch is padded to its longest (first) text, so it costs `len(batch) * longest` tokens;
    texts join a batch while that stays `<= max_tokens` (and, when given, `len(batch) <=
    max_texts`). A text longer than the budget still gets a batch of its own. Short texts thus
    travel in large batches and long ones in small batches: the GPU gets the same amount of
    work per step whatever the lengths. Callers restore the input order from the positions.

    Arguments:
        lengths: the token count of every text.
        max_tokens: the largest padded batch, in tokens.
        max_texts: an optional cap on texts per batch.

    Usage:

    ```python
    from embetter.text._backends._batching import token_budget_batches

    batches = token_budget_batches([3, 9, 1, 9, 4], max_tokens=20)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0, 2]]
    ```
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    cap = len(order) if max_texts is None else max(1, int(max_texts))
    batches, start = [], 0
    while start < len(order):
        longest = max(1, int(lengths[order[start]]))
        size = max(1, min(cap, int(max_tokens) // longest))
        batches.append(order[start : start + size])
        start += size
    return batches


def iter_batches(texts, tokenizer: TextTokenizer, prompt, batch_size: int,
                 window: int = 4096, workers: int = 2, max_tokens: int | None = None):
    """Yield `(positions, inputs)` batches while worker threads tokenise the next windows.

    Texts are cut into windows; a worker tokenises a whole window (the Rust tokenizer releases
    the GIL), buckets it by token length and pads each batch, while the caller runs the model
    on the previous window. Positions index into `texts`. With `max_tokens`, batches hold as
    many texts as fit that padded token budget (`token_budget_batches`), at most `batch_size`.
    """

    def prepare(start: int):
        chunk = texts[start : start + window]
        encodings = tokenizer.encode(chunk, prompt)
        lengths = [len(e.ids) for e in encodings]
        groups = (bucketed_batches(lengths, batch_size) if max_tokens is None
                  else token_budget_batches(lengths, max_tokens, batch_size))
        out = []
        for idx in groups:
            arrays = pad_batch([encodings[i] for i in idx], tokenizer.input_names,
                               tokenizer.pad_id)
            out.append((idx + start, arrays))
        return out

    if len(texts) <= window:  # one window: nothing to overlap, no pool to start (a pool
        yield from prepare(0)  # per call cost 0.1-0.5 ms, a third of a one-text call)
        return
    starts = iter(range(0, len(texts), window))
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="embetter-tokenize")
    try:
        pending = deque(pool.submit(prepare, s) for s in itertools.islice(starts, workers + 1))
        while pending:
            batches = pending.popleft().result()
            nxt = next(starts, None)
            if nxt is not None:
                pending.append(pool.submit(prepare, nxt))
            yield from batches
    finally:  # closed early (an error, an interrupt): windows not started are dropped
        pool.shutdown(wait=True, cancel_futures=True)


def _progress(batches, total: int, show: bool):
    if not show:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, total=total, desc="Batches")


def _check_prompt(prompt, needs_prompt_length: bool, backend: str) -> None:
    if prompt and needs_prompt_length:
        raise ValueError(
            f"backend={backend!r} does not support a prompt with a model whose pooling excludes "
            "the prompt tokens (include_prompt=False); use backend='torch'"
        )


def inference_threads() -> int:
    """Threads a CPU runtime (onnxruntime, OpenVINO) runs on, read when its engine is built:
    torch's intra-op count where torch is loaded (what `torch.set_num_threads` and a joblib
    worker's OMP_NUM_THREADS set for the torch path), else OMP_NUM_THREADS, else 0 (the
    runtime's own default: every core)."""
    import os
    import sys

    cores = os.cpu_count() or 1  # (more threads than cores only fight over them)
    if "torch" in sys.modules:
        return min(int(sys.modules["torch"].get_num_threads()), cores)
    try:
        return min(max(0, int(os.environ.get("OMP_NUM_THREADS", ""))), cores)
    except ValueError:
        return 0


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
        self.default_prompt = self.meta.get("default_prompt")  # as `encode` adds it
        self.truncate_dim = self.meta.get("truncate_dim")  # as `encode` cuts

    def _run(self, arrays: dict) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts, batch_size: int, prompt=None, show_progress_bar=False) -> np.ndarray:
        prompt = self.default_prompt if prompt is None else prompt
        _check_prompt(prompt, self.needs_prompt_length, self.backend)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = iter_batches(texts, self.tokenizer, prompt, batch_size, workers=1)
        with contextlib.closing(batches):  # an error stops the tokenizing thread at once
            for positions, arrays in _progress(batches, -(-len(texts) // batch_size),
                                               show_progress_bar):
                out[positions] = self._run(arrays)
        return out
