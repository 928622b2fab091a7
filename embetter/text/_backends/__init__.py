"""The fast paths behind `SentenceEncoder(backend=...)`, one module per path.

- `pipelined.py`: the torch model fed by a pipelined, length-bucketed loop (GPUs);
- `onnx.py`: an int8 ONNX export run by onnxruntime (`_export.py` makes and caches it);
- `openvino.py`: the same export run by the OpenVINO runtime.

All share the Rust tokenisation (`_tokenize.py`) and the batching pipeline (`_batching.py`).
"""

from __future__ import annotations

#: The precisions each backend accepts (None: the backend's default).
PRECISIONS = {
    "torch": (None, "float32"),
    "pipelined": (None, "float32", "float16", "bfloat16"),
    "onnx": (None, "int8", "float32"),
    # OpenVINO cannot read onnxruntime's fused int8 operators (QAttention): float32 only.
    "openvino": (None, "float32"),
    "auto": (None,),
}


def make_engine(backend: str, precision, name, load_model):
    """The engine of a fast backend. `load_model()` returns the loaded SentenceTransformer;
    the ONNX-based paths call it only when the model must be exported."""
    if backend == "pipelined":
        from embetter.text._backends.pipelined import PipelinedEngine

        model = load_model()
        return PipelinedEngine(model, model.device, precision)
    from embetter.text._backends._export import onnx_model_folder

    precision = precision or ("int8" if backend == "onnx" else "float32")
    folder = onnx_model_folder(name, precision, load_model)
    if backend == "onnx":
        from embetter.text._backends.onnx import OnnxEngine

        return OnnxEngine(folder, precision)
    from embetter.text._backends.openvino import OpenVINOEngine

    return OpenVINOEngine(folder, precision)


def cpu_flags() -> frozenset:
    """The instruction-set flags of this CPU (Linux); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _installed(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def auto_backend(device=None) -> tuple[str, str | None]:
    """The fastest `(backend, precision)` this machine supports, from benchmarks/encode_speed.py.

    A GPU gets the pipelined torch loop (float16). A CPU with native bfloat16 (AMX or
    AVX512-BF16) gets the pipelined loop in bfloat16, about 3x float32 at cosine 0.9999. Any
    other CPU gets the int8 ONNX export run by onnxruntime (it measured fastest on an AVX2 CPU,
    ahead of OpenVINO in float32); without onnxruntime, plain torch.
    """
    from embetter._torch import device_name

    kind = device_name(device).split(":")[0]
    if kind != "cpu":
        return "pipelined", None
    if {"amx_bf16", "avx512_bf16"} & cpu_flags():
        return "pipelined", "bfloat16"
    if _installed("onnxruntime") and _installed("onnx"):
        return "onnx", "int8"
    return "torch", None
