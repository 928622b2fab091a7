"""What SbertLearner and SbertTuner share: parameters, the training record, encoding, pickling."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from embetter._estimator_checks import Interval, StrOptions, refuse_bool_numbers
from embetter._st import embedding_dim
from embetter._validation import as_texts
from embetter.base import text_input_tags
from embetter.finetune._sbert_model import model_from_bytes, model_to_bytes

#: Loss names (sentence-transformers' words, and our "supcon" and "prototype"); their data
#: formats are in `_losses.LOSSES`.
PAIR_LOSSES = ("cosine", "cosent", "contrastive", "online_contrastive", "mnrl", "supcon",
               "prototype")

#: sentence-transformers' loss classes, by lower-case name, and what they are called here
_ST_LOSSES = {
    "cosinesimilarityloss": "loss='cosine'",
    "cosentloss": "loss='cosent'",
    "contrastiveloss": "loss='contrastive'",
    "onlinecontrastiveloss": "loss='online_contrastive'",
    "multiplenegativesrankingloss": "loss='mnrl'",
    "cachedmultiplenegativesrankingloss": "loss='mnrl'",
    "multiplenegativessymmetricrankingloss": "loss='mnrl'",
    "tripletloss": "loss='mnrl' with fit(anchors, positives, negatives=...) (a softmax over "
                   "the batch's candidates, your negative among them, not a distance margin)",
    "megabatchmarginloss": "loss='mnrl' (the other texts of the batch are the negatives)",
    "angleloss": "loss='cosent' (AnglE's ranking of pair scores, on cosines)",
    "softmaxloss": "loss='contrastive' with y 1 (similar) or 0 for pairs; for texts with "
                   "class labels, SbertTuner().fit(texts, labels)",
    "matryoshkaloss": "the inner loss's name as loss=, and matryoshka_dims=[...]",
}
# the batch triplet losses train on texts with class labels: the tuner's job here
for _name in ("batchhard", "batchall", "batchsemihard", "batchhardsoftmargin"):
    _ST_LOSSES[f"{_name}tripletloss"] = ("SbertTuner(loss='supcon').fit(texts, labels): "
                                         "texts with class labels, every pair in a batch")
#: other libraries' short names
_ST_LOSSES.update({
    "triplet": _ST_LOSSES["tripletloss"], "softmax": _ST_LOSSES["softmaxloss"],
    "infonce": "loss='mnrl' (in-batch negatives: ContrastiveLearner's 'infonce')",
})


def check_loss_name(loss) -> None:
    """Point a sentence-transformers loss (its class name, or an instance of it) to the name
    it has here; anything else is left to the parameter check."""
    if isinstance(loss, str):
        ours = _ST_LOSSES.get(loss.lower())
        if ours is not None:
            what = ("sentence-transformers' class name" if loss.lower().endswith("loss")
                    else "not a name here")
            raise ValueError(f"loss={loss!r} is {what}; here pass {ours} (names: "
                             f"{', '.join(PAIR_LOSSES)})")
        return
    name = type(loss).__name__
    if name.endswith("Loss") or type(loss).__module__.startswith("sentence_transformers"):
        ours = _ST_LOSSES.get(name.lower(), "one of the names")
        raise TypeError(f"loss takes a loss's name, not a {name} object: pass {ours} "
                        f"(names: {', '.join(PAIR_LOSSES)}); the learner builds it on its "
                        "own copy of the model")


COMMON_CONSTRAINTS = {
    "loss": [StrOptions(set(PAIR_LOSSES))],
    "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
    "epochs": [Interval(numbers.Integral, 1, None, closed="left")],
    "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
    "warmup_ratio": [Interval(numbers.Real, 0, 1, closed="left")],
    # (2 at least: a tokenizer cannot cut to 1 token beside its special tokens, and did not cut)
    "max_seq_length": [Interval(numbers.Integral, 2, None, closed="left"), StrOptions({"auto"}),
                       None],
    "freeze_embeddings": ["boolean"],
    "matryoshka_dims": ["array-like", None],
    "random_state": ["random_state"],
    "device": "no_validation",  # resolve_device gives the clear message
    "show_progress_bar": ["boolean"],
}


class SbertBase(BaseEstimator):
    """Shared parts: matryoshka checks, the training record, encoding, saving and pickling.

    The training record follows scikit-learn's `MLPClassifier`: `n_iter_` (epochs trained),
    `loss_curve_` (mean training loss per epoch) and `history_` (one dict per epoch: `epoch`,
    `step`, `train_loss`, and validation scores where there is an eval set). `fit` starts it
    afresh, `partial_fit` extends it.
    """

    def _validate_params(self):
        check_loss_name(self.loss)  # sentence-transformers' names get a pointer to ours
        refuse_bool_numbers(self)  # first: an Interval takes True as 1 (or names the range)
        super()._validate_params()

    def _check_dims(self, model):
        if self.matryoshka_dims is None:
            return None
        full = embedding_dim(model)
        raw = self.matryoshka_dims
        # the entries as given: np.asarray would turn [True, 8] into [1, 8]
        dims = (raw.ravel().tolist() if isinstance(raw, np.ndarray) else
                None if isinstance(raw, (str, bytes)) else list(raw))
        if not dims or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and 1 <= d <= full
            for d in dims
        ):
            raise ValueError(
                "matryoshka_dims must be None or a non-empty list of ints between 1 and the "
                f"model's dimension {full}, got {self.matryoshka_dims!r}"
            )
        return sorted({int(d) for d in dims}, reverse=True)

    def _start_record(self):
        self.history_, self.loss_curve_, self.n_iter_, self.n_steps_ = [], [], 0, 0

    def _record(self, steps: int, epochs: list):
        """Append one training call's epochs, numbered and stepped across calls."""
        for entry in epochs:
            entry["epoch"] += self.n_iter_
            entry["step"] += self.n_steps_
            self.history_.append(entry)
            if "train_loss" in entry:
                self.loss_curve_.append(entry["train_loss"])
        self.n_iter_ += len(epochs)
        self.n_steps_ += steps

    def _encode(self, texts) -> np.ndarray:
        model = self.model_
        if not texts:
            return np.zeros((0, embedding_dim(model)), dtype=np.float32)
        emb = model.encode(
            texts,
            batch_size=int(self.batch_size),
            show_progress_bar=bool(self.show_progress_bar),
            convert_to_numpy=True,
        )
        return np.asarray(emb, dtype=np.float32)

    def transform(self, X):
        """Encode texts with the fine-tuned model: float32 array of shape `(n, dim)`."""
        check_is_fitted(self, "model_")
        return self._encode(as_texts(X))

    def to_disk(self, path):
        """Save the fine-tuned model; `SentenceEncoder(path)` loads it back.

        The model is written to a temporary directory next to `path` and then renamed into
        place, so `path` never holds a half-written model. It replaces the whole folder: an
        existing `path` must be empty or hold a saved model, anything else is refused.
        """
        from embetter.finetune._sbert_model import save_atomic

        check_is_fitted(self, "model_")
        return save_atomic(self.model_, path)

    # the fitted model is always private (never the caller's): pickle its saved files
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_optimizer_state", None)  # twice the trained weights' size: not kept
        model = state.pop("model_", None)
        if model is not None:
            state["_model_files"] = model_to_bytes(model)
        return state

    def __setstate__(self, state):
        files = state.pop("_model_files", None)
        self.__dict__.update(state)
        if files is not None:
            from embetter._torch.device import restored_device

            # trained on a GPU, loaded where there is none: on the CPU
            self.model_ = model_from_bytes(files, str(restored_device(self.device)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        text_input_tags(tags)
        tags.non_deterministic = self.random_state is None
        return tags
