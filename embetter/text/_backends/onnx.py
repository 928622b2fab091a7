"""`backend="onnx"`: the exported sentence model run by onnxruntime on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from embetter.text._backends._batching import _check_prompt, _progress, iter_batches
from embetter.text._backends._tokenize import TextTokenizer


class OnnxEngine:
    """Run an exported (and usually int8-quantised) sentence model with onnxruntime."""

    def __init__(self, folder: Path, precision: str):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.tokenizer = TextTokenizer.load(self.folder, self.meta)
        self.dim = int(self.meta["dim"])
        self.needs_prompt_length = bool(self.meta["needs_prompt_length"])
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Busy-waiting worker threads steal the cores other processes (and our tokenizer
        # thread) need; on a shared machine that costs far more than it saves.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(self.folder / f"model-{precision}.onnx"), options,
            providers=["CPUExecutionProvider"],
        )

    def encode(self, texts, batch_size: int, prompt=None, show_progress_bar=False) -> np.ndarray:
        _check_prompt(prompt, self.needs_prompt_length, "onnx")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = iter_batches(texts, self.tokenizer, prompt, batch_size, workers=1)
        for positions, arrays in _progress(batches, -(-len(texts) // batch_size),
                                           show_progress_bar):
            out[positions] = self.session.run(None, arrays)[0]
        return out
