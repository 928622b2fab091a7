"""`backend="openvino"`: the cached float32 ONNX export (see `_export.py`) run by the OpenVINO
runtime, which reads ONNX files directly and compiles them for the CPU it runs on. (It cannot read
the int8 export: onnxruntime's fused QAttention operators have no OpenVINO conversion.)"""

from __future__ import annotations

import os
from pathlib import Path

from embetter.text._backends._batching import ExportedEngine


class OpenVINOEngine(ExportedEngine):
    """Run an exported sentence model with OpenVINO on the CPU."""

    backend = "openvino"

    def __init__(self, folder: Path, precision: str):
        import openvino as ov

        super().__init__(folder)
        core = ov.Core()
        model = core.read_model(str(self.folder / f"model-{precision}.onnx"))
        # One request at a time, all cores on it: our loop feeds batches in order.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                  "INFERENCE_NUM_THREADS": os.cpu_count() or 1}
        self.request = core.compile_model(model, "CPU", config).create_infer_request()

    def _run(self, arrays):
        return self.request.infer(arrays)[0]
