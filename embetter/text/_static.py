"""Static text embeddings (model2vec): a vector per token, averaged; no transformer at run time."""

from __future__ import annotations

import numbers
import os
import re
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from embetter._estimator_checks import all_or_nothing
from embetter._removed import RemovedParams
from embetter._st import is_sentence_model
from embetter._validation import as_texts, check_bool
from embetter.base import ReadsTextsOnce, text_input_tags

#: texts per `StaticModel.encode` call in `transform` (its own batches are 1,024 texts)
TRANSFORM_CHUNK = 16_384


#: a Hugging Face model id: `owner/name`
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _hub_model(repo_id: str) -> Path | str:
    """A cached snapshot's folder (no network), else the id itself for model2vec to download;
    without network and without a cached copy, a `ModelNotFoundError` at once."""
    from embetter import _st
    from embetter.text._models import ModelNotFoundError, cached_hub_model, hub_unreachable

    cached = cached_hub_model(repo_id)
    if cached is not None:
        return cached
    _, told_offline = _st.hub_endpoint()
    offline = "HF_HUB_OFFLINE is set" if told_offline else hub_unreachable()
    if offline:
        raise ModelNotFoundError(
            f"Could not load model2vec model {repo_id!r}: it is not in the Hugging Face cache "
            f"and the Hub cannot be asked ({offline}). To fix: load it once on a machine with "
            "network access, or pass the path of a local model2vec model folder."
        )
    return repo_id


def _config_model_type(folder: Path):
    """The `model_type` a folder's config.json names (model2vec writes "model2vec",
    transformers "bert" and the like), or None when it names none or cannot be read."""
    import json

    try:
        kind = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


class TextEncoder(RemovedParams, ReadsTextsOnce, TransformerMixin, BaseEstimator):
    """Encode texts with a static model2vec model: a hundred times the speed of a transformer.

    A static model stores one vector per token and averages them, so encoding is a tokenizer
    pass and a table lookup (over a text's first 512 tokens, model2vec's `max_length`: the
    rest of a longer text is not read). `TextEncoder()` uses a static copy of the embedded
    all-MiniLM-L6-v2, distilled with model2vec on first use (one transformer pass over its
    30k-token vocabulary: seconds on a quiet laptop CPU, minutes on a busy one; no network)
    and cached under `$EMBETTER_CACHE_DIR` (default `$XDG_CACHE_HOME/embetter`, else
    `~/.cache/embetter`); later uses load it in
    well under a second. On nine public classification sets (200 labels) a logistic regression
    on its embeddings reaches 90-101 % of the accuracy it reaches on MiniLM's own (test rows;
    87-101 % on rows of the training splits; docs: "Fast encoding").

    With `train_on_fit=True`, `fit(texts)` goes one step further: it trains the static model on
    your own unlabelled texts to reproduce the teacher's sentence embeddings of them
    (tokenlearn's recipe, through model2vec's trainer). That costs one teacher encoding of the
    texts plus a short training run (at most 15 passes), and lifts the static model close to
    the teacher on that kind of text while keeping its speed: fitted on up to 10,000 train
    texts of each of the nine sets above, 93-101 % of MiniLM's accuracy on test rows, mean
    97.5 %. It is off by default, so that the encoder is stateless in a pipeline.

    Arguments:
        name: `None` for the model distilled from the embedded all-MiniLM-L6-v2, the path of
            a local model2vec model folder (as written by `StaticModel.save_pretrained`), or
            the Hugging Face id of a model2vec model (`"minishlab/potion-base-8M"`):
            downloaded once by model2vec, then loaded from the Hugging Face cache without
            asking the Hub again. Without network a cached model still loads, and one that
            is not cached fails at once with `ModelNotFoundError`. Or a model2vec
            `StaticModel` itself (read, never changed; pickled with the encoder).
        show_progress_bar: show progress bars while encoding, distilling and training.
        train_on_fit: when True, `fit(X)` trains the static model on the texts `X` to mimic
            `teacher`; `transform` then uses the trained model (and needs a `fit` first).
        teacher: the sentence model the training mimics (any `SentenceEncoder` name or path);
            only used when `train_on_fit=True`.
        random_state: seed of the training (only used when `train_on_fit=True`).

    Usage:

    ```python
    from embetter.text import TextEncoder

    enc = TextEncoder()
    X = enc.transform(["a happy dog", "a joyful puppy", "quarterly tax filings"])
    assert X.shape == (3, 256) and X.dtype == "float32"
    assert X[0] @ X[1] > X[0] @ X[2]
    ```
    """

    _removed_params = {
        "model": "pass the model as the first argument, name= (a Hugging Face id such as "
        "'minishlab/potion-base-8M', a local model2vec folder, or a StaticModel)",
    }

    def __init__(self, name=None, show_progress_bar=False, train_on_fit=False,
                 teacher="all-MiniLM-L6-v2", random_state=None):
        self.name = name
        self.show_progress_bar = show_progress_bar
        self.train_on_fit = train_on_fit
        self.teacher = teacher
        self.random_state = random_state

    # -- the model ---------------------------------------------------------------------------
    @property
    def model_(self):
        """The model2vec `StaticModel` in use: the trained one after `fit` with
        `train_on_fit=True`, else the one named by `name`, loaded on first access."""
        trained = self.__dict__.get("trained_model_")
        if trained is not None and self.train_on_fit:
            return trained
        return self._base_model()

    def _base_model(self):
        from model2vec import StaticModel

        if isinstance(self.name, StaticModel):
            return self.name  # the user's object: only read (encode), never changed
        cached = self.__dict__.get("_model")
        key = self._load_key()
        if cached is not None and self.__dict__.get("_loaded_for") == key:
            return cached

        from embetter.text._paths import BUILDING

        with BUILDING:  # threads that ask together: one loads, the others then find it
            cached = self.__dict__.get("_model")
            if cached is not None and self.__dict__.get("_loaded_for") == key:
                return cached
            source = self._source()
            model = StaticModel.from_pretrained(str(source), force_download=False)
            self.__dict__["_model"] = model
            self.__dict__["_loaded_for"] = key
        return model

    def _load_key(self) -> tuple:
        """What the loaded base model depends on: the name, and for a local folder the sizes
        and times of its files (a model saved there again is loaded again)."""
        from embetter.text._models import folder_key

        if isinstance(self.name, (str, os.PathLike)):
            return folder_key(self.name)
        return (self.name, None)

    def _source(self) -> Path | str:
        """A local folder to load, or a Hugging Face model id for model2vec to download."""
        if self.name is None:
            from embetter.text._distill import default_model_folder

            return default_model_folder(show_progress_bar=bool(self.show_progress_bar))
        if not isinstance(self.name, (str, os.PathLike)):
            raise TypeError(
                "name must be None, the path of a model2vec model folder, a Hugging Face "
                f"model id or a model2vec StaticModel, got {type(self.name).__name__}"
            )
        folder = Path(self.name).expanduser()
        if (folder / "config.json").is_file() or (folder / "modules.json").is_file():
            return self._static_folder(folder)
        if isinstance(self.name, str) and not folder.exists() and HUB_ID.fullmatch(self.name):
            found = _hub_model(self.name)
            return self._static_folder(found) if isinstance(found, Path) else found
        what = ("is not a folder" if not folder.is_dir()
                else "has no config.json (nor a sentence-transformers modules.json)")
        raise FileNotFoundError(
            f"name={os.fspath(self.name)!r} {what}: TextEncoder loads a local model2vec "
            "model (a folder written by StaticModel.save_pretrained) or a Hugging Face model "
            "id such as 'minishlab/potion-base-8M'; pass name=None for the model distilled "
            "from the embedded all-MiniLM-L6-v2"
        )

    def _static_folder(self, folder: Path) -> Path:
        """`folder` if it holds a static model: model2vec's own layout, or
        sentence-transformers' (a StaticEmbedding model saved with SentenceTransformer.save,
        as the static-* models are): model2vec reads both. A transformer is refused here,
        by name, not deep inside model2vec's loader."""
        if (folder / "modules.json").is_file():
            transformer = not _static_modules(folder)
        else:
            kind = _config_model_type(folder)
            transformer = kind is not None and kind != "model2vec"
        if transformer:
            raise ValueError(
                f"name={os.fspath(self.name)!r} is a transformer model, not a static one: "
                "TextEncoder runs static (model2vec) models; use SentenceEncoder(name) for "
                "this one, or TextEncoder() for a static model distilled from the embedded "
                "all-MiniLM-L6-v2")
        return folder

    def __getstate__(self):
        state = self.__dict__.copy()
        # The base model is re-loaded from its folder after unpickling; a trained one is kept,
        # as the files it saves (its tokenizer is a Rust object that skops cannot store)
        state.pop("_model", None)
        state.pop("_loaded_for", None)
        trained = state.pop("trained_model_", None)
        if trained is not None:
            from embetter._state_bytes import folder_to_bytes

            state["_trained_files"] = folder_to_bytes(trained.save_pretrained)
        return state

    def __setstate__(self, state):
        files = state.pop("_trained_files", None)
        self.__dict__.update(state)  # a 0.10.0 pickle holds trained_model_ itself
        if files is not None:
            from model2vec import StaticModel

            from embetter._state_bytes import folder_from_bytes

            self.trained_model_ = folder_from_bytes(
                files, lambda folder: StaticModel.from_pretrained(folder, force_download=False))

    # -- parameters --------------------------------------------------------------------------
    def _check_params(self):
        for param in ("show_progress_bar", "train_on_fit"):
            check_bool(getattr(self, param), param)
        rs = self.random_state
        if rs is not None and not isinstance(rs, (numbers.Integral, np.random.RandomState)):
            raise TypeError(
                f"random_state must be None, an int or a RandomState, got {type(rs).__name__}"
            )
        if not self.train_on_fit:  # (the settings below only train)
            return
        if isinstance(rs, numbers.Integral) and not 0 <= rs < 2**32:
            raise ValueError(f"random_state must be an int from 0 to 2**32 - 1 (numpy's seeds), "
                             f"got {rs}")
        teacher = self.teacher
        if not (isinstance(teacher, (str, os.PathLike)) or is_sentence_model(teacher)):
            raise TypeError(
                "teacher must be a sentence model name, a local path or a SentenceTransformer "
                f"(the model train_on_fit=True mimics), got {type(teacher).__name__}")

    # -- fit -----------------------------------------------------------------------------------
    @all_or_nothing  # a failed fit (too few texts, say) keeps the previous one
    def fit(self, X, y=None):
        """Nothing to learn unless `train_on_fit=True`: then train the static model on the
        texts `X` to mimic `teacher` (`y` is ignored)."""
        self._check_params()
        for name in ("trained_model_", "n_features_in_"):  # what a trained fit recorded
            self.__dict__.pop(name, None)
        if self.train_on_fit:
            self._train(as_texts(X), self._base_model())
        return self

    @all_or_nothing
    def partial_fit(self, X, y=None, classes=None):
        """With `train_on_fit=True`, continue training the static model on the texts `X`, at
        least 20 of them (the first call starts from the untrained model); otherwise nothing
        to learn."""
        self._check_params()
        if self.train_on_fit:
            start = self.__dict__.get("trained_model_")
            self._train(as_texts(X), self._base_model() if start is None else start)
        return self

    def _train(self, texts: list[str], start):
        from embetter._guest import kept_random_state
        from embetter._torch.device import grad_enabled
        from embetter.text._distill import train_to_mimic

        if len(texts) < 20:
            raise ValueError(
                "train_on_fit=True needs at least 20 texts to train on (a tenth is held out "
                f"for early stopping), got {len(texts)}"
            )
        targets = self._teacher_embeddings(texts)
        # model2vec's trainer seeds Python's, numpy's and torch's global generators; it
        # trains with autograd on, even under the caller's no_grad() or inference_mode()
        # (drawn before numpy's global generator is kept and put back: with random_state=None
        # each fit draws another seed, as scikit-learn means None)
        seed = self._training_seed()
        with kept_random_state(), grad_enabled():
            self.trained_model_ = train_to_mimic(start, texts, targets, seed,
                                                 show_progress_bar=bool(self.show_progress_bar))
        self.n_features_in_ = 1

    def _training_seed(self) -> int:
        """The seed `train_on_fit` trains with, drawn from `random_state`."""
        from embetter._validation import as_random_state

        return int(as_random_state(self.random_state).randint(0, 2**31 - 1))

    def _teacher_embeddings(self, texts: list[str]) -> np.ndarray:
        """The teacher's sentence embeddings of `texts`: what the static model learns to mimic.
        (benchmarks/static.py overrides this to read them from its disk cache.)"""
        from embetter.text._sbert import SentenceEncoder

        encoder = SentenceEncoder(self.teacher, show_progress_bar=self.show_progress_bar)
        return encoder.transform(texts)

    def __sklearn_is_fitted__(self):
        return not self.train_on_fit or "trained_model_" in self.__dict__

    # -- transform -----------------------------------------------------------------------------
    def transform(self, X):
        """Encode texts into a float32 array of shape `(n_texts, dim)`."""
        self._check_params()
        if self.train_on_fit:
            check_is_fitted(self)
        texts = as_texts(X)
        model = self.model_
        if not texts:
            return np.zeros((0, model.dim), dtype=np.float32)
        # Chunk by chunk into one float32 array: model2vec's encode concatenates its batches,
        # which would briefly hold a large input's embeddings twice (a Dask worker's partition
        # of 250,000 texts: 256 MB more at its peak).
        out = np.empty((len(texts), model.dim), dtype=np.float32)
        starts = range(0, len(texts), TRANSFORM_CHUNK)
        progress = bool(self.show_progress_bar)
        whole = None  # several chunks: one bar over all the texts, not one bar per chunk
        if progress and len(starts) > 1:
            from tqdm.auto import tqdm  # model2vec's own dependency

            whole = tqdm(total=len(texts), desc="Encoding", unit="text")
        for start in starts:
            chunk = texts[start:start + TRANSFORM_CHUNK]
            out[start:start + len(chunk)] = model.encode(
                chunk, show_progress_bar=progress and whole is None, use_multiprocessing=False)
            if whole is not None:
                whole.update(len(chunk))
        if whole is not None:
            whole.close()
        return out

    def get_feature_names_out(self, input_features=None):
        """Output column names: `textencoder0`, `textencoder1`, ..."""
        if self.train_on_fit:  # (its output is the trained model's, as transform's)
            check_is_fitted(self)
        return np.asarray([f"textencoder{i}" for i in range(self.model_.dim)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = bool(self.train_on_fit)
        text_input_tags(tags)
        tags.non_deterministic = False
        return tags


def _static_modules(folder: Path) -> bool:
    """Whether a sentence-transformers folder's modules.json names a StaticEmbedding (an
    unreadable one is left to model2vec to judge)."""
    import json

    try:
        modules = json.loads((folder / "modules.json").read_text())
        return any(str(m.get("type", "")).endswith("StaticEmbedding") for m in modules)
    except (OSError, ValueError, AttributeError, TypeError):
        return True
