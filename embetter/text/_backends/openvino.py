"""`backend="openvino"`: the cached float32 ONNX export (see `_export.py`) run by the OpenVINO
runtime, which reads ONNX files directly and compiles them for the CPU it runs on. (It cannot read
the int8 export: onnxruntime's fused QAttention operators have no OpenVINO conversion.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from embetter.text._backends._batching import _check_prompt, _progress, iter_batches
from embetter.text._backends._tokenize import TextTokenizer


class OpenVINOEngine:
    """Run an exported sentence model with OpenVINO on the CPU."""

    def __init__(self, folder: Path, precision: str):
        import openvino as ov

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.tokenizer = TextTokenizer.load(self.folder, self.meta)
        self.dim = int(self.meta["dim"])
        self.needs_prompt_length = bool(self.meta["needs_prompt_length"])
        core = ov.Core()
        model = core.read_model(str(self.folder / f"model-{precision}.onnx"))
        # One request at a time, all cores on it: our loop feeds batches in order.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                  "INFERENCE_NUM_THREADS": os.cpu_count() or 1}
        self.request = core.compile_model(model, "CPU", config).create_infer_request()

    def encode(self, texts, batch_size: int, prompt=None, show_progress_bar=False) -> np.ndarray:
        _check_prompt(prompt, self.needs_prompt_length, "openvino")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = iter_batches(texts, self.tokenizer, prompt, batch_size, workers=1)
        for positions, arrays in _progress(batches, -(-len(texts) // batch_size),
                                           show_progress_bar):
            out[positions] = self.request.infer(arrays)[0]
        return out
