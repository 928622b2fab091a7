"""Pair generation: labels -> (index1, index2, similar) training pairs into one table, vectorised;
`PairSampler` draws fresh ones every epoch; `pairs_for_new_rows` gives a stream call its
share."""

from __future__ import annotations

import numpy as np

from embetter._estimator_checks import plain_scalar
from embetter._labels import as_targets
from embetter._validation import as_random_state, check_int


def _single_label_pairs(codes, n_pos, n_neg, rng, strategy="random", anchors="all"):
    n = codes.shape[0]
    counts = np.bincount(codes)
    order = np.argsort(codes, kind="stable")  # members of each class, contiguous
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[codes[order]]  # position of i inside its class
    own = counts[codes]

    rows = np.arange(n)
    if anchors == "balanced":
        # every class anchors the same share of the pairs, n / k rows: a small class's rows
        # each as often as it takes (every one, then a sample without repeats for the rest),
        # a sample of a large class's, so a small class is paired as often as a large one
        k = counts.size
        share = n // k + (np.arange(k) < n % k)
        members = np.split(order, starts[1:])
        rows = np.concatenate([
            np.concatenate([np.tile(m, want // m.size),
                            rng.choice(m, want % m.size, replace=False)])
            for m, want in zip(members, share)])
    firsts, seconds, labels = [], [], []
    can_pos = rows[own[rows] >= 2]
    if n_pos and can_pos.size:
        anchors = np.repeat(can_pos, n_pos)
        r = rng.integers(0, own[anchors] - 1)  # any other member of the class: skip self
        r += r >= rank[anchors]
        firsts.append(anchors)
        seconds.append(order[starts[codes[anchors]] + r])
        labels.append(np.ones(anchors.size, dtype=np.float32))
    if n_neg:
        anchors = np.repeat(rows, n_neg)
        c = codes[anchors]
        if strategy == "balanced":
            # first a class other than the anchor's, uniformly, then one of its members: rare
            # classes show up as negatives as often as frequent ones
            k = counts.size
            other = (c + 1 + rng.integers(0, k - 1, size=c.size)) % k
            r = starts[other] + rng.integers(0, counts[other])
        else:
            r = rng.integers(0, n - counts[c])  # any item outside the class
            r += np.where(r >= starts[c], counts[c], 0)
        firsts.append(anchors)
        seconds.append(order[r])
        labels.append(np.zeros(anchors.size, dtype=np.float32))
    return firsts, seconds, labels


def _multi_label_pairs(Y, n_pos, n_neg, rng, max_tries=20):
    n = Y.shape[0]
    firsts, seconds, labels = [], [], []
    has_label = Y.any(axis=1)
    if n_pos:
        # positives: pick one of the item's labels that has another member, then that member
        # (a label the item alone carries never costs it a positive)
        members = [np.flatnonzero(Y[:, k]) for k in range(Y.shape[1])]
        sizes = np.array([m.size for m in members])
        shared = Y.astype(bool) & (sizes >= 2)
        anchors = np.repeat(np.flatnonzero(shared.any(axis=1)), n_pos)
        weights = shared[anchors].astype(np.float64)
        weights /= weights.sum(axis=1, keepdims=True)
        chosen = (weights.cumsum(axis=1) > rng.random((anchors.size, 1))).argmax(axis=1)
        r = rng.integers(0, sizes[chosen] - 1)
        # members are sorted, so the anchor itself sits at searchsorted(anchor): skip it
        partner = np.array(
            [m[j + (j >= np.searchsorted(m, a))] for m, j, a in
             zip((members[k] for k in chosen), r, anchors)],
            dtype=np.int64,
        )
        firsts.append(anchors)
        seconds.append(partner)
        labels.append(np.ones(anchors.size, dtype=np.float32))
    if n_neg:
        # negatives: rejection-sample items sharing no label with the anchor
        anchors = np.repeat(np.flatnonzero(has_label), n_neg)
        partner = np.full(anchors.size, -1, dtype=np.int64)
        todo = np.arange(anchors.size)
        for _ in range(max_tries):
            if not todo.size:
                break
            cand = rng.integers(0, n, size=todo.size)
            good = ~(Y[anchors[todo]] & Y[cand]).any(axis=1)
            partner[todo[good]] = cand[good]
            todo = todo[~good]
        keep = partner >= 0
        firsts.append(anchors[keep])
        seconds.append(partner[keep])
        labels.append(np.zeros(int(keep.sum()), dtype=np.float32))
    return firsts, seconds, labels


def _rng_from(random_state) -> np.random.Generator:
    seeded = as_random_state(random_state, generators=True)
    if isinstance(seeded, np.random.Generator):
        return seeded
    return np.random.default_rng(seeded.randint(0, 2**31 - 1))


class PairSampler:
    """Fresh index pairs `(i, j, similar)` into one table, drawn anew on every call.

    The pair pipeline of `embetter.finetune`: labels are read and checked once, here; each
    epoch a trainer calls `draw()` and gets new index triples into the rows of the table the
    labels belong to (the embedding matrix for the small heads; for a text model, the unique
    texts). Nothing but indices is produced: the trainer keeps the table once, on its device,
    and gathers rows by index, so no pair row is ever copied.

    Internal API (stable for the tuners in this package):

    - `PairSampler(y, n_neg, n_pos, strategy, random_state, anchors)`: `y` as `generate_pairs`
      takes it (1-D labels, or a 2-D 0/1 indicator matrix for multi-label data), one entry per
      table row.
    - `draw() -> (idx1, idx2, similar)`: int64 row indices and float32 0/1 labels; every row
      with `n_pos` members of its class and `n_neg` items of other classes (`anchors="all"`),
      or as many rows, each class drawing the same number of its own (`"balanced"`,
      single-label only).
    - `pairs_per_row`: `n_pos + n_neg`, what one pass costs per row (a trainer's step budget).
    - `classes`: the sorted labels (or label columns, multi-label); `codes`: each row's class
      position (single-label only).

    Usage:

    ```python
    from embetter.finetune._pairs import PairSampler

    sampler = PairSampler(["a", "a", "b", "b"], n_neg=1, n_pos=1, random_state=0)
    first, second = sampler.draw(), sampler.draw()  # new pairs each epoch
    assert first[0].dtype == "int64" and len(first[2]) == 8
    ```
    """

    def __init__(self, y, n_neg=3, n_pos=1, strategy="random", random_state=None,
                 anchors="all"):
        self.n_neg = check_int(n_neg, "n_neg", 0)
        self.n_pos = check_int(n_pos, "n_pos", 0)
        if self.n_neg + self.n_pos == 0:
            raise ValueError("n_neg and n_pos are both 0: no pairs would be generated")
        if strategy not in ("random", "balanced"):
            raise ValueError(f"strategy must be 'random' or 'balanced', got {strategy!r}")
        if anchors not in ("all", "balanced"):
            raise ValueError(f"anchors must be 'all' or 'balanced', got {anchors!r}")
        self.strategy, self.anchors = strategy, anchors
        self.rng = _rng_from(random_state)
        labels, self.multilabel = as_targets(y, "y")
        if self.multilabel:
            if np.unique(labels, axis=0).shape[0] < 2:
                raise ValueError("y has only one distinct label set; pairs need at least two")
            if strategy != "random" or anchors != "all":
                raise ValueError(
                    "strategy='balanced' and anchors='balanced' need single-label y; use "
                    "'random' and 'all' for 2-D y"
                )
            self.Y = labels
            self.classes = np.arange(labels.shape[1])
            self.codes = None
        else:
            self.classes, codes = np.unique(labels, return_inverse=True)
            if self.classes.size < 2:
                raise ValueError(
                    f"y has only one class ({plain_scalar(self.classes[0])!r} x {labels.size}); "
                    "pairs need at least two" if self.classes.size
                    else "y is empty; at least two classes are required"
                )
            self.codes = codes.ravel()

    @property
    def pairs_per_row(self) -> int:
        return self.n_pos + self.n_neg

    def draw(self):
        """New pairs: `(idx1, idx2, similar)`, int64, int64, float32."""
        if self.multilabel:
            parts = _multi_label_pairs(self.Y, self.n_pos, self.n_neg, self.rng)
        else:
            parts = _single_label_pairs(self.codes, self.n_pos, self.n_neg, self.rng,
                                        self.strategy, self.anchors)
        firsts, seconds, labels = parts
        if not firsts:  # e.g. n_neg=0 and no class with two members: no pairs at all
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return (np.concatenate(firsts).astype(np.int64),
                np.concatenate(seconds).astype(np.int64), np.concatenate(labels))


def generate_pairs(y, n_neg=3, n_pos=1, strategy="random", random_state=None):
    """Build training pairs from labels: same label -> similar (1), other label -> dissimilar (0).

    Each item is paired with `n_pos` other members of its class (never itself, when the class
    has two or more members) and with `n_neg` items from other classes. A 2-D 0/1 `y` is read
    as multi-label: items sharing at least one label are positives, items sharing none are
    negatives. Fully vectorised: 100,000 labels take well under a second.

    Arguments:
        y: 1-D labels (any values), or a 2-D 0/1 indicator matrix for multi-label data.
        n_neg: negatives per item.
        n_pos: positives per item.
        strategy: how a negative is drawn: `"random"`, any item of another class (classes
            weighted by their size), or `"balanced"`, first another class uniformly, then one
            of its items (rare classes are seen as often as frequent ones). Single-label only.
        random_state: seed or `numpy.random.RandomState`/`Generator` for repeatable pairs.

    Returns:
        `(idx1, idx2, similar)`: int64 index arrays into `y` and float32 0/1 labels.

    Usage:

    ```python
    import numpy as np
    from embetter.finetune import generate_pairs

    i, j, sim = generate_pairs(["a", "a", "b", "b", "c"], n_neg=2, random_state=0)
    assert ((sim == 1) == (np.array(list("aabbc"))[i] == np.array(list("aabbc"))[j])).all()
    ```
    """
    return PairSampler(y, n_neg=n_neg, n_pos=n_pos, strategy=strategy,
                       random_state=random_state).draw()


def _read_records(records):
    """Texts and cats dicts of the records, checked; one pass, with a precise error if needed."""
    if isinstance(records, (str, bytes, dict)) or not hasattr(records, "__iter__"):
        raise TypeError("records must be an iterable of dicts with 'text' and 'cats', got "
                        f"{type(records).__name__}")
    records = list(records)
    try:
        texts = [r["text"] for r in records]
        cats = [r.get("cats", {}) for r in records]
        ok = all(type(t) is str for t in texts) and all(type(c) is dict for c in cats) and all(
            v is True or v is False or v == 0 or v == 1 for c in cats for v in c.values())
    except (TypeError, KeyError, AttributeError, ValueError):  # (an array as a value)
        ok = False
    if ok:
        return texts, cats
    for i, record in enumerate(records):  # slow path: find the first bad record and name it
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f"records[{i}] must be a dict with a 'text' str, got {record!r:.80}")
        if not isinstance(record.get("cats", {}), dict):
            raise ValueError(f"records[{i}]['cats'] must be a dict of label -> 0/1")
        for label, value in record.get("cats", {}).items():
            if np.ndim(value) != 0 or value not in (0, 1):
                raise ValueError(f"records[{i}]['cats'][{label!r}] must be 0 or 1, got {value!r}")
    return texts, cats  # pragma: no cover - the fast path found a problem the slow one did not


def pairs_from_records(records, n_neg=3, n_pos=1, labels=None, random_state=None):
    """Build text pairs from bulk-labelling records `{"text": ..., "cats": {label: 0/1}}`.

    For every label, each record marked 1 is paired with `n_pos` other records marked 1
    (similar) and with `n_neg` records marked 0 for that same label (dissimilar). Records that
    do not mention a label (partial labels) take no part in its pairs, and two records that
    are both 0 for a label are never paired (they need not be alike).

    Arguments:
        records: an iterable of dicts with a `"text"` str and a `"cats"` dict of label -> 0/1.
        n_neg: dissimilar pairs per positive record and label.
        n_pos: similar pairs per positive record and label.
        labels: only use these labels (default: every label found).
        random_state: seed or `numpy.random.RandomState`/`Generator` for repeatable pairs.

    Returns:
        `(texts1, texts2, similar)`: two lists of str and a float32 array of 0/1.

    Usage:

    ```python
    from embetter.finetune import pairs_from_records

    records = [
        {"text": "we release a new corpus", "cats": {"new-dataset": 1}},
        {"text": "our data is public", "cats": {"new-dataset": 1, "dev-research": 0}},
        {"text": "a faster parser", "cats": {"new-dataset": 0}},
    ]
    t1, t2, sim = pairs_from_records(records, n_neg=1, random_state=0)
    assert len(t1) == len(t2) == len(sim) == 4
    ```
    """
    n_neg = check_int(n_neg, "n_neg", 0)
    n_pos = check_int(n_pos, "n_pos", 0)
    if n_neg + n_pos == 0:
        raise ValueError("n_neg and n_pos are both 0: no pairs would be generated")
    rng = _rng_from(random_state)
    texts, cats = _read_records(records)
    names: dict = {}
    cols = np.fromiter((names.setdefault(k, len(names)) for c in cats for k in c), dtype=np.int64)
    values = np.fromiter((v for c in cats for v in c.values()), dtype=np.int64, count=cols.size)
    rows = np.repeat(np.arange(len(cats)), [len(c) for c in cats])
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be a list of label names or None, got the string "
                        f"{labels!r}; pass [{labels!r}] for one label")
    if labels is not None and not hasattr(labels, "__iter__"):
        raise TypeError(f"labels must be a list of label names or None, got {labels!r}")
    wanted = list(names) if labels is None else list(labels)
    missing = [label for label in wanted if label not in names]
    if missing:
        raise ValueError(f"labels {missing} occur in no record; found {sorted(names)}")

    firsts, seconds, similar = [], [], []
    for label in wanted:
        mine = cols == names[label]
        pos, neg = rows[mine & (values == 1)], rows[mine & (values == 0)]
        if n_pos and pos.size >= 2:
            anchors = np.repeat(pos, n_pos)
            at = np.repeat(np.arange(pos.size), n_pos)
            r = rng.integers(0, pos.size - 1, size=anchors.size)
            r += r >= at  # any other positive: skip the anchor itself
            firsts.append(anchors)
            seconds.append(pos[r])
            similar.append(np.ones(anchors.size, dtype=np.float32))
        if n_neg and pos.size and neg.size:
            anchors = np.repeat(pos, n_neg)
            firsts.append(anchors)
            seconds.append(neg[rng.integers(0, neg.size, size=anchors.size)])
            similar.append(np.zeros(anchors.size, dtype=np.float32))
    if not firsts:
        raise ValueError(
            "no pairs could be formed: each label needs two records marked 1, or one marked 1 "
            "and one marked 0"
        )
    idx1, idx2 = np.concatenate(firsts), np.concatenate(seconds)
    pool = np.asarray(texts, dtype=object)
    return pool[idx1].tolist(), pool[idx2].tolist(), np.concatenate(similar)


def pairs_for_new_rows(labels, n_old: int, n_pos: int, n_neg: int, random_state):
    """A stream call's pairs: the budget of its new rows, spent on them and on earlier rows.

    The rows from `n_old` on are new. The call gets as many pairs as one `fit` gives its new
    rows (`n_pos + n_neg` per text), drawn from the pairs whose first text is a new row or one
    of as many earlier rows picked at random (replay: without it, the last batches of a
    stream would pull the model towards themselves alone), partners from every labelled row
    so far (a batch of 50 texts over 77 classes holds few positives on its own). A single
    call on fresh rows is exactly `fit`'s pairs.
    """
    rng = np.random.RandomState(random_state)
    idx1, idx2, sim = generate_pairs(labels, n_neg=n_neg, n_pos=n_pos, random_state=rng)
    anchor = idx1 >= n_old
    budget = int(anchor.sum())  # the pairs fit would give the new rows
    if n_old == 0 or budget == 0:
        return idx1[anchor], idx2[anchor], sim[anchor]
    replayed = rng.choice(n_old, size=min(n_old, len(labels) - n_old), replace=False)
    anchor |= np.isin(idx1, replayed)
    picked = np.sort(rng.choice(np.flatnonzero(anchor), size=budget, replace=False))
    return idx1[picked], idx2[picked], sim[picked]
