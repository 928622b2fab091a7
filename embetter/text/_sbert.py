"""Pretrained sentence encoders (sentence-transformers) behind fit/transform."""

from __future__ import annotations

import numbers

import numpy as np

from embetter._validation import as_texts, check_int
from embetter.base import EmbetterBase, text_input_tags
from embetter.text._models import shared_sentence_transformer


def _is_sentence_transformer(obj) -> bool:
    return hasattr(obj, "encode") and hasattr(obj, "tokenize") and not isinstance(obj, str)


def _private_if_changed(model, device):
    """The caller's model itself when we can run it as it is, else a private copy.

    Moving it to another device or switching it from training to eval mode (which
    `SentenceTransformer.encode` does) would change the user's object: those cases get a copy.
    """
    import copy

    import torch

    from embetter._torch import device_name

    target = None if device is None else torch.device(device_name(device))
    current = getattr(model, "device", None)
    moves = target is not None and (current is None or torch.device(current) != target)
    if not moves and not getattr(model, "training", False):
        return model
    model = copy.deepcopy(model)
    if target is not None:
        model.to(target)
    return model.eval()


class SentenceEncoder(EmbetterBase):
    """Encode texts with a pretrained sentence-transformers model.

    The model is loaded on first use, not in `__init__`, so `clone`, `set_params` and
    `GridSearchCV` stay cheap. `all-MiniLM-L6-v2` resolves to the embedded copy from
    `embetter[model]` and loads with no network access.

    Arguments:
        name: a model name, a local path to a saved model, or a `SentenceTransformer` instance.
            An instance is never changed: when `device` asks for another device, or the
            model is in training mode, the encoder runs a private copy of it.
        device: `None` picks cuda, then mps, then cpu; or a string such as `"cpu"`, `"cuda:1"`.
        batch_size: texts encoded per forward pass.
        normalize_embeddings: scale every output row to unit length.
        truncate_dim: keep only the first `truncate_dim` dimensions (Matryoshka-style).
        show_progress_bar: show a progress bar while encoding.
        prompt: an optional text prepended to every input (for models trained with prompts,
            such as `"query: "`).
        backend: how to run the model (docs: "Fast encoding" has the measured table).
            `"torch"`: sentence-transformers' `encode`. `"pipelined"`: the same torch model fed
            by a faster loop (tokenisation in worker threads overlapped with the model,
            length-bucketed batches, pinned-memory copies, float16 on CUDA); the one to use on
            a GPU (not measured on a GPU in the session that wrote this: none was lent).
            `"onnx"`: an int8-quantised ONNX export, made locally on first use and cached under
            `$EMBETTER_CACHE_DIR` (default `~/.cache/embetter`), run by onnxruntime on the CPU
            (needs `embetter[onnx]`). `"openvino"`: the float32 export run by the OpenVINO
            runtime (needs `embetter[openvino]`). `"auto"`: the fastest of these that this
            machine supports: `"pipelined"` on a GPU, `"pipelined"` in bfloat16 on CPUs with
            native bfloat16 (AMX, AVX512-BF16), else int8 through onnxruntime, else `"torch"`.
        precision: `None` picks the backend's default (`"torch"`: float32; `"pipelined"`:
            float16 on CUDA, float32 elsewhere; `"onnx"`: int8; `"openvino"`: float32).
            `"pipelined"` also takes `"float32"`, `"float16"` and `"bfloat16"` (on CPUs with
            native bfloat16, such as AVX512-BF16 or AMX, about 3x float32 at cosine 0.9999;
            slower than float32 elsewhere); `"onnx"` takes `"int8"` and `"float32"`; `"auto"`
            chooses its own.

    Usage:

    ```python
    from embetter.text import SentenceEncoder

    enc = SentenceEncoder("all-MiniLM-L6-v2")
    X = enc.transform(["a happy dog", "a joyful puppy", "quarterly tax filings"])
    assert X.shape == (3, 384) and X.dtype == "float32"

    # int8 on the CPU: mean cosine >= 0.99 to backend="torch", several times its speed
    fast = SentenceEncoder("all-MiniLM-L6-v2", backend="auto")
    assert fast.transform(["a happy dog"]).shape == (1, 384)
    ```
    """

    def __init__(
        self,
        name="all-MiniLM-L6-v2",
        device=None,
        batch_size=32,
        normalize_embeddings=False,
        truncate_dim=None,
        show_progress_bar=False,
        prompt=None,
        backend="torch",
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
        return (id(self.name) if _is_sentence_transformer(self.name) else self.name, self.device)

    @property
    def model_(self):
        """The underlying `SentenceTransformer`, loaded on first access."""
        cached = self.__dict__.get("_model")
        if cached is not None and self.__dict__.get("_loaded_for") == self._model_key():
            return cached
        from embetter._torch import device_name

        if _is_sentence_transformer(self.name):
            model = _private_if_changed(self.name, self.device)
        else:
            model = shared_sentence_transformer(self.name, device_name(self.device))
        self.__dict__["_model"] = model
        self.__dict__["_loaded_for"] = self._model_key()
        return model

    def _backend(self) -> tuple[str, str | None]:
        """The `(backend, precision)` that runs, with `backend="auto"` resolved here."""
        if self.backend != "auto":
            return self.backend, self.precision
        from embetter.text._backends import auto_backend

        return auto_backend(self.device)

    def _fast_engine(self):
        """The engine of a fast backend (not `"torch"`), built on first use."""
        backend, precision = self._backend()
        key = (self._model_key(), backend, precision)
        cached = self.__dict__.get("_engine")
        if cached is not None and cached[0] == key:
            return cached[1]
        self._check_params()
        from embetter.text._backends import make_engine

        engine = make_engine(backend, precision, self.name, lambda: self.model_)
        self.__dict__["_engine"] = (key, engine)
        return engine

    def __getstate__(self):
        state = self.__dict__.copy()
        # A model loaded by name or path is re-loaded after unpickling: never pickle its weights.
        state.pop("_model", None)
        state.pop("_loaded_for", None)
        state.pop("_engine", None)
        return state

    # -- shape -------------------------------------------------------------------------------
    def _output_dim_param(self):
        """The truncation asked for by the parameters (None: keep all dimensions)."""
        return self.truncate_dim, "truncate_dim"

    def _output_dim(self) -> int:
        if self._backend()[0] != "torch":
            full = self._fast_engine().dim
        elif hasattr(self.model_, "get_embedding_dimension"):
            full = self.model_.get_embedding_dimension()
        else:
            full = self.model_.get_sentence_embedding_dimension()
        dim, param = self._output_dim_param()
        if dim is None:
            return int(full)
        if not isinstance(dim, numbers.Integral) or isinstance(dim, bool) or not 1 <= dim <= full:
            raise ValueError(
                f"{param} must be None or an int between 1 and the model's dimension {full}, "
                f"got {dim!r}"
            )
        return int(dim)

    def _check_params(self):
        check_int(self.batch_size, "batch_size")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise TypeError(f"prompt must be None or a str, got {type(self.prompt).__name__}")
        from embetter.text._backends import PRECISIONS

        if not isinstance(self.backend, str) or self.backend not in PRECISIONS:
            raise ValueError(
                f"backend must be one of {', '.join(map(repr, PRECISIONS))}, got {self.backend!r}"
            )
        if self.precision not in PRECISIONS[self.backend]:
            raise ValueError(
                f"precision for backend={self.backend!r} must be one of "
                f"{', '.join(map(repr, PRECISIONS[self.backend]))}, got {self.precision!r}"
            )
        if (self.backend in ("onnx", "openvino") and self.device is not None
                and str(self.device) != "cpu"):
            raise ValueError(
                f"backend={self.backend!r} runs on the CPU, got device={self.device!r}; "
                "use backend='pipelined' on a GPU"
            )

    # -- transform ---------------------------------------------------------------------------
    def transform(self, X):
        """Encode texts into a float32 array of shape `(n_texts, dim)`."""
        self._check_params()
        texts = as_texts(X)
        dim = self._output_dim()
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        if self._backend()[0] != "torch":
            emb = self._fast_engine().encode(
                texts, int(self.batch_size), self.prompt, bool(self.show_progress_bar)
            )
            return self._finish(emb, dim)
        emb = self.model_.encode(
            texts,
            batch_size=int(self.batch_size),
            show_progress_bar=bool(self.show_progress_bar),
            convert_to_numpy=True,
            normalize_embeddings=False,
            prompt=self.prompt,
        )
        return self._finish(np.asarray(emb, dtype=np.float32), dim)

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
        return np.asarray([f"{prefix}{i}" for i in range(self._output_dim())], dtype=object)

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
        batch_size=32,
        normalize_embeddings=False,
        show_progress_bar=False,
        prompt=None,
        backend="torch",
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
