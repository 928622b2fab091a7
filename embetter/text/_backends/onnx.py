"""`backend="onnx"`: the exported sentence model run by onnxruntime on the CPU."""

from __future__ import annotations

from pathlib import Path

from embetter.text._backends._batching import ExportedEngine, inference_threads


class OnnxEngine(ExportedEngine):
    """Run an exported (and usually int8-quantised) sentence model with onnxruntime."""

    backend = "onnx"

    def __init__(self, folder: Path, precision: str):
        import onnxruntime as ort

        super().__init__(folder)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Busy-waiting worker threads steal the cores other processes (and our tokenizer
        # thread) need; on a shared machine that costs far more than it saves.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # the process's thread limit (a joblib worker's, the user's), not every core
        options.intra_op_num_threads = inference_threads()
        self.session = ort.InferenceSession(
            str(self.folder / f"model-{precision}.onnx"), options,
            providers=["CPUExecutionProvider"],
        )

    def _run(self, arrays):
        return self.session.run(None, arrays)[0]
