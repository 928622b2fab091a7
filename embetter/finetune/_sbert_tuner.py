"""SbertTuner: fine-tune the sentence model on labelled texts, as a pipeline step."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted

from embetter._estimator_checks import (
    Interval,
    StrOptions,
    all_or_nothing,
    check_stream_settled,
)
from embetter._st import embedding_dim
from embetter._validation import as_random_state, as_texts
from embetter.base import ReadsTextsOnce
from embetter.finetune._label_texts import choose_label_texts, label_text_pairs
from embetter.finetune._losses import CLASS_LOSSES, prototypes_fit_the_texts
from embetter.finetune._pairs import pairs_for_new_rows
from embetter.finetune._sbert_auto import (
    POSITIVES_ONLY,
    resolve_learning_rate,
    resolve_loss,
    resolve_pairs,
)
from embetter.finetune._sbert_base import COMMON_CONSTRAINTS, PAIR_LOSSES, SbertBase
from embetter.finetune._sbert_inputs import read_batch
from embetter.finetune._sbert_learner import SbertLearner
from embetter.finetune._stream_average import StreamAverage

#: the parameters a stream's first call settles (the model, the loss, the pairs per text): a
#: later call cannot take a new value, which a retrain would take silently in mid-stream (the
#: device is a training setting: a stream trained on a GPU goes on on a CPU-only machine)
_STREAM_FIXED = ("sent_tfm", "loss", "n_pos", "n_neg")


class SbertTuner(ReadsTextsOnce, TransformerMixin, SbertBase):
    """Fine-tune a sentence model on labelled texts, as a pipeline step (the SetFit idea).

    `fit(texts, y)` turns the labels into text pairs with `generate_pairs` (each text is
    paired with `n_pos` texts of its own class and `n_neg` of other classes: a bounded
    `len(texts) * (n_pos + n_neg)` pairs, never all of them), fine-tunes the model on those
    pairs with an `SbertLearner`, and `transform` then returns the fine-tuned embeddings, ready
    for any classifier. A 2-D 0/1 `y` is read as multi-label. With `loss="mnrl"`, `"supcon"`
    or `"prototype"` only the positive pairs are used: other texts in the batch act as
    negatives (`"supcon"`, supervised contrastive, knows the labels, so a text of the same
    class in the batch counts as a positive), or every other class's mean (`"prototype"`).
    The other arguments (`batch_size`, `epochs`, `learning_rate` when a number, `warmup_ratio`,
    `matryoshka_dims`, `device`, `show_progress_bar`) mean what they mean in `SbertLearner`.

    Labels that are words (`"sadness"`, `"card_arrival"`) name what a class is about: with
    `label_texts="auto"` each text is also paired with its label's text (`n_pos` times,
    similar) and with `n_neg` other labels' texts (dissimilar), so every class gathers
    around its name; a dict `{label: text}` gives your own descriptions (for numeric labels,
    or codes), `None` turns it off. Label texts are pair partners only: they never become
    labelled rows, and `transform` is unchanged. `"auto"` keeps the names only when at least
    half of them hold a word of the model's vocabulary and, on the untrained model, the
    labelled texts are closer to their own label's name than to the others' (a t-test,
    `names_fit_the_texts`): codes such as `"QZX"` or abbreviations such as `"ENTY"` would
    pull a class towards an arbitrary point (chosen on rows of the training splits;
    docs/sentence-models.md).

    `partial_fit(texts, y)` keeps fine-tuning the same model on each new batch of labels (a
    labelling session): a call trains `n_pos + n_neg` pairs per new text, drawn for the new
    texts and as many earlier ones (replay), with partners from every text seen so far, and
    the optimizer carries on. `transform` serves the average of the weights each call ended
    with (`StreamAverage`). A call that brings the texts seen to `refit_growth` times those
    the model was last trained from the start on retrains a fresh copy on every text seen, as
    `fit` would, and makes the `"auto"` choices again; docs/streaming.md has the figures.

    The defaults are chosen for the few-shot case (a handful of labelled texts per class):
    balanced pairs, as many positive and negative pairs per text as there are classes,
    between 2 and 4 (`n_pos="auto"`, `n_neg="auto"`; 2 positives under `"supcon"` and
    `"prototype"`, whose batches or prototypes hold the negatives), one epoch at a high
    learning rate (`learning_rate="auto"`: 2e-4, and 1e-4 for the pair loss over three
    classes or more, whose fits take several times the steps of a two-class one), and
    training on the first tokens of each text, enough for three texts in four to be trained
    whole, at least 32 (`max_seq_length="auto"`; encoding afterwards uses the whole text),
    with the token embedding matrix left as it is. With 8 texts per class of 6 classes that
    is 48 optimizer steps, with label texts or without: label texts take half of each text's
    pairs, and without them the auto counts double
    (`_sbert_auto.AUTO_UNNAMED_FACTOR`).

    `loss="auto"` regresses the cosine of pairs (`"cosine"`) while there are at most
    `batch_size` classes. With more (and one label per text) it trains a cosine softmax over
    the class means with the body (`"prototype"`) when those means, on the untrained model,
    already classify the labelled texts (`prototypes_fit_the_texts`), and otherwise
    `"supcon"` over positive pairs (also for multi-label `y`). All defaults were chosen on
    rows of the training splits, never the test split (`benchmarks/sbert.py --validation`);
    docs/sentence-models.md gives the figures. With many labelled texts, lower
    `learning_rate` (e.g. 2e-5) and perhaps `n_pos`/`n_neg`.

    Arguments:
        sent_tfm: a model name, a local path, a `SentenceTransformer` (copied, never changed),
            a static model (`StaticEmbedding`) or a `SentenceEncoder` (its model: one with a
            `prompt`, `truncate_dim`, `dim` or `normalize_embeddings=True` is refused, as
            those would be lost).
        n_neg: pairs with a text of another class, per text; `"auto"`: the number of
            classes, between 2 and 4, twice that without label texts (0 under `"supcon"` and
            `"prototype"`, which need no explicit negatives).
        n_pos: pairs with another text of the same class, per text; `"auto"`: the number of
            classes, between 2 and 4 (2 under `"supcon"`/`"prototype"`), twice that without
            label texts.
        max_seq_length: truncate texts to this many tokens (at least 2) while training
            (faster); `None` keeps the model's limit; `"auto"`: the 75th percentile of the
            first call's token counts, rounded up to a multiple of 16, at least 32 (see
            `SbertLearner`).
        freeze_embeddings: keep the token embedding matrix fixed (default here: faster, as
            accurate on few-shot data); see `SbertLearner`.
        loss: `"auto"` (see above), `"prototype"`, `"supcon"`, or a pair loss of
            `SbertLearner`.
        label_texts: `"auto"` (when every label is a string holding a word, each is its
            own text; otherwise, and for a 2-D `y`, none), `None`, or a dict of label -> text
            (for a 2-D `y`: column number -> text) with a text for every label.
        refit_growth: `partial_fit` retrains from the start when the texts seen reach this
            many times the texts of the last start (a number above 1); `None` never retrains:
            every call trains on from the last one.
        batch_size: pairs per optimizer step (also texts per forward pass when encoding).
        epochs: passes over the pairs (per `partial_fit` call: over that call's pairs).
        learning_rate: the peak learning rate of AdamW, or `"auto"` (see above;
            `learning_rate_` tells which).
        warmup_ratio: fraction of the optimizer steps spent warming the learning rate up
            linearly; it then decays linearly to zero.
        matryoshka_dims: optional list of leading dimensions (e.g. `[384, 128, 64]`) that are
            each trained to work on their own (`MatryoshkaLoss`).
        random_state: seed for the pairs, the data order and dropout.
        device: `None` (cuda, then mps, then cpu), `"cpu"`, `"cuda"`, ...
        show_progress_bar: show the training's progress bar.

    After `fit`: `learner_` (the fitted `SbertLearner`), `model_` (its model), `loss_` (the
    loss trained with, `"auto"` resolved on the first call), `n_pos_`/`n_neg_` (the pairs
    per text, `"auto"` resolved on the first call that trains: a stream's first calls of one
    declared class train nothing), `learning_rate_` (likewise), `label_texts_` (the label
    texts trained with, `{}` for none; set with `n_pos_`), `n_pairs_` (pairs trained
    on, all calls), `refit_rows_` (the texts of the last start: the first
    call's, or the last retrain's), `seen_texts_`/`seen_y_` (every text and label trained on,
    kept for `partial_fit`'s retraining: a saved tuner holds them), and the learner's training
    record (since the last start): `n_iter_`, `loss_curve_`, `history_`.

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
        "n_neg": [Interval(numbers.Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "n_pos": [Interval(numbers.Integral, 0, None, closed="left"), StrOptions({"auto"})],
        **COMMON_CONSTRAINTS,
        "loss": [StrOptions({*PAIR_LOSSES, "auto"})],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither"),
                          StrOptions({"auto"})],
        "label_texts": [StrOptions({"auto"}), dict, None],
        "refit_growth": [None, Interval(numbers.Real, 1, None, closed="neither")],
    }

    #: what a tuner pickled before `refit_growth` existed streamed with (instances set it)
    refit_growth = None

    def __init__(
        self,
        sent_tfm="all-MiniLM-L6-v2",
        n_neg="auto",
        n_pos="auto",
        loss="auto",
        label_texts="auto",
        batch_size=16,
        epochs=1,
        learning_rate="auto",
        warmup_ratio=0.1,
        matryoshka_dims=None,
        max_seq_length="auto",
        freeze_embeddings=True,
        refit_growth=1.5,
        random_state=None,
        device=None,
        show_progress_bar=False,
    ):
        self.sent_tfm = sent_tfm
        self.n_neg = n_neg
        self.n_pos = n_pos
        self.loss = loss
        self.label_texts = label_texts
        self.batch_size = batch_size
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.warmup_ratio = warmup_ratio
        self.matryoshka_dims = matryoshka_dims
        self.max_seq_length = max_seq_length
        self.freeze_embeddings = freeze_embeddings
        self.refit_growth = refit_growth
        self.random_state = random_state
        self.device = device
        self.show_progress_bar = show_progress_bar

    def _classes(self, labels) -> np.ndarray:
        """The classes: label columns (2-D `y`), else the stream's `classes_` when given (read
        on the first call), else the labels seen."""
        if labels.ndim == 2:
            return np.arange(labels.shape[1])
        known = getattr(self, "classes_", None)
        return np.unique(labels) if known is None else known

    def _new_learner(self, seed) -> SbertLearner:
        return SbertLearner(sent_tfm=self.sent_tfm, loss=self.loss_, random_state=seed,
                            **self._training_params())

    def _training_params(self) -> dict:
        """The learner's training settings, as this tuner's parameters say now: a new
        learner takes them, and a stream's learner takes them again on each call (a
        `set_params` between `partial_fit` calls is used from the next call on)."""
        return {"batch_size": self.batch_size, "epochs": self.epochs,
                "learning_rate": self.learning_rate_, "warmup_ratio": self.warmup_ratio,
                "matryoshka_dims": self.matryoshka_dims, "max_seq_length": self.max_seq_length,
                "freeze_embeddings": self.freeze_embeddings,
                "show_progress_bar": self.show_progress_bar, "device": self.device}

    @all_or_nothing  # a failed fit keeps the previous one, as the heads' do
    def fit(self, X, y):
        """Build labelled pairs from `(X, y)` and fine-tune a fresh copy of the model on them."""
        self._forget()
        return self._learn(X, y, classes=None)

    def _forget(self, keep=()):
        """Back to unfitted (`fit` starts here; a retrain keeps `classes_`)."""
        for attr in ("learner_", "classes_", "seen_texts_", "seen_y_", "loss_", "label_texts_",
                     "n_pos_", "n_neg_", "n_pairs_", "n_features_out_", "_average",
                     "learning_rate_", "_stream_params", "_start_classes",
                     "_pair_seed", "refit_rows_"):
            if attr not in keep:
                self.__dict__.pop(attr, None)

    def partial_fit(self, X, y, classes=None):
        """Keep fine-tuning the model on a new batch of labelled texts; the model served is
        the row-weighted average of each call's end weights (see the class docstring).

        Arguments:
            X: the new texts.
            y: their labels (1-D), or a 0/1 indicator matrix (multi-label).
            classes: on the first call, every label the stream will use (single-label); a
                later batch with a label outside them is an error. Optional: without it any
                label is accepted.
        """
        return self._learn(X, y, classes=classes, stream=True)

    @all_or_nothing  # a failed call (a retrain too) leaves the tuner as it was before it
    def _learn(self, X, y, classes, stream=False):
        from embetter._torch.device import grad_enabled

        self._streaming = stream  # a stream may start with one of its classes, a fit not
        # the private copy is made and trained with autograd on, even under the caller's
        # torch.inference_mode() (its tensors could never be trained)
        with grad_enabled():
            return self._learn_batch(X, y, classes, first=not hasattr(self, "learner_"))

    def _declared(self, labels) -> bool:
        """Whether the stream declared what its labels can be: `classes=` on its first call,
        or the columns of a multi-label `y`."""
        if labels.ndim == 2:
            return labels.shape[1] >= 2 and self.__dict__.get("_streaming", False)
        return getattr(self, "classes_", None) is not None and self.classes_.size >= 2

    def _one_class(self, labels) -> bool:
        """Labels that hold one class (one label set) of those declared: nothing to contrast."""
        return np.unique(labels, axis=0).shape[0] < 2 and self._declared(labels)

    def _refit_due(self, n_seen: int) -> bool:
        """A stream retrains from the start once the texts seen have grown `refit_growth`
        times since the model was last trained from the start (the first call, or the last
        retrain: `refit_rows_`)."""
        if self.refit_growth is None:
            return False
        since = self.__dict__.get("refit_rows_", len(self.seen_texts_))
        return n_seen >= float(self.refit_growth) * since

    def _learn_batch(self, X, y, classes, first):
        self._validate_params()
        if not first:  # (before a retrain, which would take a new value in mid-stream)
            settled = self.__dict__.get("_stream_params", {})  # (older pickles: the device)
            check_stream_settled(self, {k: settled[k] for k in _STREAM_FIXED if k in settled})
        texts, labels, declared = read_batch(
            X, y, classes, streaming=self.__dict__.get("_streaming", False),
            known=getattr(self, "classes_", None), seen_y=None if first else self.seen_y_)
        if declared is not None:
            self.classes_ = declared
        n_pairs = 0
        if not first and (self._refit_due(len(self.seen_texts_) + len(texts))
                          or not self.n_pairs_):
            # retrain a fresh copy on everything seen: what `fit` on those texts would do
            # (also the stream's real start when its first calls held one class: nothing
            # trained yet, the choices made there are made again with two classes)
            texts = self.seen_texts_ + texts
            labels = np.concatenate([self.seen_y_, labels])
            n_pairs, first = self.n_pairs_, True
            self._forget(keep=("classes_",))
        if first:
            rng = as_random_state(self.random_state)
            self._pair_seed, train_seed = (int(s) for s in rng.randint(0, 2**31 - 1, size=2))
            self.seen_texts_, self.seen_y_, self.n_pairs_ = [], labels[:0], n_pairs
            self.refit_rows_ = len(texts)
            self._stream_params = {name: getattr(self, name) for name in _STREAM_FIXED}
            n_classes = self._start_classes = self._classes(labels).size
            self.loss_ = resolve_loss(self.loss, labels.ndim == 2, n_classes, self.batch_size)
            self.learning_rate_ = resolve_learning_rate(self.learning_rate, self.loss_, n_classes)
            learner = self._new_learner(train_seed)
            if (self.loss == "auto" and self.loss_ == "supcon" and labels.ndim == 1
                    and np.unique(labels).size > 1):  # (one class: the choice waits)
                model, _ = learner._model_to_train()  # the private copy, before any training
                if prototypes_fit_the_texts(model, texts, labels, [self._pair_seed, 2]):
                    self.loss_ = "prototype"
                    learner.set_params(loss=self.loss_)
        else:
            learner = self.learner_
            # "auto" as the stream's start resolved it (a retrain resolves it again)
            self.learning_rate_ = resolve_learning_rate(
                self.learning_rate, self.loss_,
                self.__dict__.get("_start_classes", self._classes(labels).size))
            # (loss: a 0.10.0 pickle's learner held a stand-in loss)
            learner.set_params(loss=self.loss_, **self._training_params())
        n_old = len(self.seen_texts_)
        all_texts = self.seen_texts_ + texts
        # (a copy on the first call too: the caller's label array may be reused for others)
        all_labels = np.concatenate([self.seen_y_, labels]) if n_old else labels.copy()
        average = StreamAverage() if first else self.__dict__.get("_average", StreamAverage())
        params = learner._trained_parameters()
        average.start(params)
        try:
            trained = self._train_pairs(learner, all_texts, all_labels, n_old, first)
        except BaseException:
            average.undo(params)  # a failed (or interrupted) call leaves the served model
            raise
        if not trained and first and not self._one_class(all_labels):
            raise ValueError("no training pairs: n_pos and n_neg are both 0")
        average.end(learner._trained_parameters(), len(texts), len(all_texts))
        self.learner_, self._average = learner, average
        self.seen_texts_, self.seen_y_ = all_texts, all_labels
        self.n_features_out_ = embedding_dim(learner.model_)  # (trained or not, see above)
        return self

    def _train_pairs(self, learner, texts, labels, n_old, first) -> int:
        if self._one_class(labels):
            # a stream's first batches hold one of the classes it declared: nothing to
            # contrast yet, the model stays the pretrained one until a second class comes
            learner._model_to_train()
            return 0
        positives_only = self.loss_ in POSITIVES_ONLY
        classes = self._classes(labels)
        targets = labels if labels.ndim == 2 else np.searchsorted(classes, labels)
        self.label_texts_ = choose_label_texts(
            self.label_texts, learner, texts, targets, classes, first=first,
            kept=bool(getattr(self, "label_texts_", {})), seed=self._pair_seed)
        if "n_pos_" not in self.__dict__:  # the first call (or a 0.10.0 pickle: int counts)
            self.n_pos_, self.n_neg_ = resolve_pairs(
                self.n_pos, self.n_neg, self.loss_, classes.size, bool(self.label_texts_))
        n_pos, n_neg = self.n_pos_, self.n_neg_  # n_neg_ is 0 when positives_only
        idx1, idx2, sim = pairs_for_new_rows(
            labels, n_old, n_pos=n_pos, n_neg=n_neg, random_state=self._pair_seed + n_old,
        )
        if self.label_texts_:  # each new text also meets its class's name and others'
            rows, named, similar = label_text_pairs(
                targets, np.arange(n_old, len(texts)), len(classes), n_pos, n_neg,
                rng=[self._pair_seed, n_old])
            idx1, sim = np.concatenate([idx1, rows]), np.concatenate([sim, similar])
            idx2 = np.concatenate([idx2, len(texts) + named])
            texts = texts + list(self.label_texts_.values())
        if positives_only and sim.size == 0 and first:
            raise ValueError(
                f"loss={self.loss_!r} needs positive pairs, but no class has two texts"
                + ("" if self.label_texts_ else " (and there are no label_texts)"))
        if sim.size:
            # supcon, prototype: the anchors' classes (positions, or 0/1 rows)
            target = (targets.astype(np.int64)[idx1] if self.loss_ in CLASS_LOSSES
                      else None if positives_only else sim)
            learner.partial_fit_indexed(texts, idx1, idx2, target)
        self.n_pairs_ += int(sim.size)
        return int(sim.size)

    # -- the fitted model --------------------------------------------------------------------
    @property
    def model_(self):
        """The fine-tuned `SentenceTransformer` (after `fit`)."""
        check_is_fitted(self, "learner_")
        return self.learner_.model_

    @property
    def n_iter_(self):
        check_is_fitted(self, "learner_")
        return self.learner_.n_iter_

    @property
    def loss_curve_(self):
        check_is_fitted(self, "learner_")
        return self.learner_.loss_curve_

    @property
    def history_(self):
        check_is_fitted(self, "learner_")
        return self.learner_.history_

    def transform(self, X):
        """Encode texts with the fine-tuned model: float32 array of shape `(n, dim)`."""
        check_is_fitted(self, "learner_")
        # the learner's own encode: its transform would follow its own set_output (or
        # sklearn's global one), not this tuner's
        return self.learner_._encode(as_texts(X))

    def to_disk(self, path):
        """Save the fine-tuned model (atomically); `SentenceEncoder(path)` loads it back."""
        check_is_fitted(self, "learner_")
        return self.learner_.to_disk(path)

    def get_feature_names_out(self, input_features=None):
        """Output column names: `sberttuner0`, `sberttuner1`, ..."""
        check_is_fitted(self, "learner_")
        return np.asarray([f"sberttuner{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True  # pairs come from the labels
        return tags
