"""Label names as texts: each class's name (or a description) joins the pairs as a partner.

A few labelled texts per class say little about what the classes *are*; their names often
say a lot (`"card_arrival"`, `"sadness"`, `"Sci/Tech"`). SbertTuner pairs every labelled text
with its class's label text (similar) and with other classes' label texts (dissimilar), so
each class gathers around what its name means to the model (the idea of label-name
anchoring in few-shot text classification, e.g. FastFit). Label texts are only pair
partners: they are never labelled rows of their own and never reach a classifier.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from embetter._st import token_counts


def name_as_text(label) -> str | None:
    """A string label made readable (`"card_arrival"` -> `"card arrival"`, `"Sci/Tech"` ->
    `"Sci Tech"`, `"AddToPlaylist"` -> `"Add To Playlist"`: an uncased model's tokenizer
    would read a camel-case name as one word); `None` for labels that are no words (numbers,
    codes without a letter)."""
    if not isinstance(label, str):
        return None
    text = re.sub(r"(?<=[a-z])(?=[A-Z])|[\W_]+", " ", label).strip()
    return text if re.search(r"[^\W\d_]", text) else None


def resolve_label_texts(label_texts, classes, multilabel: bool) -> dict:
    """The text of every class under `label_texts` (`"auto"`, `None` or a mapping), as a
    dict `{class: text}` in the order of `classes`; `{}` when there are none.

    `"auto"` names the classes of 1-D string labels when every one of them holds a word, and
    nothing otherwise (numeric labels, multi-label columns). A mapping must give a non-empty
    text for every class (for a 2-D `y`, its keys are the column numbers).
    """
    if label_texts is None:
        return {}
    if isinstance(label_texts, str):  # "auto"; the parameter check allows nothing else
        names = [None if multilabel else name_as_text(c) for c in classes]
        if None in names or len(set(names)) < len(names):  # "a_b" and "a-b" read alike
            return {}
        return dict(zip(classes.tolist(), names))
    if not isinstance(label_texts, Mapping):
        raise TypeError(
            f"label_texts must be 'auto', None or a dict of label -> text, got "
            f"{type(label_texts).__name__}")
    missing = [c for c in classes.tolist() if c not in label_texts]
    if missing:
        what = "label columns" if multilabel else "labels"
        raise ValueError(f"label_texts has no text for the {what} {missing[:10]}")
    texts = {c: label_texts[c] for c in classes.tolist()}
    bad = {c: t for c, t in texts.items() if not isinstance(t, str) or not t.strip()}
    if bad:
        raise ValueError(f"label_texts must map each label to a non-empty str, got {bad}")
    return texts


def choose_label_texts(label_texts, learner, texts, targets, classes, *, first: bool,
                       kept: bool, seed: int) -> dict:
    """`{class: text}` for one call of a tuner: `label_texts` resolved; `"auto"` keeps the
    names when, on the first call, they fit the texts on the learner's untrained model (see
    `names_fit_the_texts`), and a stream sticks to that decision (`kept`: the last call had
    label texts)."""
    auto = isinstance(label_texts, str)
    if auto and not first and not kept:
        return {}
    names = resolve_label_texts(label_texts, classes, targets.ndim == 2)
    if names and auto and first:
        model, _ = learner._model_to_train()  # the private copy, before any training
        if not names_fit_the_texts(model, texts, targets, list(names.values()),
                                   random_state=[seed, 1]):
            return {}
    return names


def label_text_pairs(targets, rows, n_classes: int, n_pos: int, n_neg: int, rng):
    """Pairs of labelled rows with label texts: `(rows, classes, similar)`.

    `targets` are each row's class position among `n_classes` (1-D ints) or 0/1 indicator
    rows (2-D). Every row in `rows` is paired `n_pos` times with the text of one of its
    classes (similar, 1) and `n_neg` times with the text of a class it does not have
    (dissimilar, 0), drawn uniformly. The second index is a class position: the caller
    places the label texts in its table.
    """
    rng = np.random.default_rng(rng)
    rows = np.asarray(rows, dtype=np.int64)
    firsts, seconds, similar = [], [], []
    for n, value in ((n_pos, 1), (n_neg, 0)):
        anchors = np.repeat(rows, n)
        if targets.ndim == 1:
            own = targets[anchors].astype(np.int64)
            if value:
                classes, keep = own, np.ones(anchors.size, dtype=bool)
            else:  # any other class, uniformly: skip the own one
                classes = (own + rng.integers(1, max(n_classes, 2), size=own.size)) % n_classes
                keep = np.full(anchors.size, n_classes >= 2)
        else:
            allowed = targets[anchors].astype(bool) == bool(value)
            scores = np.where(allowed, rng.random(allowed.shape), -1.0)
            classes, keep = scores.argmax(axis=1), allowed.any(axis=1)
        firsts.append(anchors[keep])
        seconds.append(classes[keep].astype(np.int64))
        similar.append(np.full(int(keep.sum()), value, dtype=np.float32))
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(similar)


#: How the checks on the untrained model encode: unit-length numpy rows, no progress bar.
UNIT_ENCODE = dict(normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def encode_sample(model, texts, max_texts: int, random_state):
    """A seeded random sample of at most `max_texts` positions into `texts` (in order) and
    those texts' unit-length embeddings on `model`: what the checks made on the untrained
    model before a first call trains read (`names_fit_the_texts`, and
    `_losses.prototypes_fit_the_texts`)."""
    rng = np.random.default_rng(random_state)
    pick = np.arange(len(texts))
    if pick.size > max_texts:
        pick = np.sort(rng.choice(pick.size, size=max_texts, replace=False))
    return pick, model.encode([texts[i] for i in pick], **UNIT_ENCODE)


#: `names_fit_the_texts`: the t a cosine margin needs for label names to be kept. Chosen on
#: rows of the training splits (8 texts per class, seeds 0-9, `benchmarks/sbert.py
#: --validation` with the names forced on or off): with 16 texts of two classes the test is
#: weak; real names passed t >= 2 on 19 of 40 binary samples (mr on 1 of 10), 1.5 on 26, and
#: the 7 samples between gained 15.8 points of a logistic regression in all (mr +6.4, +4.3,
#: +0.3; sst2 +8.4; subj -0.6, -1.3; sms_spam -1.7); sets of 4 or more classes scored t >= 3.7
#: with their names. Three-letter codes as names passed 2 on 0 of 60 samples, 1.5 on 3 (which
#: cost -4.2, -2.0 and +0.2).
NAMES_MIN_T = 1.5


#: `names_are_words`: the share of the label names that must hold a word of the model's
#: vocabulary (one token). Codes and abbreviations (`"QZX"`, TREC's `"ABBR"`, `"DESC"`,
#: `"ENTY"`, `"LOC"`, `"NUM"`) are spelled out in word pieces; names the model knows as words
#: are not. TREC's six question types (`benchmarks/splits.py`'s trec_coarse, 8 texts per
#: class, seeds 0-9) passed the t-test with their abbreviations on 6 of 10 samples, and on
#: those a logistic regression gained 1.65 points a sample without them on rows of the
#: training split (0.55 on the test split); 1 of their 6 names is a word ("HUM"). Per name:
#: trec_fine's `"DESC manner"`, `"LOC city"` carry their meaning in the second word (72 % of
#: its names hold a word; the names gained 1.1 points on seeds 0-1). The other public sets:
#: every name holds a word, except clinc150 (95 %) and sms_spam ("spam" is two pieces: 50 %).
NAMES_MIN_WORDS = 0.5


def names_are_words(model, names, min_share=NAMES_MIN_WORDS) -> bool:
    """Whether at least `min_share` of `names` hold a word of the model's vocabulary (one
    token); true for a model without a text tokenizer."""
    words = [str(name).split() for name in names]
    pieces = token_counts(model, [w for ws in words for w in ws], special_tokens=False)
    if pieces is None:
        return True
    known, at = [], 0
    for ws in words:
        known.append(any(n == 1 for n in pieces[at:at + len(ws)]))
        at += len(ws)
    return float(np.mean(known)) >= min_share if known else False


def names_fit_the_texts(model, texts, targets, names, random_state, max_texts=256,
                        min_t=NAMES_MIN_T, min_words=NAMES_MIN_WORDS) -> bool:
    """Whether label names mean something to `model` for these labelled texts.

    A name that is a code (`"QZX"`, `"c7"`) gives the model nothing to pull a class towards
    but an arbitrary point, which on validation rows cost a binary set several points. So
    `label_texts="auto"` keeps the names only when they are words the model knows
    (`names_are_words`: at least `min_words` of them hold one), and the labelled texts (a
    random sample of at most `max_texts`) are closer, on the untrained model, to their own
    label's text than to the others' on average: a one-sided t-test of that cosine margin,
    `t >= min_t`. `targets` are class positions into `names` (1-D).
    """
    if len(names) < 2 or not names_are_words(model, names, min_words):
        return False
    pick, embeddings = encode_sample(model, texts, max_texts, random_state)
    if pick.size < 3:
        return False
    sims = embeddings @ model.encode(list(names), **UNIT_ENCODE).T
    own = sims[np.arange(pick.size), targets[pick]]
    margin = own - (sims.sum(axis=1) - own) / (len(names) - 1)
    spread = margin.std(ddof=1)
    if spread == 0:
        return bool(margin.mean() > 0)
    return bool(margin.mean() / (spread / np.sqrt(margin.size)) >= min_t)
