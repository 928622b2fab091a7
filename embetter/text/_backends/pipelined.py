"""`backend="pipelined"`: the model's own torch modules, fed by our loop instead of
`SentenceTransformer.encode`: texts are tokenised by the Rust fast tokenizer in worker threads
while the model runs, batches are bucketed by token length, inputs go through pinned memory with
non-blocking copies, and CUDA runs in float16 autocast by default. The path for GPUs.
"""

from __future__ import annotations

import os

import numpy as np

from embetter.text._backends._batching import (
    _check_prompt,
    _needs_prompt_length,
    _progress,
    iter_batches,
)
from embetter.text._backends._tokenize import TextTokenizer


class PipelinedEngine:
    """Run a loaded `SentenceTransformer`'s modules with our pipelined, bucketed loop."""

    def __init__(self, model, device: str, precision=None):
        import torch

        self.model = model
        self.device = torch.device(device)
        self.tokenizer = TextTokenizer.from_sentence_transformer(model)
        self.needs_prompt_length = _needs_prompt_length(model)
        if precision is None:
            # Half precision moves sentence embeddings by far less than cosine 0.999 on GPUs;
            # on CPUs float32 is the safe default (bfloat16 is opt-in).
            precision = "float16" if self.device.type == "cuda" else "float32"
        self.precision = precision
        self.dtype = getattr(torch, precision)
        dim = getattr(model, "get_embedding_dimension", None)
        self.dim = int((dim or model.get_sentence_embedding_dimension)())

    def encode(self, texts, batch_size: int, prompt=None, show_progress_bar=False) -> np.ndarray:
        import torch

        _check_prompt(prompt, self.needs_prompt_length, "pipelined")
        n = len(texts)
        cuda = self.device.type == "cuda"
        n_batches = -(-n // batch_size)
        # Outputs are scattered into one device buffer and copied back once, so the host never
        # waits on the GPU between batches.
        out = torch.empty((n, self.dim), dtype=torch.float32, device=self.device)
        autocast = torch.autocast(device_type=self.device.type, dtype=self.dtype,
                                  enabled=self.dtype != torch.float32)
        self.model.eval()
        batches = iter_batches(texts, self.tokenizer, prompt, batch_size,
                               workers=min(4, os.cpu_count() or 1))
        with torch.inference_mode(), autocast:
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
