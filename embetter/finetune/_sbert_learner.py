"""SbertLearner: fine-tune a sentence-transformers model on text pairs `(X1, X2, y)`."""

from __future__ import annotations

import numpy as np
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted

from embetter._estimator_checks import all_or_nothing
from embetter._removed import RemovedParams
from embetter._validation import as_positions, as_texts, check_pairs
from embetter.base import FitsPairs
from embetter.finetune._sbert_base import COMMON_CONSTRAINTS, SbertBase
from embetter.finetune._sbert_inputs import (
    check_class_texts,
    check_eval_set,
    check_first_classes,
    check_negatives,
    check_targets,
    distinct,
)
from embetter.finetune._trainer import Rows

#: `max_seq_length="auto"`: train on this quantile of the texts' token counts (rounded up to a
#: multiple of AUTO_LENGTH_STEP, at least AUTO_MIN_LENGTH), so that most texts are trained
#: whole and short ones stay cheap. Chosen on rows of the training splits (never the test
#: split; SbertTuner, 8 texts per class, seeds 0-2): where the rule lengthens training
#: beyond 32 tokens, a logistic regression's gain over the frozen model rose on ag_news
#: (64 tokens: +4.5 -> +5.9 points), mr (48: -1.7 -> -0.3) and sms_spam, and held on subj
#: (48: +1.9 -> +1.7); sets of short texts (sst2, banking77, clinc150, trec_fine, emotion)
#: keep 32.
AUTO_LENGTH_QUANTILE = 75
AUTO_LENGTH_STEP = 16
AUTO_MIN_LENGTH = 32


def auto_seq_length(counts) -> int | None:
    """`max_seq_length="auto"` resolved from the training texts' token counts (`None`: no
    tokenizer to count with, so nothing is truncated)."""
    if not counts:
        return None
    q = float(np.percentile(np.asarray(counts), AUTO_LENGTH_QUANTILE))
    return max(AUTO_MIN_LENGTH, int(np.ceil(q / AUTO_LENGTH_STEP)) * AUTO_LENGTH_STEP)


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    value = spearmanr(a, b).statistic
    return float(value) if np.isfinite(value) else float("nan")


class SbertLearner(RemovedParams, FitsPairs, TransformerMixin, SbertBase):
    """Fine-tune a sentence-transformers model on text pairs `(X1, X2, y)`.

    Trains with AdamW on the distinct texts of the pairs: each batch encodes its distinct
    texts once (`_trainer.train`), and nothing is saved during training. The `loss` names follow
    sentence-transformers' data formats: `"cosine"` and `"cosent"` take a float score per pair
    (`"cosine"` regresses the cosine similarity onto a score in [-1, 1]), `"contrastive"` and
    `"online_contrastive"` take 0/1 labels, and `"mnrl"` (multiple negatives ranking) takes
    positive pairs only and uses the other pairs in a batch as negatives, optionally with one
    hard negative per pair (`fit(X1, X2, negatives=...)`, see `mine_hard_negatives`).
    `"supcon"` (supervised contrastive) takes positive pairs with the class of each pair as
    `y` (an int, or a 0/1 row for multi-label data): every text of a batch with the same class
    is a positive and every other one a negative, whatever the number of classes; with
    `class_texts` (a text per class code, such as its name) every class's text joins every
    batch as a text of that class. `"prototype"` takes the same pairs with an int class each
    and trains a cosine softmax classifier with the body: each text against the mean embedding
    of every class (computed on the model before each call trains, then fixed), so every step
    sees every class (`PrototypeLoss`).

    `partial_fit_indexed(texts, idx1, idx2, y)` trains on the pairs `(texts[idx1[k]],
    texts[idx2[k]])` of a list of distinct texts: how `SbertTuner` hands over its pairs, and
    the form `fit` turns its text pairs into (nothing is written out per pair).

    The caller's model is never changed: a `SentenceTransformer` in `sent_tfm` is deep-copied
    in `fit` (its weights and device stay as they were), a name or path is loaded afresh, and
    a `SentenceEncoder` is unwrapped into the name or model it holds. So every `fit` starts
    from the weights it was given; `partial_fit` keeps training the fitted copy. A static
    model (sentence-transformers' `StaticEmbedding`) trains the same way, in seconds.

    Arguments:
        sent_tfm: a model name, a local path, a `SentenceTransformer` or a `SentenceEncoder`
            (its model; one with a `prompt`, a truncation or `normalize_embeddings=True` is
            refused, as those would be lost).
        loss: `"cosine"`, `"cosent"`, `"contrastive"`, `"online_contrastive"`, `"mnrl"`,
            `"supcon"` or `"prototype"`.
        batch_size: pairs per optimizer step (also texts per forward pass when encoding).
        epochs: passes over the pairs (per `partial_fit` call: over that call's pairs).
        learning_rate: peak learning rate of AdamW.
        warmup_ratio: fraction of the optimizer steps spent warming the learning rate up
            linearly (none for a fit of a single step); it then decays linearly to zero.
        matryoshka_dims: optional list of leading dimensions (e.g. `[384, 128, 64]`) that are
            each trained to work on their own (`MatryoshkaLoss`).
        max_seq_length: truncate texts to this many tokens while training (at least 2;
            `None`: the model's own limit). Shorter is faster; encoding afterwards uses the
            model's limit.
            `"auto"`: the 75th percentile of the first call's token counts, rounded up to a
            multiple of 16, at least 32 (most texts whole, short texts cheap).
        freeze_embeddings: keep the token embedding matrix of a transformer as it is while
            training. It holds about half of a small model's weights (MiniLM: 11.7M of 22.7M)
            and few-shot data touch only a few of its rows, so freezing it saves optimizer
            time at no measured cost in accuracy (benchmarks/sbert.py); `False` (default)
            trains every weight. A static model's embeddings are always trained.
        random_state: seed for the data order, dropout and any initialisation.
        device: `None` picks cuda, then mps, then cpu; or `"cpu"`, `"cuda"`, `"mps"`.
        show_progress_bar: show progress bars while training and encoding.

    After `fit`: `model_` (the fine-tuned `SentenceTransformer`), `n_iter_` (epochs trained),
    `loss_curve_` (mean training loss per epoch), `history_` (one dict per epoch: `epoch`,
    `step`, `train_loss` and, with `eval_set`, `eval_spearman`), `n_steps_` (optimizer
    steps taken) and `max_seq_length_` (the token limit trained with, `"auto"` resolved).

    Usage:

    ```python
    from embetter.finetune import SbertLearner

    X1 = ["a happy dog", "a sad cat", "the stock market fell", "stocks dropped today"]
    X2 = ["a joyful puppy", "an unhappy kitten", "prices of shares went down", "a cute dog"]
    y = [1.0, 1.0, 1.0, 0.0]
    learner = SbertLearner("all-MiniLM-L6-v2", epochs=1, random_state=0).fit(X1, X2, y)
    sims = learner.predict(X1, X2)  # cosine similarity per pair
    assert learner.transform(["hello"]).shape == (1, 384) and sims.shape == (4,)
    assert learner.n_iter_ == 1 and len(learner.loss_curve_) == 1
    ```
    """

    _parameter_constraints = {"sent_tfm": "no_validation", **COMMON_CONSTRAINTS}

    _removed_params = {
        "warmup_steps": "pass warmup_ratio, the share of the training steps spent warming "
        "up the learning rate (default 0.1)",
    }

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

    # -- fit ---------------------------------------------------------------------------------
    @all_or_nothing
    def fit(self, X1, X2, y=None, *, negatives=None, eval_set=None, class_texts=None):
        """Fine-tune a fresh copy of `sent_tfm` on pairs: `X1[i]`, `X2[i]`, target `y[i]`.

        Arguments:
            X1, X2: collections of texts of the same length.
            y: a score or 0/1 label per pair; optional for `loss="mnrl"` (all positive).
            negatives: with `loss="mnrl"`, one hard-negative text per pair.
            eval_set: optional `(X1, X2, y)` pairs with a similarity score; their Spearman
                correlation with the model's cosine similarity is recorded after every epoch
                in `history_`.
            class_texts: with `loss="supcon"`, a text for every class code of `y` (list
                index = code; for 0/1 rows, one per column), such as the class names: each
                batch also holds every class's text, as a text of its class.
        """
        for attr in ("model_", "n_features_out_", "max_seq_length_"):
            self.__dict__.pop(attr, None)
        return self.partial_fit(X1, X2, y, negatives=negatives, eval_set=eval_set,
                                class_texts=class_texts)

    @all_or_nothing
    def partial_fit(self, X1, X2, y=None, *, negatives=None, eval_set=None, class_texts=None):
        """Keep fine-tuning the fitted model on more pairs (the first call starts a copy).

        Each call trains `epochs` passes over its own pairs, its learning rate decaying from
        `learning_rate` to 0, so the training follows the pairs it is given; the optimizer
        carries on from the previous call (AdamW's moments; the warm-up is the first call's
        only). A pickled or saved learner keeps the weights but not the optimizer state, so
        after loading, `partial_fit` starts it afresh. Arguments as in `fit`.
        """
        self._validate_params()
        X1, X2, _ = check_pairs(X1, X2, texts=True)
        negatives = check_negatives(negatives, len(X1), self.loss)
        y = check_targets(y, len(X1), self.loss)
        if "model_" not in self.__dict__:
            check_first_classes(y, self.loss, class_texts)
        given = [column for column in (X1, X2, negatives) if column is not None]
        texts, where = distinct([t for column in given for t in column])
        columns = np.split(where, np.cumsum([len(column) for column in given])[:-1])
        return self._fit_rows(Rows(texts, columns, y), class_texts, eval_set)

    @all_or_nothing
    def partial_fit_indexed(self, texts, idx1, idx2, y=None, class_texts=None):
        """`partial_fit` on the pairs `(texts[idx1[k]], texts[idx2[k]])` with target `y[k]`.

        The pairs index into `texts` (typically each distinct text once), so a caller with many
        pairs over few texts (a tuner) hands them over without writing them out.

        Arguments:
            texts: the texts the pairs are drawn from.
            idx1, idx2: int positions into `texts`, one of each per pair.
            y: the pairs' targets, as `partial_fit` takes them for this `loss`.
            class_texts: as in `fit` (`loss="supcon"` only).
        """
        self._validate_params()
        texts = as_texts(texts)
        idx1, idx2 = (as_positions(i, len(texts), name, into="texts", unique=False)
                      for i, name in ((idx1, "idx1"), (idx2, "idx2")))
        if idx1.shape != idx2.shape:
            raise ValueError(f"idx1 and idx2 must have the same length, got {idx1.size} and "
                             f"{idx2.size}")
        if idx1.size == 0:
            raise ValueError("idx1 and idx2 hold 0 pairs; at least 1 is required")
        y = check_targets(y, idx1.size, self.loss)
        texts, where = distinct(texts)
        return self._fit_rows(Rows(texts, [where[idx1], where[idx2]], y), class_texts, None)

    def _fit_rows(self, rows, class_texts, eval_set):
        """Train on `rows` (positions into distinct texts): the one way into the training loop."""
        from embetter._torch.device import grad_enabled
        from embetter.finetune._losses import learner_loss

        class_texts = check_class_texts(class_texts, rows.targets, self.loss)
        eval_set = check_eval_set(eval_set)
        # (hard negatives, or class texts in every batch, give a batch of one pair contrast)
        alone = (self.loss == "mnrl" and len(rows.columns) < 3
                 or self.loss == "supcon" and not class_texts)
        if alone and int(self.batch_size) < 2:
            raise ValueError(
                f"loss={self.loss!r} contrasts each pair with the other texts of its batch: "
                f"batch_size must be at least 2, got {self.batch_size} (or give "
                f"{'negatives=' if self.loss == 'mnrl' else 'class_texts='})")
        # autograd on for the private copy and its training, even under the caller's
        # torch.inference_mode() (an inference tensor can never be trained)
        with grad_enabled():
            fresh = "model_" not in self.__dict__  # (a failed call drops a fresh copy)
            model, dims = self._model_to_train()
            self._train(rows, learner_loss(self.loss, model, dims, class_texts), eval_set,
                        fresh)
        return self

    def _model_to_train(self):
        """The fitted model to continue, or a private copy of `sent_tfm` on the first call."""
        from embetter.finetune._sbert_model import private_model

        if hasattr(self, "model_"):
            return self.model_, self._check_dims(self.model_)
        self.__dict__.pop("_optimizer_state", None)
        model = private_model(self.sent_tfm, self.device)
        dims = self._check_dims(model)  # before anything is recorded
        self.model_ = model
        self._start_record()
        return model, dims

    def _frozen(self, model) -> list:
        """The parameters of `model` that training leaves as they are."""
        from embetter._st import token_embeddings

        return token_embeddings(model) if self.freeze_embeddings else []

    def _trained_parameters(self) -> dict:
        """The parameters training changes, by name; none before the first call has made the
        model."""
        model = self.__dict__.get("model_")
        if model is None:
            return {}
        fixed = self._frozen(model)
        return {name: p for name, p in model.named_parameters()
                if all(p is not f for f in fixed)}

    def _train(self, rows, loss, eval_set, fresh=False):
        from embetter._st import embedding_dim
        from embetter._torch import seed_from
        from embetter.finetune._trainer import Schedule, train

        model = self.model_

        def scores(_model):
            if eval_set is None:
                return {}
            a, b, target = eval_set
            training_length = model.max_seq_length
            if truncated:  # scored at the length the fitted model encodes at
                model.max_seq_length = limit
            try:
                return {"eval_spearman": _spearman(self._cosine(a, b), target)}
            finally:
                if truncated:
                    model.max_seq_length = training_length

        # a new seed per call: a stream of calls does not replay one dropout sequence
        seed = (seed_from(self.random_state) + self.n_iter_) % (2**32)
        schedule = Schedule(
            epochs=int(self.epochs),
            batch_size=int(self.batch_size),
            learning_rate=float(self.learning_rate),
            warmup_ratio=float(self.warmup_ratio),
            seed=seed,
            device=self.device,
            # in-batch negatives: a duplicate text in a batch would be a false negative
            no_duplicates=self.loss == "mnrl",
            frozen=self._frozen(model),
            progress=bool(self.show_progress_bar),
            optimizer_state=getattr(self, "_optimizer_state", None),
        )
        length = self._training_length(model, rows.texts)
        limit = getattr(model, "max_seq_length", None)
        truncated = False
        if length is not None and (limit is None or length < limit):
            try:
                model.max_seq_length = int(length)
                truncated = True
            except AttributeError:  # a static model reads every token: nothing to truncate
                pass
        # a call that fails part-way puts the weights back (the attributes: all_or_nothing,
        # which also drops a copy this call made: nothing to put back into that one)
        saved = None if fresh else {
            name: p.detach().to("cpu", copy=True)  # (on the CPU: no GPU memory spent)
            for name, p in self._trained_parameters().items()}
        try:
            steps, epochs, self._optimizer_state = train(
                model, rows, loss, schedule, on_epoch_end=scores)
        except BaseException:
            import torch

            model.eval()  # (as a call that trains to the end leaves it)
            if saved is not None:
                with torch.no_grad():
                    for name, p in self._trained_parameters().items():
                        p.copy_(saved[name])
            raise
        finally:
            if truncated:
                model.max_seq_length = limit
        self._record(steps, epochs)
        self.n_features_out_ = embedding_dim(model)

    def _training_length(self, model, texts):
        """The token limit while training (`None`: the model's): `max_seq_length`, with
        `"auto"` resolved once, from the first call's texts, into `max_seq_length_`."""
        from embetter._st import token_counts

        if self.max_seq_length != "auto":
            self.max_seq_length_ = self.max_seq_length
        elif self.__dict__.get("max_seq_length_") is None:
            length = auto_seq_length(token_counts(model, texts))
            limit = getattr(model, "max_seq_length", None)  # (texts longer than the model
            # reads train at its limit: the length it trained at, not the texts')
            self.max_seq_length_ = length if length is None or limit is None else min(
                length, int(limit))
        return self.max_seq_length_

    # -- use ---------------------------------------------------------------------------------
    def _cosine(self, X1, X2) -> np.ndarray:
        a, b = self._encode(X1), self._encode(X2)
        a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return np.einsum("ij,ij->i", a, b).astype(np.float32)

    def transform(self, X):  # defined here, so `set_output` wraps it
        """Encode texts with the fine-tuned model: float32 array of shape `(n, dim)`."""
        return super().transform(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = self.loss != "mnrl"  # (fit's third argument)
        return tags

    def get_feature_names_out(self, input_features=None):
        """Output column names of `transform`: `sbertlearner0`, `sbertlearner1`, ..."""
        check_is_fitted(self, "model_")
        return np.asarray([f"sbertlearner{i}" for i in range(self.n_features_out_)],
                          dtype=object)

    def predict(self, X1, X2):
        """Cosine similarity of each pair `(X1[i], X2[i])`, as a float32 array."""
        check_is_fitted(self, "model_")
        X1, X2, _ = check_pairs(X1, X2, texts=True)
        return self._cosine(X1, X2)
