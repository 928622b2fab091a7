"""The fast paths behind `SentenceEncoder(backend=...)`, one module per path.

- `pipelined.py`: the torch model fed by a pipelined, length-bucketed loop (GPUs);
- `onnx.py`: an int8 ONNX export run by onnxruntime (`_export.py` makes and caches it);
- `openvino.py`: the same export run by the OpenVINO runtime;
- `auto.py`: `backend="auto"`, the measured choice among these (cached per machine and model).

All share the Rust tokenisation (`_tokenize.py`) and the batching pipeline (`_batching.py`).
"""

from __future__ import annotations

import numpy as np

#: The precisions each backend accepts (None: the backend's default). Backend None is the
#: default: sentence-transformers on CPUs, the pipelined loop on CUDA.
PRECISIONS = {
    None: (None,),
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
    # (the runtimes are extras: a missing one is named, with the extra that installs it)
    needed = ("onnxruntime", "onnx") + (("openvino",) if backend == "openvino" else ())
    missing = [module for module in needed if not _installed(module)]
    if missing:
        raise ImportError(
            f"backend={backend!r} needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: "
            f"pip install 'embetter[{backend}]' (or use backend='torch' or 'pipelined')")
    from embetter.text._backends._export import onnx_model_folder

    precision = precision or ("int8" if backend == "onnx" else "float32")
    folder = onnx_model_folder(name, precision, load_model)
    if backend == "onnx":
        from embetter.text._backends.onnx import OnnxEngine

        return OnnxEngine(folder, precision)
    from embetter.text._backends.openvino import OpenVINOEngine

    return OpenVINOEngine(folder, precision)


def row_cosines(a, b) -> np.ndarray:
    """The cosine of each row of `a` with the same row of `b` (how close a path's embeddings
    stay to the float32 reference's), in float64: a cosine a hair under 1 does not round to 1."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.sum(a * b, axis=1) / np.maximum(
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def cpuinfo(field: str) -> str | None:
    """The value of `field` for the first CPU in /proc/cpuinfo (Linux), else None."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> frozenset:
    """The instruction-set flags of this CPU (Linux); empty where they cannot be read."""
    return frozenset((cpuinfo("flags") or "").split())


def _installed(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def installed_runtimes() -> frozenset:
    """The optional runtimes of the ONNX-based paths that are installed here."""
    return frozenset(m for m in ("onnxruntime", "onnx", "openvino") if _installed(m))
