"""Fast encoding paths behind `SentenceEncoder(backend=...)`.

Two engines share one batching pipeline:

- `PipelinedEngine` (`backend="pipelined"`): the model's own torch modules, fed by our loop
  instead of `SentenceTransformer.encode`: texts are tokenised by the Rust fast tokenizer in
  worker threads while the model runs, batches are bucketed by token length, inputs go through
  pinned memory with non-blocking copies, and CUDA runs in float16 autocast by default.
- `OnnxEngine` (`backend="onnx"`): the whole sentence pipeline (transformer, pooling, dense,
  normalise) exported locally with `torch.onnx.export`, fused with onnxruntime's transformer
  optimiser and quantised to int8 weights, cached on disk and run by onnxruntime on the CPU.
  A cache hit needs neither torch nor transformers.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from embetter.text._models import cache_root

#: Bump when the export recipe changes, so old cache entries are not reused.
EXPORT_VERSION = "1"
PRECISIONS = {
    "torch": (None, "float32"),
    "pipelined": (None, "float32", "float16", "bfloat16"),
    "onnx": (None, "int8", "float32"),
}
#: Mean cosine to the torch fp32 embeddings that an export must reach on the probe texts.
EXPORT_MIN_COSINE = {"int8": 0.99, "float32": 0.9999}

# Texts that exercise the tokenizer: case, accents, punctuation, numbers, unknown words,
# an empty string, and one longer than any model's maximum length (truncation).
PROBE_TEXTS = [
    "A happy dog runs in the park.",
    "QUARTERLY tax filings are due on 15 April 2024!",
    "Café déjà vu: naïve façades, über-cool.",
    "",
    "short",
    "emojis 🙂 and symbols #hashtag @user http://example.com/a?b=c",
    "the market moves; our team predicts the weather, and a pilot follows the news",
    " ".join(f"word{i} and more text" for i in range(200)),
]


# -- tokenisation ----------------------------------------------------------------------------


class TextTokenizer:
    """A sentence model's tokenisation done by the Rust `tokenizers` library directly.

    Built from a loaded `SentenceTransformer` and checked against its own `preprocess` on probe
    texts, so the fast paths feed the model exactly the token ids the reference path does.
    """

    def __init__(self, tokenizer, input_names, lowercase=False, pad_id=0):
        self.tokenizer = tokenizer
        self.input_names = tuple(input_names)
        self.lowercase = bool(lowercase)
        self.pad_id = int(pad_id)

    @classmethod
    def from_sentence_transformer(cls, model) -> TextTokenizer:
        first = model[0]
        hf_tok = getattr(first, "tokenizer", None)
        backend = getattr(hf_tok, "backend_tokenizer", None)
        max_len = getattr(first, "max_seq_length", None)
        if backend is None or not isinstance(max_len, int):
            raise ValueError(
                "the fast backends need a sentence-transformers text model with a fast "
                f"(Rust) tokenizer and a max_seq_length; got a first module "
                f"{type(first).__name__} with tokenizer {type(hf_tok).__name__}. "
                "Use backend='torch' for this model."
            )
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(backend.to_str())
        tok.no_padding()
        tok.enable_truncation(max_length=max_len)
        reference = model.preprocess(PROBE_TEXTS[:2])
        names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in reference]
        pad_id = hf_tok.pad_token_id if hf_tok.pad_token_id is not None else 0
        fast = cls(tok, names, lowercase=bool(getattr(first, "do_lower_case", False)),
                   pad_id=pad_id)
        fast._check_against(model)
        return fast

    def _check_against(self, model) -> None:
        """Raise unless we produce the same inputs as `model.preprocess`, prompts included."""
        for prompt in (None, "query: "):
            ref = model.preprocess(PROBE_TEXTS, prompt=prompt)
            ours = pad_batch(self.encode(PROBE_TEXTS, prompt), self.input_names, self.pad_id)
            for name in self.input_names:
                theirs = ref[name].numpy()
                width = max(theirs.shape[1], ours[name].shape[1])
                if not np.array_equal(_widen(theirs, width), _widen(ours[name], width)):
                    raise ValueError(
                        "the fast backends could not reproduce this model's tokenisation "
                        f"({name} differs from sentence-transformers' preprocess). "
                        "Use backend='torch' for this model."
                    )

    def encode(self, texts, prompt=None) -> list:
        if prompt:
            texts = [prompt + t for t in texts]
        if self.lowercase:
            texts = [t.lower() for t in texts]
        return self.tokenizer.encode_batch(texts, add_special_tokens=True)

    def save(self, folder: Path) -> None:
        self.tokenizer.save(str(folder / "tokenizer.json"))

    @classmethod
    def load(cls, folder: Path, meta: dict) -> TextTokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        return cls(tok, meta["input_names"], meta["lowercase"], meta["pad_id"])


def _widen(a: np.ndarray, width: int) -> np.ndarray:
    # Padding values differ between tokenizers' conventions only where the mask is 0; compare
    # real tokens by zero-filling both sides to the same width.
    out = np.zeros((a.shape[0], width), dtype=np.int64)
    out[:, : a.shape[1]] = a
    return out


def pad_batch(encodings, input_names, pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad token encodings to the longest one: the model's int64 input arrays."""
    width = max((len(e.ids) for e in encodings), default=0)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        ids[row, :n] = enc.ids
        mask[row, :n] = 1
        types[row, :n] = enc.type_ids
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: arrays[name] for name in input_names}


# -- the shared batching pipeline ------------------------------------------------------------


def bucketed_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Positions grouped into batches of similar token length (longest first), so padding
    costs little and the first batch shows the peak memory."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def iter_batches(texts, tokenizer: TextTokenizer, prompt, batch_size: int,
                 window: int = 4096, workers: int = 2):
    """Yield `(positions, inputs)` batches while worker threads tokenise the next windows.

    Texts are cut into windows; a worker tokenises a whole window (the Rust tokenizer releases
    the GIL), buckets it by token length and pads each batch, while the caller runs the model
    on the previous window. Positions index into `texts`.
    """

    def prepare(start: int):
        chunk = texts[start : start + window]
        encodings = tokenizer.encode(chunk, prompt)
        out = []
        for idx in bucketed_batches([len(e.ids) for e in encodings], batch_size):
            arrays = pad_batch([encodings[i] for i in idx], tokenizer.input_names,
                               tokenizer.pad_id)
            out.append((idx + start, arrays))
        return out

    starts = iter(range(0, len(texts), window))
    with ThreadPoolExecutor(max_workers=max(1, workers),
                            thread_name_prefix="embetter-tokenize") as pool:
        pending = deque(pool.submit(prepare, s) for s in itertools.islice(starts, workers + 1))
        while pending:
            batches = pending.popleft().result()
            nxt = next(starts, None)
            if nxt is not None:
                pending.append(pool.submit(prepare, nxt))
            yield from batches


def _progress(batches, total: int, show: bool):
    if not show:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, total=total, desc="Batches")


def _needs_prompt_length(model) -> bool:
    """Pooling that leaves the prompt's tokens out needs their count, which we do not pass."""
    return any(getattr(m, "include_prompt", True) is False for m in model)


def _check_prompt(prompt, needs_prompt_length: bool, backend: str) -> None:
    if prompt and needs_prompt_length:
        raise ValueError(
            f"backend={backend!r} does not support a prompt with a model whose pooling excludes "
            "the prompt tokens (include_prompt=False); use backend='torch'"
        )


# -- the pipelined torch engine --------------------------------------------------------------


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


# -- the ONNX engine -------------------------------------------------------------------------


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


def _hash_folder(path: Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):  # noqa: B023
                h.update(block)
    return h.hexdigest()


_folder_hashes: dict = {}


def _folder_fingerprint(path: Path) -> str:
    """Content hash of a model folder, remembered per (path, sizes, mtimes) in this process."""
    stats = tuple(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*")) if p.is_file()
    )
    key = hashlib.blake2b(repr(stats).encode(), digest_size=20).hexdigest()
    if key not in _folder_hashes:
        _folder_hashes[key] = _hash_folder(path)
    return _folder_hashes[key]


def model_fingerprint(model) -> str:
    """Content hash of a loaded SentenceTransformer: its weights, tokenizer and module layout."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr(model).encode())
    backend = getattr(getattr(model[0], "tokenizer", None), "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


_export_lock = threading.Lock()


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
        fingerprint = _folder_fingerprint(source)
        label = source.name if source.name != "model" else source.parent.name
    else:
        model = load_model()
        fingerprint = model_fingerprint(model)
        label = str(name) if isinstance(name, (str, os.PathLike)) else type(name).__name__
    key = hashlib.blake2b(
        f"{fingerprint}|{EXPORT_VERSION}|{ort.__version__}".encode(), digest_size=10
    ).hexdigest()
    label = "".join(c if c.isalnum() or c in "-_." else "-" for c in label)[:60]
    folder = cache_root() / "onnx" / f"{label}-{key}"
    if (folder / f"model-{precision}.onnx").is_file() and (folder / "meta.json").is_file():
        return folder
    with _export_lock:
        if not (folder / f"model-{precision}.onnx").is_file():
            export_onnx(model if model is not None else load_model(), folder, precision)
    return folder


def export_onnx(model, folder: Path, precision: str) -> None:
    """Export `model` into `folder` (`model-<precision>.onnx`, tokenizer, meta), atomically.

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
        dim = getattr(model, "get_embedding_dimension", None)
        meta = {
            "dim": int((dim or model.get_sentence_embedding_dimension)()),
            "input_names": list(tokenizer.input_names),
            "lowercase": tokenizer.lowercase,
            "pad_id": tokenizer.pad_id,
            "needs_prompt_length": _needs_prompt_length(model),
            "export_version": EXPORT_VERSION,
        }
        tokenizer.save(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        _check_export(model, tmp, precision)
        folder.mkdir(exist_ok=True)
        for file in ("tokenizer.json", f"model-{precision}.onnx", "meta.json"):
            os.replace(tmp / file, folder / file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_graph(model, tokenizer: TextTokenizer, path: Path) -> None:
    """Trace the whole sentence pipeline (transformer + pooling + dense + normalise) to ONNX."""
    import copy
    import warnings

    import torch

    # A private CPU copy with plain ("eager") attention: it traces to the pattern that
    # onnxruntime fuses into its Attention kernel, and the caller's model is left untouched.
    model = copy.deepcopy(model).to("cpu").eval()
    auto = getattr(model[0], "auto_model", None)
    if auto is not None and hasattr(auto, "set_attn_implementation"):
        # A model without eager attention still exports, just without the fused kernel.
        with contextlib.suppress(ValueError, ImportError):
            auto.set_attn_implementation("eager")

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
        warnings.simplefilter("ignore")  # tracer chatter about constant Python bools
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
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    try:
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
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    graph = onnx.load(str(src)).graph
    weights = {init.name: init.dims for init in graph.initializer}
    down = []
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        dims = next((weights[i] for i in node.input if i in weights), None)
        if dims is not None and len(dims) == 2 and dims[0] > dims[1]:
            down.append(node.name)
    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
        nodes_to_exclude=down,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _check_export(model, folder: Path, precision: str) -> None:
    """Refuse an export whose embeddings drift from the torch model's on the probe texts."""
    import torch

    engine = OnnxEngine(folder, precision)
    got = engine.encode(PROBE_TEXTS, batch_size=4)
    with torch.inference_mode():
        ref = np.asarray(model.encode(PROBE_TEXTS, batch_size=4, convert_to_numpy=True,
                                      show_progress_bar=False), dtype=np.float32)
    cos = np.sum(got * ref, axis=1) / np.maximum(
        np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    if not np.all(np.isfinite(got)) or cos.mean() < EXPORT_MIN_COSINE[precision]:
        raise RuntimeError(
            f"the {precision} ONNX export drifted from the torch model (mean cosine "
            f"{cos.mean():.4f} < {EXPORT_MIN_COSINE[precision]} on probe texts); "
            "use backend='torch' or precision='float32'"
        )
