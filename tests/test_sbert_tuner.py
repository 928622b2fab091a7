"""SbertTuner: fine-tuning a sentence model on labelled texts, as a pipeline step."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from embetter.finetune import SbertLearner, SbertTuner
from embetter.text import SentenceEncoder
from tests._sbert_helpers import learner, tuner


def test_tuner_in_a_pipeline(tiny_model_path, labelled):
    texts, y = labelled
    pipe = make_pipeline(tuner(tiny_model_path, n_neg=2, n_pos=1), LogisticRegression(max_iter=500))
    pipe.fit(texts, y)
    step = pipe[0]
    assert step.n_pairs_ == len(texts) * 3  # n_pos + n_neg per text: linear, not quadratic
    assert step.transform(texts).shape == (len(texts), 32)
    assert list(step.get_feature_names_out()[:2]) == ["sberttuner0", "sberttuner1"]
    assert pipe.score(texts, y) > 0.5


def test_tuner_clone_pickle_and_seed(tiny_model_path, labelled):
    texts, y = labelled
    fitted = tuner(tiny_model_path).fit(texts, y)
    again = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(again.transform(texts), fitted.transform(texts))
    fresh = clone(fitted)
    assert not hasattr(fresh, "learner_") and fresh.get_params() == fitted.get_params()
    assert np.array_equal(fresh.fit(texts, y).transform(texts), fitted.transform(texts))


def test_tuner_grid_search(tiny_model_path, labelled):
    texts, y = labelled
    pipe = make_pipeline(tuner(tiny_model_path), LogisticRegression(max_iter=200))
    grid = GridSearchCV(pipe, {"sberttuner__n_neg": [1, 2]}, cv=2,
                        scoring=lambda est, X, y: est[0].n_neg_).fit(texts, y)
    assert grid.cv_results_["mean_test_score"].tolist() == [1, 2]  # each reached the tuner
    assert grid.best_params_["sberttuner__n_neg"] == 2
    assert grid.predict(texts[:3]).shape == (3,)


def test_tuner_mnrl_and_multilabel(tiny_model_path, labelled):
    texts, y = labelled
    fitted = tuner(tiny_model_path, loss="mnrl", batch_size=8).fit(texts, y)
    assert fitted.n_pairs_ == len(texts) * fitted.n_pos_  # positives only
    Y = np.stack([y == "likes", y == "hates", np.char.startswith(y, "f")], axis=1).astype(int)
    assert tuner(tiny_model_path, n_neg=1).fit(texts, Y).transform(texts[:2]).shape == (2, 32)


def test_tuner_bad_input(tiny_model_path, labelled):
    texts, y = labelled
    with pytest.raises(ValueError, match="y is required"):
        tuner(tiny_model_path).fit(texts, None)
    with pytest.raises(ValueError, match="y has 2 entries"):
        tuner(tiny_model_path).fit(texts, y[:2])
    with pytest.raises(ValueError, match="only one class"):
        tuner(tiny_model_path).fit(texts, np.zeros(len(texts)))
    with pytest.raises(ValueError, match="'n_neg' parameter"):
        tuner(tiny_model_path, n_neg=-1).fit(texts, y)
    with pytest.raises(ValueError, match="'loss' parameter"):
        tuner(tiny_model_path, loss="hinge").fit(texts, y)
    with pytest.raises(ValueError, match="label columns"):
        Y = np.eye(3, dtype=int)[np.arange(len(texts)) % 3]
        tuner(tiny_model_path).partial_fit(texts, Y).partial_fit(texts[:4], Y[:4, :2])


def test_tuner_supcon_trains_on_labelled_texts(tiny_model_path, labelled):
    texts, y = labelled
    fitted = tuner(tiny_model_path, loss="supcon", batch_size=8, epochs=2).fit(texts, y)
    assert fitted.n_iter_ == 2 and fitted.learner_.n_steps_ == 2 * -(-fitted.n_pairs_ // 8)
    assert all(np.isfinite(fitted.loss_curve_))
    before = SentenceEncoder(tiny_model_path).transform(texts)
    assert not np.allclose(fitted.transform(texts), before, atol=1e-4)
    Y = np.stack([y == "likes", y == "hates", np.char.startswith(y, "f")], axis=1).astype(int)
    assert tuner(tiny_model_path, loss="supcon").fit(texts, Y).transform(texts[:2]).shape == (2, 32)
    with pytest.raises(ValueError, match="needs positive pairs"):
        tuner(tiny_model_path, loss="supcon").fit(texts[:3], ["cat", "dog", "owl"])
    # one text per class: its label text is its positive
    names = {"cat": "a cat", "dog": "a dog", "owl": "an owl"}
    single = tuner(tiny_model_path, loss="supcon", label_texts=names).fit(
        texts[:3], ["cat", "dog", "owl"])
    assert single.n_pairs_ == 3 * single.n_pos_


def test_supervised_contrastive_loss_values():
    import torch

    from embetter.finetune._losses import SupervisedContrastiveLoss

    loss = SupervisedContrastiveLoss(model=None, scale=1.0)
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    same = loss.compute_loss_from_embeddings([z], torch.tensor([0, 0, 1, 1]))
    crossed = loss.compute_loss_from_embeddings([z], torch.tensor([0, 1, 0, 1]))
    # by hand: the positive has cosine 1, the two negatives cosine 0
    assert same.item() == pytest.approx(-np.log(np.e / (np.e + 2)), rel=1e-5)
    assert crossed.item() > same.item()
    alone = loss.compute_loss_from_embeddings([z], torch.tensor([0, 1, 2, 3]))
    assert alone.item() == 0.0  # nobody has a partner: nothing to learn, no NaN


def test_tuner_and_learner_tune_a_static_model(tiny_model_path, labelled):
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import StaticEmbedding
    from transformers import AutoTokenizer

    texts, y = labelled
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    static = SentenceTransformer(
        modules=[StaticEmbedding(tokenizer, embedding_dim=16)], device="cpu")
    before = static.encode(texts)
    for loss in ("cosine", "supcon"):
        fitted = tuner(static, loss=loss, learning_rate=1e-2).fit(texts, y)
        assert fitted.transform(texts).shape == (len(texts), 16)
        assert not np.allclose(fitted.transform(texts), before, atol=1e-4)  # it trained
    assert np.array_equal(static.encode(texts), before)  # on a copy
    X1, X2 = texts[:10], texts[10:20]
    learned = SbertLearner(static, learning_rate=1e-2, random_state=0).fit(
        X1, X2, (y[:10] == y[10:20]).astype(float))
    assert learned.n_iter_ == 1 and np.isfinite(learned.loss_curve_[0])
    again = pickle.loads(pickle.dumps(fitted))
    assert np.allclose(again.transform(texts), fitted.transform(texts), atol=1e-6)


def test_tuner_auto_loss_follows_the_number_of_classes(tiny_model_path, labelled):
    texts, y = labelled
    n_classes = np.unique(y).size
    few = tuner(tiny_model_path, batch_size=n_classes).fit(texts, y)
    many = tuner(tiny_model_path, batch_size=n_classes - 1).fit(texts, y)
    assert (few.loss, few.loss_, many.loss_) == ("auto", "cosine", "supcon")
    assert many.learner_.loss == "supcon"
    # a stream decides on its first call, from `classes` when given
    half = len(texts) // 2
    stream = tuner(tiny_model_path, batch_size=2).partial_fit(texts[:half], y[:half], classes=y)
    assert stream.loss_ == "supcon" and stream.partial_fit(texts[half:], y[half:]).loss_ == "supcon"
    with pytest.raises(ValueError, match="loss"):
        tuner(tiny_model_path, loss="triplet").fit(texts, y)


def test_label_texts_name_the_classes():
    from embetter.finetune._label_texts import name_as_text, resolve_label_texts

    assert name_as_text("card_arrival") == "card arrival"
    assert name_as_text("Sci/Tech") == "Sci Tech"
    assert name_as_text("AddToPlaylist") == "Add To Playlist"
    assert name_as_text("getWeather") == "get Weather" and name_as_text("HUM") == "HUM"
    assert name_as_text("42") is None and name_as_text(3) is None and name_as_text("_") is None
    classes = np.array(["joy", "sad_news"])
    assert resolve_label_texts("auto", classes, False) == {"joy": "joy", "sad_news": "sad news"}
    assert resolve_label_texts("auto", np.array(["joy", "7"]), False) == {}  # all or nothing
    assert resolve_label_texts("auto", np.array(["a_b", "a-b"]), False) == {}  # one text
    assert resolve_label_texts("auto", np.arange(2), True) == {}  # multi-label columns
    assert resolve_label_texts(None, classes, False) == {}
    given = {"joy": "happy", "sad_news": "bad news", "other": "unused"}
    assert resolve_label_texts(given, classes, False) == {"joy": "happy", "sad_news": "bad news"}
    with pytest.raises(ValueError, match=r"no text for the labels \['sad_news'\]"):
        resolve_label_texts({"joy": "happy"}, classes, False)
    with pytest.raises(ValueError, match="non-empty str"):
        resolve_label_texts({"joy": "happy", "sad_news": " "}, classes, False)


def test_label_text_pairs_point_at_own_and_other_classes():
    from embetter.finetune._label_texts import label_text_pairs

    codes = np.repeat(np.arange(4), 5)
    rows, named, sim = label_text_pairs(codes, np.arange(10, 20), 4, n_pos=2, n_neg=3, rng=0)
    assert len(rows) == 10 * 5 and set(rows) == set(range(10, 20))
    assert np.array_equal(sim == 1, codes[rows] == named)  # positives: own class only
    assert (sim == 1).sum() == 20 and set(named[sim == 0]) == {0, 1, 2, 3}
    Y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]])
    rows, named, sim = label_text_pairs(Y, np.arange(4), 3, n_pos=4, n_neg=4, rng=0)
    assert np.array_equal(Y[rows, named] == 1, sim == 1)
    # no labels: no positive; every label: no negative
    assert 2 not in rows[sim == 1] and 3 not in rows[sim == 0]
    assert (sim == 1).sum() == 3 * 4 and (sim == 0).sum() == 3 * 4


def test_tuner_trains_towards_label_texts(tiny_model_path, labelled):
    texts, y = labelled
    classes = np.unique(y)
    names = {c: f"it {c} things" for c in classes}
    named = tuner(tiny_model_path, label_texts=names).fit(texts, y)
    plain = tuner(tiny_model_path).fit(texts, y)
    assert named.label_texts_ == names and plain.label_texts_ == {}
    # n_pos + n_neg more per text with names; twice the auto counts without: one budget
    assert named.n_pairs_ == plain.n_pairs_ and plain.n_pos_ == 2 * named.n_pos_
    assert not np.allclose(named.transform(texts), plain.transform(texts), atol=1e-4)
    codes = np.searchsorted(classes, y)
    assert tuner(tiny_model_path, label_texts="auto").fit(texts, codes).label_texts_ == {}
    with pytest.raises(ValueError, match="'label_texts' parameter"):
        tuner(tiny_model_path, label_texts=["likes"]).fit(texts, y)
    with pytest.raises(ValueError, match="no text for the labels"):
        tuner(tiny_model_path, label_texts={classes[0]: "x"}).fit(texts, y)
    # a stream pairs each new text with label texts once: as many pairs as one fit
    half = len(texts) // 2
    stream = tuner(tiny_model_path, n_pos=0, n_neg=2, label_texts=names, refit_growth=None)
    stream.partial_fit(texts[:half], y[:half], classes=classes).partial_fit(texts[half:], y[half:])
    once = tuner(tiny_model_path, n_pos=0, n_neg=2, label_texts=names).fit(texts, y)
    assert stream.n_pairs_ == once.n_pairs_ == len(texts) * 2 * 2
    Y = np.stack([y == "likes", y == "hates"], axis=1).astype(int)
    multi = tuner(tiny_model_path, label_texts={0: "liking", 1: "hating"}).fit(texts, Y)
    assert multi.label_texts_ == {0: "liking", 1: "hating"}


TOPICS = {
    "sports": ["the team won the final", "a late goal decided the match",
               "she broke the sprint record", "the coach picked a new striker"],
    "cooking": ["simmer the sauce for ten minutes", "knead the dough until smooth",
                "season the soup with salt", "bake the bread at high heat"],
    "weather": ["heavy rain is expected tonight", "a cold front brings snow",
                "sunny skies and a light breeze", "storm warnings along the coast"],
}


def test_auto_label_texts_need_names_that_fit_the_texts():
    from embetter.finetune._label_texts import names_are_words, names_fit_the_texts
    from embetter.text._models import load_sentence_transformer

    model = load_sentence_transformer("all-MiniLM-L6-v2", "cpu")
    texts = [t for ts in TOPICS.values() for t in ts]
    targets = np.repeat(np.arange(3), 4)
    assert names_fit_the_texts(model, texts, targets, list(TOPICS), random_state=0)
    assert not names_fit_the_texts(model, texts, targets, ["QZX", "VKB", "JWP"], random_state=0)
    assert not names_fit_the_texts(model, texts, targets[::-1], list(TOPICS), random_state=0)
    # abbreviations are no words of the model's vocabulary, whatever the t-test says
    fits = dict(random_state=0, min_t=-np.inf)
    assert names_fit_the_texts(model, texts, targets, list(TOPICS), **fits)
    assert not names_fit_the_texts(model, texts, targets, ["SPRT", "CKNG", "WTHR"], **fits)
    assert names_fit_the_texts(model, texts, targets, ["SPRT", "CKNG", "WTHR"], **fits,
                               min_words=0)
    assert not names_are_words(model, ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"])
    assert names_are_words(model, ["ham", "spam"])  # "spam" is two pieces: half the names
    assert names_are_words(model, ["DESC manner", "LOC city", "NUM dist"])  # words in 2 of 3
    assert not names_are_words(model, ["ham", "spam"], min_share=0.6)
    # in the tuner: names kept (and, in a stream, for labels met later), codes dropped
    y = np.repeat(list(TOPICS), 4)
    fast = dict(max_seq_length=8, learning_rate=1e-5, n_pos=1, n_neg=1, random_state=0)
    kept = SbertTuner(**fast).partial_fit(texts[:8], y[:8])
    assert kept.label_texts_ == {"cooking": "cooking", "sports": "sports"}
    assert kept.partial_fit(texts[8:], y[8:]).label_texts_["weather"] == "weather"
    codes = np.array(["QZX", "VKB", "JWP"])[targets]
    assert SbertTuner(**fast).fit(texts, codes).label_texts_ == {}


def test_a_supcon_tuner_hands_its_learner_the_loss(tiny_model_path, labelled):
    texts, verbs = labelled
    tuner = SbertTuner(tiny_model_path, loss="supcon", epochs=1, batch_size=8,
                       label_texts=None, random_state=0).fit(texts, verbs)
    assert tuner.loss_ == "supcon" and tuner.learner_.loss == "supcon"
    assert tuner.n_pairs_ > 0 and tuner.transform(texts[:3]).shape == (3, 32)


def test_supcon_class_texts_join_every_batch(tiny_model_path, labelled):
    import torch

    from embetter.finetune._losses import SupervisedContrastiveLoss

    texts, verbs = labelled
    classes, codes = np.unique(verbs, return_inverse=True)
    X1, X2, y = texts[:-1], texts[1:], codes[:-1]
    names = [f"a text about {c}" for c in classes]
    fitted = learner(tiny_model_path, loss="supcon", batch_size=8).fit(
        X1, X2, y, class_texts=names)
    assert fitted.n_iter_ == 1 and np.isfinite(fitted.loss_curve_).all()
    # the class texts change what is learned: the same data without them trains otherwise
    plain = learner(tiny_model_path, loss="supcon", batch_size=8).fit(X1, X2, y)
    assert not np.allclose(fitted.transform(texts[:4]), plain.transform(texts[:4]), atol=1e-5)
    with pytest.raises(ValueError, match="only used by loss='supcon'"):
        learner(tiny_model_path, loss="cosine").fit(X1, X2, np.ones(len(X1)), class_texts=names)
    with pytest.raises(ValueError, match="a text for every class code"):
        learner(tiny_model_path, loss="supcon").fit(X1, X2, y, class_texts=names[:1])
    with pytest.raises(ValueError, match="non-empty"):
        learner(tiny_model_path, loss="supcon").fit(X1, X2, y, class_texts=[""] * len(names))
    # a batch with no pair of its own class still meets its class's text: a positive
    loss = SupervisedContrastiveLoss(model=None, scale=1.0, class_texts=["x", "y"])
    loss._encode_classes = lambda device: torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    aligned = loss.compute_loss_from_embeddings([z], torch.tensor([0, 1]))
    crossed = loss.compute_loss_from_embeddings([z], torch.tensor([1, 0]))
    assert float(aligned) < float(crossed)


def test_auto_pairs_grow_with_the_classes(tiny_model_path, labelled):
    texts, verbs = labelled
    two = np.where(verbs == verbs[0], "a", "b")
    named = {"a": "the first kind", "b": "the second kind"}
    assert tuner(tiny_model_path, label_texts=named).fit(texts, two).n_pos_ == 2
    # without label texts, the pairs they would have taken go to other texts
    assert tuner(tiny_model_path).fit(texts, two).n_pos_ == 4
    k = int(np.clip(np.unique(verbs).size, 2, 4))
    names = {v: f"it {v}" for v in np.unique(verbs)}
    many = tuner(tiny_model_path, label_texts=names).fit(texts, verbs)
    assert (many.n_pos_, many.n_neg_) == (k, k) and many.loss_ == "cosine"
    assert many.n_pairs_ == len(texts) * 2 * k * 2  # the texts' pairs and the names'
    unnamed = tuner(tiny_model_path).fit(texts, verbs)
    assert (unnamed.n_pos_, unnamed.n_neg_) == (2 * k, 2 * k)
    assert unnamed.n_pairs_ == many.n_pairs_  # as many steps either way
    supcon = tuner(tiny_model_path, loss="supcon", label_texts=names).fit(texts, verbs)
    assert (supcon.n_pos_, supcon.n_neg_) == (2, 0)
    assert tuner(tiny_model_path, loss="supcon").fit(texts, verbs).n_pos_ == 4
    fixed = tuner(tiny_model_path, n_pos=1, n_neg=3).fit(texts, verbs)
    assert (fixed.n_pos_, fixed.n_neg_) == (1, 3)
    with pytest.raises(ValueError, match="n_pos"):
        tuner(tiny_model_path, n_pos="many").fit(texts, verbs)


def test_auto_learning_rate_is_smaller_for_the_pair_loss_over_three_classes(tiny_model_path,
                                                                           labelled):
    from embetter.finetune._sbert_auto import (
        AUTO_LEARNING_RATE,
        AUTO_MULTICLASS_PAIR_LEARNING_RATE,
    )

    texts, verbs = labelled
    assert np.unique(verbs).size >= 3
    two = np.where(verbs == verbs[0], "a", "b")
    fast = dict(n_pos=1, n_neg=1, max_seq_length=8)
    assert SbertTuner().learning_rate == "auto"
    binary = tuner(tiny_model_path, learning_rate="auto", **fast).fit(texts, two)
    assert binary.learning_rate_ == binary.learner_.learning_rate == AUTO_LEARNING_RATE
    multi = tuner(tiny_model_path, learning_rate="auto", **fast).fit(texts, verbs)
    assert multi.learning_rate_ == multi.learner_.learning_rate
    assert multi.learning_rate_ == AUTO_MULTICLASS_PAIR_LEARNING_RATE < AUTO_LEARNING_RATE
    # in-batch losses train fewer pairs per text: the full step
    supcon = tuner(tiny_model_path, learning_rate="auto", loss="supcon", n_pos=1,
                   max_seq_length=8).fit(texts, verbs)
    assert supcon.learning_rate_ == AUTO_LEARNING_RATE
    # a number is used as given; a stream keeps the first call's choice
    assert tuner(tiny_model_path, learning_rate=3e-3, **fast).fit(texts, verbs).learning_rate_ \
        == 3e-3
    half = len(texts) // 2
    stream = tuner(tiny_model_path, learning_rate="auto", refit_growth=None, **fast)
    stream.partial_fit(texts[:half], verbs[:half], classes=np.unique(verbs))
    assert stream.partial_fit(texts[half:], verbs[half:]).learning_rate_ \
        == AUTO_MULTICLASS_PAIR_LEARNING_RATE
    with pytest.raises(ValueError, match="'learning_rate' parameter"):
        tuner(tiny_model_path, learning_rate="fast").fit(texts, verbs)
    with pytest.raises(ValueError, match="'learning_rate' parameter"):
        tuner(tiny_model_path, learning_rate=0).fit(texts, verbs)
