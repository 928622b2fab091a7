"""`backend="pipelined"`: the model's own torch modules, fed by our loop instead of
`SentenceTransformer.encode`: texts are tokenised by the Rust fast tokenizer in worker threads
while the model runs, batches are bucketed by token length, inputs go through pinned memory with
non-blocking copies, and CUDA runs in float16 autocast by default. The path for GPUs.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from embetter import _st
from embetter.text._backends import row_cosines
from embetter.text._backends._batching import (
    _check_prompt,
    _progress,
    iter_batches,
)
from embetter.text._backends._tokenize import PROBE_TEXTS, TextTokenizer

#: The cosine to float32 a half precision must keep on every check text to be the CUDA default.
HALF_MIN_COSINE = 0.999
#: The padded tokens per batch on CUDA when `batch_size` is None (not yet measured on a GPU).
CUDA_MAX_TOKENS = 32768


class PipelinedEngine:
    """Run a loaded `SentenceTransformer`'s modules with our pipelined, bucketed loop."""

    def __init__(self, model, device: str, precision=None):
        import torch

        self.model = model
        self.device = torch.device(device)
        self.tokenizer = TextTokenizer.from_sentence_transformer(model)
        # pooling that leaves the prompt's tokens out needs their count, which we do not pass
        self.needs_prompt_length = _st.pooling_excludes_prompt(model)
        self.precision = "float32"
        self.dtype = torch.float32
        self.dim = _st.embedding_dim(model, untruncated=True)  # what the modules compute
        #: min cosine of the half precision to float32 on the check texts (None: not checked)
        self.half_cosine = None
        if precision is None and self.device.type == "cuda":
            # float16 on a GPU, but only for a model it leaves within HALF_MIN_COSINE of float32
            # (checked once, on the check texts); on CPUs float32 (bfloat16 is opt-in).
            precision = self.settle_half("float16")
        self._set_precision(precision or "float32")
        if precision is not None and weights_dtype(model) not in (None, torch.float32,
                                                                  self.dtype):
            # a model saved in float16 or bfloat16 (transformers loads it as saved), run in
            # float32 or the other half (autocast neither widens it nor mixes two halves:
            # "mixed dtype"): a float32 copy, which autocast then runs in the half asked for
            from embetter.text._model_copies import private_copy

            self.model = private_copy(model, self.device).float()

    @property
    def truncate_dim(self):
        """The width the model's `encode` cuts to (None: all; read now: it may change)."""
        return getattr(self.model, "truncate_dim", None)

    @property
    def default_prompt(self):
        """The prompt the model's `encode` adds when given none (read now: it may change)."""
        return _st.default_prompt(self.model)

    def _set_precision(self, precision: str) -> None:
        import torch

        self.precision, self.dtype = precision, getattr(torch, precision)

    def settle_half(self, half: str, texts=None, min_cosine: float = HALF_MIN_COSINE) -> str:
        """`half` when it keeps every check text within `min_cosine` of float32, else
        `"float32"`; the min cosine it measured is kept in `half_cosine`."""
        if texts is None:
            from embetter.datasets import load_support_inbox

            texts = PROBE_TEXTS + load_support_inbox()[0][:56]
        was = self.precision
        self._set_precision("float32")
        ref = self.encode(texts, 16)
        self._set_precision(half)
        got = self.encode(texts, 16)
        self._set_precision(was)
        self.half_cosine = float(row_cosines(got, ref).min()) if len(texts) else 1.0
        return half if self.half_cosine >= min_cosine else "float32"

    def encode(self, texts, batch_size: int, prompt=None, show_progress_bar=False,
               max_tokens=None) -> np.ndarray:
        import torch

        prompt = self.default_prompt if prompt is None else prompt
        _check_prompt(prompt, self.needs_prompt_length, "pipelined")
        n = len(texts)
        cuda = self.device.type == "cuda"
        n_batches = -(-n // batch_size) if max_tokens is None else None
        # Outputs are scattered into one device buffer and copied back once, so the host never
        # waits on the GPU between batches.
        out = torch.empty((n, self.dim), dtype=torch.float32, device=self.device)
        autocast = torch.autocast(device_type=self.device.type, dtype=self.dtype,
                                  enabled=self.dtype != torch.float32)
        if self.model.training:  # (eval() walks every module: 0.35 ms a call on MiniLM)
            self.model.eval()
        batches = iter_batches(texts, self.tokenizer, prompt, batch_size,
                               workers=min(4, os.cpu_count() or 1), max_tokens=max_tokens)
        # closing: an error or interrupt stops the tokenizing threads at once
        with contextlib.closing(batches), torch.inference_mode(), autocast:
            for positions, arrays in _progress(batches, n_batches, show_progress_bar):
                features = {}
                for name, arr in arrays.items():
                    t = torch.from_numpy(arr)
                    features[name] = (t.pin_memory().to(self.device, non_blocking=True) if cuda
                                      else t.to(self.device))
                emb = self.model(features)["sentence_embedding"]
                index = torch.from_numpy(positions).to(self.device, non_blocking=cuda)
                out.index_copy_(0, index, emb.float())
        if not cuda:
            return out.cpu().numpy()
        host = torch.empty((n, self.dim), dtype=torch.float32, pin_memory=True)
        host.copy_(out, non_blocking=True)
        torch.cuda.synchronize(self.device)
        return host.numpy()


def may_copy(model, precision, on_gpu: bool) -> bool:
    """Whether an engine asked for `precision` may run a float32 copy of `model` (a model in
    float16 or bfloat16, run in float32 or the other half by name, or by default on a GPU
    where half precision may not hold), not the model itself."""
    import torch

    weights = weights_dtype(model)
    if weights in (None, torch.float32):
        return False
    return on_gpu if precision is None else getattr(torch, precision) != weights


def float32_weights(model) -> bool:
    """Whether the model's weights are float32 (or it has no floating-point weight)."""
    import torch

    return weights_dtype(model) in (None, torch.float32)


def weights_dtype(model):
    """The dtype of the model's first floating-point weight (None: it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
