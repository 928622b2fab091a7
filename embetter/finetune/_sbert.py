"""Fine-tune the sentence model itself: SbertLearner (pairs) and SbertTuner (texts + labels)."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from embetter._validation import as_labels, as_texts, check_pairs

#: Loss name -> the data it trains on (sentence-transformers' data formats).
LOSSES = {
    "cosine": "pairs with a float similarity score in [-1, 1]",
    "cosent": "pairs with a float similarity score (only the order of the scores matters)",
    "contrastive": "pairs with a 0/1 label (1 = similar)",
    "online_contrastive": "pairs with a 0/1 label (1 = similar)",
    "mnrl": "positive (anchor, positive) pairs, optionally with a hard negative each",
}

_COMMON_CONSTRAINTS = {
    "loss": [StrOptions(set(LOSSES))],
    "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
    "epochs": [Interval(numbers.Integral, 1, None, closed="left")],
    "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
    "warmup_ratio": [Interval(numbers.Real, 0, 1, closed="left")],
    "max_seq_length": [Interval(numbers.Integral, 1, None, closed="left"), None],
    "freeze_embeddings": ["boolean"],
    "matryoshka_dims": ["array-like", None],
    "random_state": ["random_state"],
    "device": "no_validation",  # resolve_device gives the clear message
    "show_progress_bar": ["boolean"],
}


def _is_sentence_transformer(obj) -> bool:
    return hasattr(obj, "encode") and hasattr(obj, "tokenize") and not isinstance(obj, str)


def _seed_from(random_state) -> int:
    """An int seed for torch/transformers; `None` draws a fresh one, like sklearn does."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state) % (2**32)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def _embedding_dim(model) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def _model_to_bytes(model) -> dict[str, bytes]:
    """Every file of a saved model, keyed by relative path (for pickling fine-tuned weights)."""
    with tempfile.TemporaryDirectory(prefix="embetter-pickle-") as tmp:
        model.save(tmp, create_model_card=False)
        root = Path(tmp)
        return {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }


def _model_from_bytes(files: dict[str, bytes], device: str):
    from sentence_transformers import SentenceTransformer

    from embetter._skops import check_model_files

    with tempfile.TemporaryDirectory(prefix="embetter-unpickle-") as tmp:
        for rel, data in check_model_files(files).items():
            target = Path(tmp, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return SentenceTransformer(tmp, device=device)


def _save_atomic(model, path) -> str:
    """Save a model directory so that `path` is either the old content or the complete new one."""
    path = Path(os.fspath(path)).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"path must be a directory (or not exist yet), got the file {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        model.save(tmp, create_model_card=False)
        if path.exists():
            # a directory cannot be renamed onto a non-empty one: move the old one aside first
            old = tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent)
            os.replace(path, Path(old, "model"))
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(path)


@contextlib.contextmanager
def _old_objects_frozen():
    """Keep the objects that exist now out of the garbage collector's sweeps for a while.

    The Trainer (through accelerate) runs a full `gc.collect()` when training ends, which walks
    every object of the process: about 0.4 s with torch and transformers loaded, a large share
    of a few-shot fit. Objects made before training are not garbage of the training, so they
    are frozen (`gc.freeze`) and the sweep only visits what training made. A caller's own
    freeze is left as it is.
    """
    import gc

    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _token_embeddings(model) -> list:
    """The token embedding matrices of a model's transformer(s) (input embeddings)."""
    found = []
    for module in model.modules():
        get = getattr(module, "get_input_embeddings", None)
        if callable(get) and hasattr(module, "config"):
            try:
                embedding = get()
            except (NotImplementedError, AttributeError):
                continue
            weight = getattr(embedding, "weight", None)
            if weight is not None and all(weight is not w for w in found):
                found.append(weight)
    return found


@contextlib.contextmanager
def _frozen(parameters):
    """Exclude `parameters` from training (the optimizer is built inside) and restore them."""
    changed = [p for p in parameters if p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


@contextlib.contextmanager
def _global_rng_kept():
    """The Trainer seeds python, numpy and torch globally; give the caller its state back."""
    import random

    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


_TOKEN_KEYS = {"input_ids", "attention_mask", "token_type_ids"}


def _same(a, b) -> bool:
    """Equal plain values (such as `modality="text"`); anything else counts as different."""
    plain = (str, int, float, bool, type(None))
    return a is b or (isinstance(a, plain) and isinstance(b, plain) and a == b)


def _unique_texts_loss(inner):
    """Wrap a pair loss so each distinct text in a batch is encoded once.

    Pairs built from labels reuse the same few texts over and over (16 texts make 64 pairs),
    so a batch of pairs holds many copies of one text. The wrapper concatenates the columns,
    runs the model once on the distinct rows and hands the per-column embeddings to the
    inner loss: the same loss and gradients (duplicates share a dropout draw) for a fraction
    of the compute. Inputs it does not recognise go to the inner loss unchanged.
    """
    import torch

    class UniqueTextsLoss(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.model = inner.model

        def forward(self, sentence_features, labels):
            columns = list(sentence_features)
            first = columns[0]
            tensors = sorted(k for k, v in first.items() if isinstance(v, torch.Tensor))
            others = {k: v for k, v in first.items() if k not in tensors}
            tokenizer = getattr(self.model, "tokenizer", None)
            if not (
                getattr(tokenizer, "padding_side", None) == "right"  # widened by padding right
                and {"input_ids", "attention_mask"} <= set(tensors) <= _TOKEN_KEYS
                and all(set(c) == set(first) for c in columns)
                and all(_same(c[k], v) for c in columns for k, v in others.items())
                and all(c[k].ndim == 2 for c in columns for k in tensors)
            ):
                return self.inner(columns, labels)
            width = max(c["input_ids"].shape[1] for c in columns)
            stacked = {
                k: torch.cat([torch.nn.functional.pad(c[k], (0, width - c[k].shape[1]))
                              for c in columns])
                for k in tensors
            }
            mask = stacked["attention_mask"]
            key = torch.cat([stacked["input_ids"] * mask, mask], dim=1)
            rows, inverse = torch.unique(key, dim=0, return_inverse=True)
            pick = torch.full((len(rows),), key.shape[0], dtype=torch.long, device=key.device)
            pick.scatter_reduce_(0, inverse, torch.arange(key.shape[0], device=key.device),
                                 reduce="amin")
            used = int(mask[pick].sum(dim=1).max())
            unique = {k: v[pick, :used] for k, v in stacked.items()} | others
            embedded = self.model(unique)["sentence_embedding"][inverse]
            return self.inner.compute_loss_from_embeddings(
                list(embedded.split(first["input_ids"].shape[0])), labels
            )

    return UniqueTextsLoss(inner)


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    value = spearmanr(a, b).statistic
    return float(value) if np.isfinite(value) else float("nan")


class _SbertBase(BaseEstimator):
    """Shared parts: parameter checks, the fitted model, encoding and pickling."""

    def _check_dims(self, model):
        if self.matryoshka_dims is None:
            return None
        full = _embedding_dim(model)
        dims = np.asarray(self.matryoshka_dims).ravel().tolist() if not isinstance(
            self.matryoshka_dims, (str, bytes)) else None
        if not dims or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and 1 <= d <= full
            for d in dims
        ):
            raise ValueError(
                "matryoshka_dims must be None or a non-empty list of ints between 1 and the "
                f"model's dimension {full}, got {self.matryoshka_dims!r}"
            )
        return sorted({int(d) for d in dims}, reverse=True)

    def _encode(self, texts) -> np.ndarray:
        model = self.model_
        if not texts:
            return np.zeros((0, _embedding_dim(model)), dtype=np.float32)
        emb = model.encode(
            texts,
            batch_size=int(self.batch_size),
            show_progress_bar=bool(self.show_progress_bar),
            convert_to_numpy=True,
        )
        return np.asarray(emb, dtype=np.float32)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.non_deterministic = self.random_state is None
        return tags


class SbertLearner(_SbertBase):
    """Fine-tune a sentence-transformers model on text pairs `(X1, X2, y)`.

    Trains with `SentenceTransformerTrainer`; checkpoints go to a temporary directory that is
    removed afterwards, and nothing is saved during training. The `loss` names follow
    sentence-transformers' data formats: `"cosine"` and `"cosent"` take a float score per pair
    (`"cosine"` regresses the cosine similarity onto a score in [-1, 1]), `"contrastive"` and
    `"online_contrastive"` take 0/1 labels, and `"mnrl"` (multiple negatives ranking) takes
    positive pairs only and uses the other pairs in a batch as negatives, optionally with one
    hard negative per pair (`fit(X1, X2, negatives=...)`, see `mine_hard_negatives`).

    A name or path in `sent_tfm` is loaded (offline, like `SentenceEncoder`) in `fit`, as a
    private copy, so every `fit` starts from the pretrained weights. A `SentenceTransformer`
    instance is trained in place: afterwards the caller's model holds the fine-tuned weights
    (and a second `fit` continues from them). A `SentenceEncoder` is unwrapped into the name
    or model it holds.

    Arguments:
        sent_tfm: a model name, a local path, a `SentenceTransformer` or a `SentenceEncoder`.
        loss: `"cosine"`, `"cosent"`, `"contrastive"`, `"online_contrastive"` or `"mnrl"`.
        batch_size: pairs per optimizer step (also texts per forward pass when encoding).
        epochs: passes over the pairs.
        learning_rate: peak learning rate of AdamW.
        warmup_ratio: fraction of the optimizer steps spent warming the learning rate up
            linearly; it then decays linearly to zero.
        matryoshka_dims: optional list of leading dimensions (e.g. `[384, 128, 64]`) that are
            each trained to work on their own (`MatryoshkaLoss`).
        max_seq_length: truncate texts to this many tokens while training (`None`: the
            model's own limit). Shorter is faster; encoding afterwards uses the model's limit.
        freeze_embeddings: keep the token embedding matrix as it is while training. It holds
            about half of a small model's weights (MiniLM: 11.7M of 22.7M) and few-shot data
            touch only a few of its rows, so freezing it saves optimizer time at no measured
            cost in accuracy (benchmarks/sbert.py); `False` (default) trains every weight.
        random_state: seed for the data order, dropout and any initialisation.
        device: `None` picks cuda, then mps, then cpu; or `"cpu"`, `"cuda"`, `"mps"`.
        show_progress_bar: show progress bars while training and encoding.

    After `fit`: `model_` (the fine-tuned `SentenceTransformer`), `history_` (one dict per
    epoch: `epoch`, `step`, `train_loss` and, with `eval_set`, `eval_spearman`) and
    `n_steps_` (optimizer steps taken).

    Usage:

    ```python
    from embetter.finetune import SbertLearner

    X1 = ["a happy dog", "a sad cat", "the stock market fell", "stocks dropped today"]
    X2 = ["a joyful puppy", "an unhappy kitten", "prices of shares went down", "a cute dog"]
    y = [1.0, 1.0, 1.0, 0.0]
    learner = SbertLearner("all-MiniLM-L6-v2", epochs=1, random_state=0).fit(X1, X2, y)
    sims = learner.predict(X1, X2)  # cosine similarity per pair
    assert learner.transform(["hello"]).shape == (1, 384) and sims.shape == (4,)
    ```
    """

    _parameter_constraints = {"sent_tfm": "no_validation", **_COMMON_CONSTRAINTS}

    def __init__(
        self,
        sent_tfm="all-MiniLM-L6-v2",
        loss="cosine",
        batch_size=16,
        epochs=1,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        matryoshka_dims=None,
        max_seq_length=None,
        freeze_embeddings=False,
        random_state=None,
        device=None,
        show_progress_bar=False,
    ):
        self.sent_tfm = sent_tfm
        self.loss = loss
        self.batch_size = batch_size
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.warmup_ratio = warmup_ratio
        self.matryoshka_dims = matryoshka_dims
        self.max_seq_length = max_seq_length
        self.freeze_embeddings = freeze_embeddings
        self.random_state = random_state
        self.device = device
        self.show_progress_bar = show_progress_bar

    # -- the model ---------------------------------------------------------------------------
    def _load_model(self):
        """The model to train: a private copy for a name/path, the caller's own instance else."""
        from embetter._torch import device_name
        from embetter.text._models import load_sentence_transformer
        from embetter.text._sbert import SentenceEncoder

        source = self.sent_tfm
        if isinstance(source, SentenceEncoder):
            source = source.name
        if _is_sentence_transformer(source):
            if self.device is not None:
                source.to(device_name(self.device))
            return source
        if isinstance(source, (str, os.PathLike)):
            # never the shared instance of `shared_sentence_transformer`: we change the weights
            return load_sentence_transformer(source, device_name(self.device))
        raise TypeError(
            "sent_tfm must be a model name, a local path, a SentenceTransformer or a "
            f"SentenceEncoder, got {type(source).__name__}"
        )

    # -- data --------------------------------------------------------------------------------
    def _check_data(self, X1, X2, y, negatives):
        loss = self.loss
        X1, X2, y = check_pairs(X1, X2, y, texts=True)
        if negatives is not None:
            if loss != "mnrl":
                raise ValueError(
                    f"negatives are only used by loss='mnrl' (anchor, positive, negative "
                    f"triplets), got loss={loss!r}; drop negatives or use loss='mnrl'"
                )
            negatives = as_texts(negatives, "negatives")
            if len(negatives) != len(X1):
                raise ValueError(
                    f"negatives must hold one text per pair ({len(X1)}), got {len(negatives)}"
                )
        if loss == "mnrl":
            if y is not None and not np.all(y == 1):
                raise ValueError(
                    "loss='mnrl' trains on positive pairs only (y all 1, or y=None); "
                    f"y holds {int(np.sum(y != 1))} other values. Keep the pairs with y == 1, "
                    "or use loss='contrastive' / 'cosine' for pairs labelled 0/1"
                )
            return X1, X2, None, negatives
        if y is None:
            raise ValueError(f"y is required for loss={loss!r}: {LOSSES[loss]}")
        if loss in ("contrastive", "online_contrastive") and not np.isin(y, (0, 1)).all():
            raise ValueError(
                f"loss={loss!r} needs 0/1 labels, got values such as "
                f"{np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()}; use loss='cosine' or "
                "'cosent' for graded similarity scores"
            )
        if loss == "cosine" and (y.min() < -1 or y.max() > 1):
            raise ValueError(
                f"loss='cosine' needs scores in [-1, 1] (it regresses the cosine similarity), "
                f"got values from {y.min():g} to {y.max():g}; rescale them (e.g. y / 5 for STS "
                "scores) or use loss='cosent', which only uses their order"
            )
        return X1, X2, y, None

    def _dataset(self, X1, X2, y, negatives):
        from datasets import Dataset

        if self.loss == "mnrl":
            columns = {"anchor": X1, "positive": X2}
            if negatives is not None:
                columns["negative"] = negatives
        elif self.loss in ("contrastive", "online_contrastive"):
            columns = {"sentence1": X1, "sentence2": X2, "label": y.astype(np.int64).tolist()}
        else:
            columns = {"sentence1": X1, "sentence2": X2, "score": y.astype(np.float32).tolist()}
        return Dataset.from_dict(columns)

    def _make_loss(self, model, dims):
        try:  # sentence-transformers >= 6 moved the losses; older versions keep the old path
            from sentence_transformers.sentence_transformer import losses
        except ImportError:  # pragma: no cover
            from sentence_transformers import losses
        make = {
            "cosine": losses.CosineSimilarityLoss,
            "cosent": losses.CoSENTLoss,
            "contrastive": losses.ContrastiveLoss,
            "online_contrastive": losses.OnlineContrastiveLoss,
            "mnrl": losses.MultipleNegativesRankingLoss,
        }[self.loss]
        loss = make(model)
        if self.loss != "mnrl" and hasattr(loss, "compute_loss_from_embeddings"):
            loss = _unique_texts_loss(loss)  # mnrl batches hold no duplicate texts
        if dims:
            loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=dims)
        return loss

    # -- fit ---------------------------------------------------------------------------------
    def fit(self, X1, X2, y=None, *, negatives=None, eval_set=None):
        """Fine-tune on pairs: `X1[i]` and `X2[i]` with target `y[i]` (see `loss`).

        Arguments:
            X1, X2: collections of texts of the same length.
            y: a score or 0/1 label per pair; optional for `loss="mnrl"` (all positive).
            negatives: with `loss="mnrl"`, one hard-negative text per pair.
            eval_set: optional `(X1, X2, y)` pairs with a similarity score; their Spearman
                correlation with the model's cosine similarity is recorded after every epoch
                in `history_`.
        """
        self._validate_params()
        X1, X2, y, negatives = self._check_data(X1, X2, y, negatives)
        if eval_set is not None:
            if not isinstance(eval_set, (tuple, list)) or len(eval_set) != 3:
                raise ValueError(
                    "eval_set must be a tuple (X1, X2, y) of texts and scores, got "
                    f"{type(eval_set).__name__}"
                    + (f" of length {len(eval_set)}" if isinstance(eval_set, (tuple, list)) else "")
                )
            eval_set = check_pairs(*eval_set, texts=True)
        model = self._load_model()
        dims = self._check_dims(model)
        self.model_ = model
        self.history_ = []
        limit = model.max_seq_length
        if self.max_seq_length is not None and (limit is None or self.max_seq_length < limit):
            model.max_seq_length = int(self.max_seq_length)
        try:
            self.n_steps_ = self._train(model, self._dataset(X1, X2, y, negatives), dims,
                                        eval_set)
        finally:
            model.max_seq_length = limit
        self.n_features_out_ = _embedding_dim(model)
        return self

    def _train(self, model, dataset, dims, eval_set) -> int:
        from sentence_transformers import (
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
        )
        from transformers import PrinterCallback, TrainerCallback

        from embetter._torch import resolve_device

        learner = self

        class _Trainer(SentenceTransformerTrainer):
            # The model card callback stores datasets and losses on the model (and tokenizes
            # samples for statistics); we save no card, so skip that work and those references.
            def add_model_card_callback(self, default_args_dict):
                pass

        class _History(TrainerCallback):
            def on_epoch_end(self, args, state, control, **kwargs):
                entry = {"epoch": int(round(state.epoch or 0)), "step": int(state.global_step)}
                if eval_set is not None:
                    a, b, scores = eval_set
                    was_training = model.training
                    entry["eval_spearman"] = _spearman(learner._cosine(a, b), scores)
                    model.train(was_training)
                learner.history_.append(entry)

        seed = _seed_from(self.random_state)
        steps_per_epoch = math.ceil(len(dataset) / int(self.batch_size))
        warmup = math.ceil(float(self.warmup_ratio) * steps_per_epoch * int(self.epochs))
        history = _History()
        device = resolve_device(self.device)
        with (
            _global_rng_kept(),
            _old_objects_frozen(),
            tempfile.TemporaryDirectory(prefix="embetter-sbert-") as tmp,
        ):
            args = SentenceTransformerTrainingArguments(
                output_dir=tmp,
                num_train_epochs=int(self.epochs),
                per_device_train_batch_size=int(self.batch_size),
                learning_rate=float(self.learning_rate),
                warmup_steps=warmup,
                lr_scheduler_type="linear",
                seed=seed,
                data_seed=seed,
                save_strategy="no",
                eval_strategy="no",
                logging_strategy="epoch",
                report_to="none",
                disable_tqdm=not self.show_progress_bar,
                use_cpu=device.type == "cpu",
                dataloader_num_workers=0,
                # in-batch negatives: a duplicate text in a batch would be a false negative
                batch_sampler="no_duplicates" if self.loss == "mnrl" else "batch_sampler",
            )
            trainer = _Trainer(
                model=model,
                args=args,
                train_dataset=dataset,
                loss=self._make_loss(model, dims),
                callbacks=[history],
            )
            # without progress bars, transformers prints every log dict to stdout instead
            trainer.remove_callback(PrinterCallback)
            with _frozen(_token_embeddings(model) if self.freeze_embeddings else []):
                trainer.train()
            steps = int(trainer.state.global_step)
            # the epoch loss is logged after on_epoch_end: attach the last one per epoch
            losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
            for entry, loss in zip(self.history_, losses):
                entry["train_loss"] = loss
            del trainer
        model.eval()
        return steps

    # -- use ---------------------------------------------------------------------------------
    def transform(self, X):
        """Encode texts with the fine-tuned model: float32 array of shape `(n, dim)`."""
        check_is_fitted(self, "model_")
        return self._encode(as_texts(X))

    def _cosine(self, X1, X2) -> np.ndarray:
        a, b = self._encode(X1), self._encode(X2)
        a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return np.einsum("ij,ij->i", a, b).astype(np.float32)

    def predict(self, X1, X2):
        """Cosine similarity of each pair `(X1[i], X2[i])`, as a float32 array."""
        check_is_fitted(self, "model_")
        X1, X2, _ = check_pairs(X1, X2, texts=True)
        return self._cosine(X1, X2)

    def to_disk(self, path):
        """Save the fine-tuned model; `SentenceEncoder(path)` loads it back.

        The model is written to a temporary directory next to `path` and then renamed into
        place, so `path` never holds a half-written model.
        """
        check_is_fitted(self, "model_")
        return _save_atomic(self.model_, path)

    # -- pickling ----------------------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        model = state.pop("model_", None)
        if model is not None:
            if model is self.sent_tfm or (
                hasattr(self.sent_tfm, "name") and model is self.sent_tfm.name
            ):
                # the model is the caller's instance, pickled with the parameter itself
                state["_model_is_param"] = True
            else:
                state["_model_files"] = _model_to_bytes(model)
        return state

    def __setstate__(self, state):
        files = state.pop("_model_files", None)
        is_param = state.pop("_model_is_param", False)
        self.__dict__.update(state)
        if is_param:
            src = self.sent_tfm
            self.model_ = getattr(src, "name", src) if not _is_sentence_transformer(src) else src
        elif files is not None:
            from embetter._torch import device_name

            self.model_ = _model_from_bytes(files, device_name(self.device))


class SbertTuner(TransformerMixin, _SbertBase):
    """Fine-tune a sentence model on labelled texts, as a pipeline step (the SetFit idea).

    `fit(texts, y)` turns the labels into text pairs with `generate_pairs` (each text is
    paired with `n_pos` texts of its own class and `n_neg` of other classes: a bounded
    `len(texts) * (n_pos + n_neg)` pairs, never all of them), fine-tunes the model on those
    pairs with an `SbertLearner`, and `transform` then returns the fine-tuned embeddings, ready
    for any classifier. A 2-D 0/1 `y` is read as multi-label. With `loss="mnrl"` only the
    positive pairs are used (other texts in the batch act as negatives). The other arguments
    (`loss`, `batch_size`, `epochs`, `learning_rate`, `warmup_ratio`, `matryoshka_dims`,
    `device`, `show_progress_bar`) mean what they mean in `SbertLearner`.

    The defaults are chosen for the few-shot case (a handful of labelled texts per class):
    balanced pairs (2 positive, 2 negative per text), one epoch at a high learning rate, and
    training on the first 32 tokens of each text (encoding afterwards uses the whole text),
    with the token embedding matrix left as it is.
    With 8 texts per class of 6 classes that is 12 optimizer steps; see `benchmarks/sbert.py`.
    With many labelled texts, lower `learning_rate` (e.g. 2e-5) and perhaps `n_pos`/`n_neg`.

    Arguments:
        sent_tfm: a model name, a local path, a `SentenceTransformer` (trained in place) or a
            `SentenceEncoder`.
        n_neg: pairs with a text of another class, per text.
        n_pos: pairs with another text of the same class, per text.
        max_seq_length: truncate texts to this many tokens while training (faster); `None`
            keeps the model's limit.
        freeze_embeddings: keep the token embedding matrix fixed (default here: faster, as
            accurate on few-shot data); see `SbertLearner`.
        random_state: seed for the pairs, the data order and dropout.

    After `fit`: `learner_` (the fitted `SbertLearner`), `model_` (its model), `n_pairs_`.

    Usage:

    ```python
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from embetter.finetune import SbertTuner

    texts = ["great film", "loved it", "what a delight", "awful film", "hated it", "a bore"]
    y = ["pos", "pos", "pos", "neg", "neg", "neg"]
    pipe = make_pipeline(SbertTuner(random_state=0), LogisticRegression())
    pipe.fit(texts, y)
    assert pipe.predict(["a lovely film"]).shape == (1,)
    ```
    """

    _parameter_constraints = {
        "sent_tfm": "no_validation",
        "n_neg": [Interval(numbers.Integral, 0, None, closed="left")],
        "n_pos": [Interval(numbers.Integral, 0, None, closed="left")],
        **_COMMON_CONSTRAINTS,
    }

    def __init__(
        self,
        sent_tfm="all-MiniLM-L6-v2",
        n_neg=2,
        n_pos=2,
        loss="cosine",
        batch_size=16,
        epochs=1,
        learning_rate=2e-4,
        warmup_ratio=0.1,
        matryoshka_dims=None,
        max_seq_length=32,
        freeze_embeddings=True,
        random_state=None,
        device=None,
        show_progress_bar=False,
    ):
        self.sent_tfm = sent_tfm
        self.n_neg = n_neg
        self.n_pos = n_pos
        self.loss = loss
        self.batch_size = batch_size
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.warmup_ratio = warmup_ratio
        self.matryoshka_dims = matryoshka_dims
        self.max_seq_length = max_seq_length
        self.freeze_embeddings = freeze_embeddings
        self.random_state = random_state
        self.device = device
        self.show_progress_bar = show_progress_bar

    def fit(self, X, y):
        """Build labelled pairs from `(X, y)` and fine-tune the model on them."""
        from embetter.finetune._pairs import generate_pairs

        self._validate_params()
        texts = as_texts(X)
        if y is None:
            raise ValueError("SbertTuner needs labels: y is required, got None")
        labels = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y)
        if not (labels.ndim == 2 and labels.shape[1] > 1):
            labels = as_labels(labels, "y", n_samples=len(texts))
        elif labels.shape[0] != len(texts):
            raise ValueError(f"y has {labels.shape[0]} rows but X has {len(texts)} texts")
        rng = check_random_state(self.random_state)
        pair_seed, train_seed = (int(s) for s in rng.randint(0, 2**31 - 1, size=2))
        mnrl = self.loss == "mnrl"
        idx1, idx2, sim = generate_pairs(
            labels, n_neg=0 if mnrl else self.n_neg, n_pos=self.n_pos, random_state=pair_seed
        )
        if mnrl and sim.size == 0:
            raise ValueError("loss='mnrl' needs positive pairs, but no class has two texts")
        self.learner_ = SbertLearner(
            sent_tfm=self.sent_tfm,
            loss=self.loss,
            batch_size=self.batch_size,
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            warmup_ratio=self.warmup_ratio,
            matryoshka_dims=self.matryoshka_dims,
            max_seq_length=self.max_seq_length,
            freeze_embeddings=self.freeze_embeddings,
            random_state=train_seed,
            device=self.device,
            show_progress_bar=self.show_progress_bar,
        )
        self.learner_.fit([texts[i] for i in idx1], [texts[j] for j in idx2],
                          None if mnrl else sim)
        self.n_pairs_ = int(sim.size)
        self.n_features_out_ = self.learner_.n_features_out_
        return self

    @property
    def model_(self):
        """The fine-tuned `SentenceTransformer` (after `fit`)."""
        check_is_fitted(self, "learner_")
        return self.learner_.model_

    def transform(self, X):
        """Encode texts with the fine-tuned model: float32 array of shape `(n, dim)`."""
        check_is_fitted(self, "learner_")
        return self.learner_.transform(X)

    def to_disk(self, path):
        """Save the fine-tuned model (atomically); `SentenceEncoder(path)` loads it back."""
        check_is_fitted(self, "learner_")
        return self.learner_.to_disk(path)

    def get_feature_names_out(self, input_features=None):
        """Output column names: `sberttuner0`, `sberttuner1`, ..."""
        check_is_fitted(self, "learner_")
        return np.asarray([f"sberttuner{i}" for i in range(self.n_features_out_)], dtype=object)
