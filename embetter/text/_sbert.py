"""Pretrained sentence encoders (sentence-transformers) behind fit/transform."""

from __future__ import annotations

import numbers
import threading
from contextlib import contextmanager

import numpy as np

from embetter._removed import RemovedParams
from embetter._st import embedding_dim, is_sentence_model
from embetter._validation import as_texts, check_bool, check_int
from embetter.base import EmbetterBase, text_input_tags
from embetter.text._model_copies import eval_view, model_state_key, sync_weights
from embetter.text._models import shared_sentence_transformer
from embetter.text._paths import BUILDING, EncodePaths

#: the model key of the transform running in this thread: (encoder, key) or None
_CALL = threading.local()


def _check_width(dim, param: str, full: int | None = None) -> int:
    """`truncate_dim` or `dim`: an int from 1 to the model's width `full` (None: not known yet,
    the lower bound only)."""
    if (not isinstance(dim, numbers.Integral) or isinstance(dim, bool) or dim < 1
            or (full is not None and dim > full)):
        none = "None or " if param == "truncate_dim" else ""
        width = "" if full is None else f" {full}"
        raise ValueError(f"{param} must be {none}an int between 1 and the model's "
                         f"dimension{width}, got {dim!r}")
    return int(dim)


class SentenceEncoder(EncodePaths, RemovedParams, EmbetterBase):
    """Encode texts with a pretrained sentence-transformers model.

    The model is loaded on first use, not in `__init__`, so `clone`, `set_params` and
    `GridSearchCV` stay cheap. `all-MiniLM-L6-v2` resolves to the embedded copy from
    `embetter[model]` and loads with no network access.

    Arguments:
        name: a model name, a local path to a saved model, or a `SentenceTransformer` instance.
            An instance is never changed: when `device` asks for another device, or the
            model is in training mode, the encoder runs a private copy of it.
        device: `None` picks cuda, then mps, then cpu; or a string such as `"cpu"`, `"cuda:1"`.
        batch_size: texts encoded per forward pass. `None` (default): 32 texts, except for the
            pipelined loop on CUDA (the default there), which fills each batch with
            length-sorted texts up to a budget of padded tokens (short texts in large batches,
            long ones in small batches) instead of a fixed count.
        normalize_embeddings: scale every output row to unit length.
        truncate_dim: keep only the first `truncate_dim` dimensions (Matryoshka-style); it
            overrides a model's own `truncate_dim`, as `encode(truncate_dim=...)` does.
        show_progress_bar: show a progress bar while encoding.
        prompt: an optional text prepended to every input (for models trained with prompts,
            such as `"query: "`).
        backend: how to run the model (docs: "Fast encoding" has the measured table).
            `None` (default): `"torch"` on CPUs and MPS; on CUDA `"pipelined"`, in float16 when
            that keeps cosine >= 0.999 to float32 on check texts, batched by a token budget.
            `"torch"`: sentence-transformers' `encode`. `"pipelined"`: the same torch model fed
            by a faster loop (tokenisation in worker threads overlapped with the model,
            length-bucketed batches, pinned-memory copies, float16 on CUDA).
            `"onnx"`: an int8-quantised ONNX export, made locally on first use and cached under
            `$EMBETTER_CACHE_DIR` (default `$XDG_CACHE_HOME/embetter`, else
            `~/.cache/embetter`), run by onnxruntime on the CPU
            (needs `embetter[onnx]`). `"openvino"`: the float32 export run by the OpenVINO
            runtime (needs `embetter[openvino]`). `"auto"`: measures, at first use, the paths
            this machine can run on 16 to 256 bundled texts on a CPU (up to 1,024 on MPS,
            8,192 on CUDA), keeps those within mean cosine 0.99 of float32 and runs the
            fastest (the default unless another is clearly faster); the choice is cached per
            machine and model, and `backend_` / `backend_probe_` say what was chosen, from
            which timings, at what cost.
        precision: `None` picks the backend's default (`"torch"`: float32; `"pipelined"`:
            float16 on CUDA when it holds cosine 0.999, float32 elsewhere; `"onnx"`: int8;
            `"openvino"`: float32).
            A model saved in float16 or bfloat16 runs in that dtype on `"torch"` and on
            the default `"pipelined"` on a CPU, as `SentenceTransformer.encode` runs it;
            `"float32"` or the other half named on `"pipelined"` runs a float32 copy (in
            the half named, under autocast), the ONNX-based paths export a float32 one, and
            `"torch"` refuses `"float32"` (a `ValueError` at `transform`).
            `"pipelined"` also takes `"float32"`, `"float16"` and `"bfloat16"` (about 3x
            float32 at cosine 0.9999 on a CPU with AMX; with AVX512-BF16 alone anywhere from
            slower to 1.6x, elsewhere slower: `backend="auto"` measures); `"onnx"` takes
            `"int8"` and `"float32"`; `"auto"` chooses its own.

    Attributes (after the first `transform` with `backend="auto"`; not pickled, as they
    describe this machine):
        backend_: the backend that runs.
        backend_probe_: the probe's report: `choice` (backend, precision, token budget),
            `texts_per_second` and `cosine_mean`/`cosine_min` of every candidate, `seconds`
            spent timing, `setup_seconds` (loading, one-off exports), `cached`, `cache_file`.

    Usage:

    ```python
    from embetter.text import SentenceEncoder

    enc = SentenceEncoder("all-MiniLM-L6-v2")
    X = enc.transform(["a happy dog", "a joyful puppy", "quarterly tax filings"])
    assert X.shape == (3, 384) and X.dtype == "float32"

    # the fastest path this machine runs at mean cosine >= 0.99 to float32 (measured once)
    fast = SentenceEncoder("all-MiniLM-L6-v2", backend="auto")
    assert fast.transform(["a happy dog"]).shape == (1, 384)
    assert fast.backend_ in ("torch", "pipelined", "onnx", "openvino")
    ```
    """

    _removed_params = {
        "quantize": "for an int8-quantised model pass backend='onnx' (embetter[onnx]), or "
        "backend='auto' for the fastest path this machine runs at cosine >= 0.99",
        "num_threads": "embetter leaves torch's process-wide thread count alone; call "
        "torch.set_num_threads(n) yourself if you want to change it (the onnx and openvino "
        "backends read it when their engine is built)",
    }

    def __init__(
        self,
        name="all-MiniLM-L6-v2",
        device=None,
        batch_size=None,
        normalize_embeddings=False,
        truncate_dim=None,
        show_progress_bar=False,
        prompt=None,
        backend=None,
        precision=None,
    ):
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self.normalize_embeddings = normalize_embeddings
        self.truncate_dim = truncate_dim
        self.show_progress_bar = show_progress_bar
        self.prompt = prompt
        self.backend = backend
        self.precision = precision

    # -- the model ---------------------------------------------------------------------------
    def _model_key(self):
        memo = getattr(_CALL, "memo", None)
        if memo is not None and memo[0] is self:  # inside this encoder's transform
            return memo[1]
        return model_state_key(self.name, self.device)

    @contextmanager
    def _one_key(self):
        """One transform reads the model's state once (a local folder's files are listed and
        stat'ed for it), not once for each question it asks about the model."""
        outer = getattr(_CALL, "memo", None)
        _CALL.memo = (self, model_state_key(self.name, self.device))
        try:
            yield
        finally:
            _CALL.memo = outer

    @property
    def model_(self):
        """The underlying `SentenceTransformer`, loaded on first access (and again when the
        folder it came from is saved again). Read it, do not change it: a model loaded by
        name is shared by every encoder of that name and device in the process (to change
        or train one, load your own `SentenceTransformer` and pass it as `name`)."""
        key = self._model_key()
        if is_sentence_model(self.name) and key[2]:  # the caller's model runs as it is
            # checked on every access: the caller may train it meanwhile
            self.__dict__["_model"], self.__dict__["_loaded_for"] = self.name, key
            return self.name
        cached = self.__dict__.get("_model")
        if cached is not None and self.__dict__.get("_loaded_for") == key:
            return cached
        with BUILDING:  # threads that ask together: one loads, the others then find it
            cached = self.__dict__.get("_model")
            if cached is not None and self.__dict__.get("_loaded_for") == key:
                return cached
            if is_sentence_model(self.name):
                model = eval_view(self.name, self.device)
            else:
                from embetter._torch import device_name

                model = shared_sentence_transformer(self.name, device_name(self.device))
            self.__dict__["_model"] = model
            self.__dict__["_loaded_for"] = key
            return model

    def _sync_private_copy(self):
        """A caller's model that encodes through a private copy (on another device) may have
        trained on since the copy was made: the copy takes its current weights before each
        transform (an `eval_view`, of a model in training mode, shares them: only a tensor
        the caller replaced is loaded), and its encode settings."""
        copy = self.__dict__.get("_model")
        if (copy is not None and copy is not self.name and is_sentence_model(self.name)
                and self.__dict__.get("_loaded_for") == self._model_key()):
            sync_weights(copy, self.name)

    def __getstate__(self):
        state = self.__dict__.copy()
        # A model loaded by name or path is re-loaded after unpickling: never pickle its weights.
        state.pop("_model", None)
        state.pop("_loaded_for", None)
        state.pop("_engine", None)
        # What backend="auto" chose describes this machine: another one measures its own.
        for name in ("_auto", "_fast_ok", "backend_", "backend_probe_"):
            state.pop(name, None)
        return state

    # -- shape -------------------------------------------------------------------------------
    def _output_dim_param(self):
        """The truncation asked for by the parameters (None: keep all dimensions)."""
        return self.truncate_dim, "truncate_dim"

    def _output_dim(self, plan=None, engine=None) -> int:
        """The width `transform` returns; `plan` and its `engine` (a fast backend's) where the
        caller has them (each asks for the engine's key: a caller's model's weights hashed)."""
        plan = self._plan() if plan is None else plan
        dim, param = self._output_dim_param()
        if plan.backend != "torch":
            engine = engine or self._fast_engine(plan)
            full = engine.dim
        else:
            full = embedding_dim(self.model_, untruncated=True)
        if dim is None:  # the model's own truncate_dim, as its encode cuts (see `_encode`)
            cut = self._model_cut(plan, engine)
            return int(full if cut is None else min(full, int(cut)))
        return _check_width(dim, param, full)

    def _check_params(self):
        check_int(self.batch_size, "batch_size", allow_none=True)
        dim, param = self._output_dim_param()  # (its upper bound, the model's: `_output_dim`)
        if dim is not None:
            _check_width(dim, param)
        for flag in ("normalize_embeddings", "show_progress_bar"):
            check_bool(getattr(self, flag), flag)
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise TypeError(f"prompt must be None or a str, got {type(self.prompt).__name__}")
        from embetter.text._backends import PRECISIONS

        if not (self.backend is None or isinstance(self.backend, str)) or (
                self.backend not in PRECISIONS):
            raise ValueError(
                f"backend must be one of {', '.join(map(repr, PRECISIONS))}, got {self.backend!r}"
            )
        if self.precision not in PRECISIONS[self.backend]:
            raise ValueError(
                f"precision for backend={self.backend!r} must be one of "
                f"{', '.join(map(repr, PRECISIONS[self.backend]))}, got {self.precision!r}"
            )
        if self.backend in ("onnx", "openvino") and self.device is not None:
            from embetter._torch import resolve_device  # "cpu:0" and torch.device("cpu") too

            if resolve_device(self.device).type != "cpu":
                raise ValueError(
                    f"backend={self.backend!r} runs on the CPU, got device={self.device!r}; "
                    "use backend='pipelined' on a GPU"
                )

    # -- transform ---------------------------------------------------------------------------
    def transform(self, X):
        """Encode texts into a float32 array of shape `(n_texts, dim)`."""
        self._check_params()
        texts = as_texts(X)
        with self._one_key():
            self._sync_private_copy()
            plan = self._plan()
            engine = None if plan.backend == "torch" else self._fast_engine(plan)
            dim = self._output_dim(plan, engine)
            if not texts:
                return np.zeros((0, dim), dtype=np.float32)
            return self._finish(self._encode(plan, texts, engine), dim)

    def _finish(self, emb: np.ndarray, dim: int) -> np.ndarray:
        """Truncate, then normalise (in that order: a truncated vector is re-normalised)."""
        if emb.shape[1] != dim:
            emb = np.ascontiguousarray(emb[:, :dim])
        if self.normalize_embeddings:
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            emb /= np.maximum(norms, 1e-12)
        return emb

    def get_feature_names_out(self, input_features=None):
        """Output column names: `<classname>0`, `<classname>1`, ..."""
        prefix = type(self).__name__.lower()
        with self._one_key():
            dim = self._output_dim()
        return np.asarray([f"{prefix}{i}" for i in range(dim)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        text_input_tags(tags)
        tags.non_deterministic = False
        return tags


class MatryoshkaEncoder(SentenceEncoder):
    """A `SentenceEncoder` whose output keeps only the first `dim` dimensions.

    Matryoshka-trained models put most information in the leading dimensions, so a short
    prefix is a cheap, compact embedding. With `normalize_embeddings=True` the truncated vector
    is re-normalised to unit length. The other arguments (`device`, `batch_size`,
    `normalize_embeddings`, `show_progress_bar`, `prompt`, `backend`, `precision`) mean what
    they mean in `SentenceEncoder`.

    Arguments:
        name: a model name, local path, or `SentenceTransformer` instance.
        dim: how many leading dimensions to keep.

    Usage:

    ```python
    from embetter.text import MatryoshkaEncoder

    X = MatryoshkaEncoder(dim=64, normalize_embeddings=True).transform(["hello there"])
    assert X.shape == (1, 64)
    ```
    """

    def __init__(
        self,
        name="all-MiniLM-L6-v2",
        dim=128,
        device=None,
        batch_size=None,
        normalize_embeddings=False,
        show_progress_bar=False,
        prompt=None,
        backend=None,
        precision=None,
    ):
        self.name = name
        self.dim = dim
        self.device = device
        self.batch_size = batch_size
        self.normalize_embeddings = normalize_embeddings
        self.show_progress_bar = show_progress_bar
        self.prompt = prompt
        self.backend = backend
        self.precision = precision

    def _output_dim_param(self):
        if self.dim is None:
            raise ValueError("dim must be an int between 1 and the model's dimension, got None")
        return self.dim, "dim"
