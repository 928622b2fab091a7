"""`backend="openvino"`: the cached float32 ONNX export (see `_export.py`) run by the OpenVINO
runtime, which reads ONNX files directly and compiles them for the CPU it runs on. (It cannot read
the int8 export: onnxruntime's fused QAttention operators have no OpenVINO conversion.)"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from embetter.text._backends._batching import ExportedEngine, inference_threads


class OpenVINOEngine(ExportedEngine):
    """Run an exported sentence model with OpenVINO on the CPU."""

    backend = "openvino"

    def __init__(self, folder: Path, precision: str):
        import openvino as ov

        super().__init__(folder)
        core = ov.Core()
        model = core.read_model(str(self.folder / f"model-{precision}.onnx"))
        # One request at a time per thread, on the process's thread limit (every core unless
        # torch, a joblib worker or OMP_NUM_THREADS set one): our loop feeds batches in order.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                  "INFERENCE_NUM_THREADS": inference_threads() or os.cpu_count() or 1}
        self.compiled = core.compile_model(model, "CPU", config)
        self._requests = threading.local()  # a request serves one inference at a time

    def _run(self, arrays):
        request = getattr(self._requests, "request", None)
        if request is None:  # this thread's own ("Infer Request is busy" when shared)
            request = self._requests.request = self.compiled.create_infer_request()
        return request.infer(arrays)[0]
