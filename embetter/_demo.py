"""`embetter demo`: a few hundred labels pull the classes of an embedding space apart.

The story, offline: encode the bundled support-inbox messages with the bundled model, fit
the tuners on the training half, and compare held-out accuracy of a logistic regression and
of 5-nearest-neighbours on the raw and on the tuned embeddings; then draw both spaces.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from embetter._files import (
    UsageError,
    atomic_path,
    check_out_folder,
    labelled_texts,
    read_table,
    stdout_to_devnull,
)

TEST_SIZE = 0.5
#: rows of its largest class the demo needs: half are held out, and the regression's C is
#: chosen by 3-fold cross-validation on the other half
MIN_LARGEST_CLASS = 6
BUNDLED = "the bundled support inbox (embetter.datasets.load_support_inbox)"


def load_dataset(path) -> tuple[list[str], np.ndarray]:
    """The texts and labels of a `text,label` CSV."""
    df = read_table(path)  # cells as written: "007" and "7" are two classes
    absent = [name for name in ("text", "label") if name not in df.columns]
    if absent:
        raise UsageError(
            f"{path}: no {' or '.join(repr(a) for a in absent)} column; `demo --data` reads a "
            f"CSV with the columns text,label (its columns are: "
            f"{', '.join(map(str, list(df.columns)[:20]))})")
    # rows not labelled yet are left out, as `finetune` leaves them
    texts, labels = labelled_texts(df, "text", "label", path, _say)
    return texts, np.asarray([str(v) for v in labels], dtype=object)


#: the regression's C where the training rows are too few to cross-validate it
FIXED_C = 10


def cv_folds(y_train) -> list | None:
    """Folds to choose the regression's C on: stratified 3-fold (fewer when a class has fewer
    rows), so that every training fold holds two classes or more. Rows of a one-row class
    are stratified with the largest class (or together, when only one class has more);
    `None` when even that leaves nothing to stratify (C is then `FIXED_C`)."""
    from sklearn.model_selection import StratifiedKFold

    labels, counts = np.unique(y_train, return_counts=True)
    single = set(labels[counts == 1].tolist())
    # where one-row rows go: with the largest class, or (one larger class) a stratum of theirs
    joined = str(labels[np.argmax(counts)]) if (counts >= 2).sum() >= 2 else "\0one-row"
    strata = np.array([joined if y in single else str(y) for y in y_train])
    rarest = int(np.unique(strata, return_counts=True)[1].min())
    if rarest < 2 or np.unique(strata).size < 2:
        return None
    return list(StratifiedKFold(min(3, rarest)).split(np.zeros(len(strata)), strata))


def _scores(X_train, y_train, X_test, y_test, folds) -> tuple[float, float]:
    """Held-out accuracy of a logistic regression (C cross-validated on `folds`) and of
    cosine 5-NN."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier

    # A cross-validated C: plain C=1 under-fits unit-norm sentence embeddings and would
    # flatter the tuned spaces.
    logreg = (LogisticRegression(C=FIXED_C, max_iter=2000) if folds is None else
              GridSearchCV(LogisticRegression(max_iter=2000), {"C": [0.1, 1, 10, 100]},
                           cv=folds))
    knn = KNeighborsClassifier(n_neighbors=5, metric="cosine")
    return tuple(
        float(np.mean(clf.fit(X_train, y_train).predict(X_test) == y_test))
        for clf in (logreg, knn)
    )


def _save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _say(message: str = "") -> None:
    """Print a line of the story; a reader that stopped (`| head`) stops the printing, not
    the demo: the plots are still written (and the exit code says so)."""
    try:
        print(message, flush=True)
    except BrokenPipeError:
        stdout_to_devnull()


def run_demo(out_dir="demo-output", sbert=False, seed=0, data=None,
             model="all-MiniLM-L6-v2", progress=True) -> int:
    """Run the demo story and print its table; returns the exit code (`progress`: draw the
    encoder's progress bar)."""
    from embetter.plot import _figure_class

    _figure_class()  # fail in the first second, not after the training, when matplotlib is absent
    started = time.perf_counter()
    if data is None:
        from embetter.datasets import load_support_inbox

        path = BUNDLED
        texts, labels = load_support_inbox()
    else:
        path = data
        texts, labels = load_dataset(data)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise UsageError(f"{path}: the label column holds a single class; the demo needs two")
    counts = Counter(labels)
    rare = min(counts, key=counts.get)
    if counts[rare] < 2:  # half of each class is held out
        raise UsageError(
            f"{path}: class {rare!r} has {counts[rare]} row(s); the demo needs at least 2 per "
            "class")
    if max(counts.values()) < MIN_LARGEST_CLASS:  # the regression's C is cross-validated
        raise UsageError(
            f"{path}: every class has fewer than {MIN_LARGEST_CLASS} rows; the demo needs at "
            "least one that large")
    if out_dir is not None:  # before any work: the plots come last
        check_out_folder(out_dir)

    from sklearn.model_selection import train_test_split

    from embetter.finetune import ContrastiveTuner, FeedForwardTuner
    from embetter.plot import projection
    from embetter.text import SentenceEncoder

    idx_train, idx_test = train_test_split(
        np.arange(len(texts)), test_size=TEST_SIZE, random_state=seed, stratify=labels
    )
    y_train, y_test = labels[idx_train], labels[idx_test]
    if len(idx_train) < 5:  # 5-NN scores every space: refused now, not after the training
        raise UsageError(
            f"{path}: {len(texts)} rows leave {len(idx_train)} for training; the demo's 5-NN "
            "needs at least 5 (give it at least 10 rows)")
    _say(f"embetter demo: do {len(idx_train)} labels pull the classes of an embedding space apart?")
    _say(f"data: {len(texts)} texts from {path}, {len(classes)} labels: {', '.join(classes)}")
    _say(f"      {len(idx_train)} for training, {len(idx_test)} held out for testing (seed {seed})")
    _say(f"encoding all texts with {model} ...")
    encoder = SentenceEncoder(model, show_progress_bar=bool(progress))
    t0 = time.perf_counter()
    X = encoder.transform(texts)
    _say(f"      {X.shape[0]} texts -> {X.shape[1]} dimensions in {time.perf_counter() - t0:.1f} s")
    X_train, X_test = X[idx_train], X[idx_test]

    spaces = [("raw", f"raw {Path(model).name}", None, X_test, X_train)]
    tuners = [("feedforward", FeedForwardTuner(random_state=seed)),
              ("contrastive", ContrastiveTuner(random_state=seed))]
    for key, tuner in tuners:
        _say(f"fitting {type(tuner).__name__} ...")
        t0 = time.perf_counter()
        tuner.fit(X_train, y_train)
        seconds = time.perf_counter() - t0
        spaces.append((key, f"{type(tuner).__name__}", seconds,
                       tuner.transform(X_test), tuner.transform(X_train)))
    if sbert:
        from embetter.finetune import SbertTuner

        tuner = SbertTuner(sent_tfm=model, random_state=seed)
        train_texts = [texts[i] for i in idx_train]
        test_texts = [texts[i] for i in idx_test]
        _say(f"fitting SbertTuner (fine-tunes {model} itself) ...")
        t0 = time.perf_counter()
        tuner.fit(train_texts, y_train)
        seconds = time.perf_counter() - t0
        spaces.append(("sbert", "SbertTuner", seconds,
                       tuner.transform(test_texts), tuner.transform(train_texts)))

    folds = cv_folds(y_train)
    how = (f"C={FIXED_C}, too few rows per class to cross-validate it" if folds is None else
           f"C chosen by {len(folds)}-fold CV")
    _say()
    _say(f"held-out accuracy on {len(idx_test)} texts "
         f"(LogReg: logistic regression, {how}; 5-NN: cosine)")
    header = f"  {'space':<24} {'dims':>5} {'fit (s)':>8} {'LogReg':>7} {'5-NN':>7}"
    _say(header)
    _say("  " + "-" * (len(header) - 2))
    raw_knn = None
    for _key, name, seconds, Xte, Xtr in spaces:
        logreg, knn = _scores(Xtr, y_train, Xte, y_test, folds)
        raw_knn = knn if raw_knn is None else raw_knn
        fit = "-" if seconds is None else f"{seconds:.1f}"
        gain = "" if seconds is None else f"  ({100 * (knn - raw_knn):+.1f} pts 5-NN vs raw)"
        _say(f"  {name:<24} {Xte.shape[1]:>5} {fit:>8} {logreg:>7.3f} {knn:>7.3f}{gain}")

    if out_dir is None:  # no plots asked for
        _say(f"done in {time.perf_counter() - started:.0f} s")
        return 0
    out = Path(out_dir)
    _say()
    _say(f"plots (PCA of the {len(idx_test)} test embeddings, coloured by label):")
    for key, name, _seconds, Xte, _Xtr in spaces:
        title = f"{name}: test embeddings (PCA)"
        target = out / f"{key}.png"
        _save_png(projection(Xte, y_test, title=title, classes=classes), target)
        _say(f"  {target}")
    _say(f"done in {time.perf_counter() - started:.0f} s")
    return 0
