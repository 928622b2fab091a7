"""Export a sentence model to ONNX once, locally, and cache it on disk.

The whole sentence pipeline (transformer, pooling, dense, normalise) is traced with
`torch.onnx.export`, fused with onnxruntime's transformer optimiser and quantised to int8
weights; the result is checked against the torch model before it is cached. A cache hit needs
neither torch nor transformers. (sentence-transformers' own exporters need `optimum`, whose pins
clash with ours: it would downgrade transformers to 4.x.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from embetter import _st
from embetter._guest import quiet_loggers, quiet_root_records, reopen_after_fork
from embetter.text._backends import row_cosines
from embetter.text._backends._tokenize import PROBE_TEXTS, TextTokenizer, pad_batch
from embetter.text._models import cache_root, folder_fingerprint

#: Bump when the export recipe changes, so old cache entries are not reused.
EXPORT_VERSION = "4"
#: Mean cosine to the torch fp32 embeddings that an export must reach on the probe texts.
EXPORT_MIN_COSINE = {"int8": 0.99, "float32": 0.9999}
#: Exports of models in memory kept on disk (the newest): each weight state of a model that
#: trains between encodes gets its own, and a session already built keeps its files open.
MEMORY_EXPORTS = 4


def model_fingerprint(model) -> str:
    """Content hash of a loaded SentenceTransformer: its weights, tokenizer and module layout."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr(model).encode())
    # what the export's tokenizer truncates to and the width meta.json cuts to
    h.update(json.dumps([getattr(model, "max_seq_length", None),
                         getattr(model, "truncate_dim", None)]).encode())
    # its prompts: the export adds the default one as `encode` does (meta.json)
    h.update(json.dumps([getattr(model, "prompts", None) or {},
                         getattr(model, "default_prompt_name", None)], sort_keys=True).encode())
    with contextlib.suppress(ValueError):  # a model without a fast tokenizer
        h.update(_st.tokenizer_spec(model).json.encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


_export_lock = threading.Lock()
reopen_after_fork(_export_lock)  # (an export another thread held at a fork)


def onnx_model_folder(name, precision: str, load_model) -> Path:
    """The cache folder holding the ONNX export of `name`, exporting it on first use.

    `load_model()` returns the loaded SentenceTransformer; it is only called when the model
    is not a local folder or the export is missing. The cache key is the model's content hash,
    the precision, this export recipe's version and the onnxruntime version.
    """
    import onnxruntime as ort

    from embetter.text._models import resolve_model

    model = None
    if isinstance(name, (str, os.PathLike)) and Path(resolve_model(name)).is_dir():
        source = Path(resolve_model(name))
        fingerprint = folder_fingerprint(source)
        label = source.name if source.name != "model" else source.parent.name
    else:
        model = load_model()
        fingerprint = model_fingerprint(model)
        label = str(name) if isinstance(name, (str, os.PathLike)) else type(name).__name__
    key = hashlib.blake2b(
        f"{fingerprint}|{EXPORT_VERSION}|{ort.__version__}".encode(), digest_size=10
    ).hexdigest()
    label = "".join(c if c.isalnum() or c in "-_." else "-" for c in label)[:60]
    # a model in memory (perhaps training on) exports into a folder of its own, pruned
    in_memory = _st.is_sentence_model(name)
    root = cache_root() / "onnx" / ("in-memory" if in_memory else "")
    folder = root / f"{label}-{key}"
    def complete() -> bool:  # meta.json moves in last: without it another process is mid-way
        return (folder / f"model-{precision}.onnx").is_file() and (folder / "meta.json").is_file()

    if complete():
        return folder
    with _export_lock:
        if not complete():
            export_onnx(model if model is not None else load_model(), folder, precision)
            if in_memory:  # (not a Hub model's: every process reuses it)
                _prune(root, keep=MEMORY_EXPORTS, besides=folder)
    return folder


def _prune(root: Path, keep: int, besides: Path) -> None:
    """Delete all but the newest `keep` finished exports under `root` (never `besides`, nor
    one another process is still writing: those have no meta.json yet); best effort."""
    done = []
    for folder in root.iterdir():
        with contextlib.suppress(OSError):  # another process pruned it first
            if folder != besides:
                done.append(((folder / "meta.json").stat().st_mtime, folder))
    for _, old in sorted(done, reverse=True)[max(0, keep - 1):]:
        shutil.rmtree(old, ignore_errors=True)


def export_onnx(model, folder: Path, precision: str) -> None:
    """Export `model` into `folder` (`model-<precision>.onnx`, tokenizer, meta), atomically.

    An int8 export also keeps the float32 graph it was quantised from (`model-float32.onnx`).

    Everything is written to a temporary folder next to the target and moved into place
    file by file, `meta.json` last, so a reader never sees a half-written export.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = TextTokenizer.from_sentence_transformer(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        _export_graph(model, tokenizer, tmp / "model-float32.onnx")
        if precision == "int8":
            _quantize_int8(tmp / "model-float32.onnx", tmp / "model-int8.onnx")
        meta = {
            "dim": _st.embedding_dim(model, untruncated=True),  # what the graph computes
            "default_prompt": _st.default_prompt(model),
            "truncate_dim": getattr(model, "truncate_dim", None),  # as its `encode` cuts
            "input_names": list(tokenizer.input_names),
            "pad_id": tokenizer.pad_id,
            "needs_prompt_length": _st.pooling_excludes_prompt(model),
            "export_version": EXPORT_VERSION,
        }
        tokenizer.save(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        _check_export(model, tmp, precision)
        files = [f"model-{precision}.onnx"]
        if precision != "float32":
            # The float32 graph was made on the way: keep it too when it passes its own check,
            # so the float32 paths (OpenVINO, backend="auto" timing both) need no second export.
            with contextlib.suppress(Exception):  # a drift, or onnxruntime's own error
                _check_export(model, tmp, "float32")
                files.append("model-float32.onnx")
        folder.mkdir(exist_ok=True)
        for file in ("tokenizer.json", *files, "meta.json"):
            os.replace(tmp / file, folder / file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: what torch's TorchScript-based ONNX exporter says on every export (message starts)
_EXPORT_CHATTER = ("You are using the legacy TorchScript-based ONNX export",
                   "The feature will be removed", "Exporting aten::")


def _export_graph(model, tokenizer: TextTokenizer, path: Path) -> None:
    """Trace the whole sentence pipeline (transformer + pooling + dense + normalise) to ONNX."""
    import warnings

    import torch

    from embetter.text._model_copies import private_copy

    # A private CPU copy with plain ("eager") attention: it traces to the pattern that
    # onnxruntime fuses into its Attention kernel, and the caller's model is left untouched.
    # In float32: a model saved in float16 or bfloat16 (transformers loads the saved dtype)
    # would trace to a graph onnxruntime's CPU kernels and the int8 quantiser cannot run.
    model = private_copy(model, "cpu").float()
    auto = _st.transformer(model)
    _st.eager_attention(model)

    class SentenceGraph(torch.nn.Module):
        def __init__(self, inner, names):
            super().__init__()
            self.inner, self.names = inner, names

        def forward(self, *inputs):
            return self.inner(dict(zip(self.names, inputs)))["sentence_embedding"]

    names = list(tokenizer.input_names)
    # Two texts of different lengths, so the trace records the attention-mask path.
    sample = pad_batch(tokenizer.encode(PROBE_TEXTS[:2]), names, tokenizer.pad_id)
    args = tuple(torch.from_numpy(sample[n]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["sentence_embedding"] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        # the exporter's own chatter only (tracing constant Python bools, its deprecation,
        # opset notes), not every warning: the filters are the process's, and another
        # thread's catch_warnings that began inside this block and ends after it puts these
        # back for good (ignoring everything, a thread's warnings were all lost after that)
        for message in _EXPORT_CHATTER:
            warnings.filterwarnings("ignore", message=message)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            SentenceGraph(model, names), args, str(path), dynamo=False, opset_version=17,
            input_names=names, output_names=["sentence_embedding"], dynamic_axes=axes,
        )
    _fuse_transformer(path, getattr(auto, "config", None))


def _fuse_transformer(path: Path, config) -> None:
    """Fuse attention, layer norms and GELU with onnxruntime's optimiser where it knows the
    architecture (BERT-style encoders); other graphs keep onnxruntime's generic fusions."""
    if config is None or getattr(config, "model_type", None) not in ("bert",):
        return
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        with quiet_loggers("onnxruntime.transformers"):
            fused = optimize_model(str(path), model_type="bert",
                                   num_heads=int(config.num_attention_heads),
                                   hidden_size=int(config.hidden_size))
    except Exception:  # an unfused graph is still correct, only slower
        return
    fused.save_model_to_file(str(path))


def _quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation, per output channel, of all weights except the FFN
    down-projections.

    Those take GELU outputs whose outliers per-tensor activation scales cannot cover: keeping
    them in float32 lifts mean cosine to the fp32 model from 0.991 to 0.995 on SST-2/AG News
    texts for 1.4x the file size (see benchmarks/encode_speed.py).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src)).graph
    weights = {init.name: init.dims for init in graph.initializer}
    down = []
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        dims = next((weights[i] for i in node.input if i in weights), None)
        if dims is not None and len(dims) == 2 and dims[0] > dims[1]:
            down.append(node.name)
    with quiet_root_records():  # the quantiser logs its progress on the root logger
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
            nodes_to_exclude=down,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


class ExportDrift(RuntimeError):
    """An export whose embeddings are too far from the torch model's (`backend="auto"` then
    runs sentence-transformers instead)."""


def _check_export(model, folder: Path, precision: str) -> None:
    """Refuse an export whose embeddings drift from the torch model's on the probe texts."""
    import torch

    from embetter.text._backends.onnx import OnnxEngine

    engine = OnnxEngine(folder, precision)
    # without the model's default prompt on both sides: a pooling that leaves prompt tokens
    # out cannot take one here, and a caller who asked for prompt="" must not be refused
    got = engine.encode(PROBE_TEXTS, batch_size=4, prompt="")
    with torch.inference_mode():
        ref = np.asarray(model.encode(PROBE_TEXTS, batch_size=4, convert_to_numpy=True,
                                      show_progress_bar=False, prompt=""), dtype=np.float32)
    cos = row_cosines(got[:, :ref.shape[1]], ref)  # a model's truncate_dim cuts `ref`
    if not np.all(np.isfinite(got)) or cos.mean() < EXPORT_MIN_COSINE[precision]:
        raise ExportDrift(
            f"the {precision} ONNX export drifted from the torch model (mean cosine "
            f"{cos.mean():.4f} < {EXPORT_MIN_COSINE[precision]} on probe texts); "
            "use backend='torch' or precision='float32'"
        )
