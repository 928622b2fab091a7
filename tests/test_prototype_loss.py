"""loss="prototype": a cosine softmax over the classes' mean embeddings, trained with the body."""

import numpy as np
import pytest
import torch

from embetter.finetune import SbertLearner, SbertTuner
from embetter.finetune._losses import MatryoshkaLoss, PrototypeLoss, learner_loss
from embetter.finetune._trainer import Rows


def same_class_pairs(texts, labels):
    codes = np.unique(labels, return_inverse=True)[1]
    order = np.argsort(codes, kind="stable")
    anchors, positives = order[:-1], order[1:]
    keep = codes[anchors] == codes[positives]
    return ([texts[i] for i in anchors[keep]], [texts[j] for j in positives[keep]],
            codes[anchors[keep]])


def test_prototypes_are_the_normalised_class_means_and_the_loss_their_softmax():
    z = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 2.0]])
    # texts 0 and 2 are class 0, text 1 class 2, text 3 is in no row: class 1 is absent
    rows = Rows(texts=list("abcd"), columns=[np.array([0, 1]), np.array([2, 1])],
                targets=np.array([0, 2]))
    loss = PrototypeLoss(model=None, scale=5.0)
    loss.prepare(lambda positions: z[torch.as_tensor(positions)], rows)
    mean0 = torch.nn.functional.normalize(z[0] + z[2], dim=0)
    torch.testing.assert_close(loss.prototypes[0], mean0)
    torch.testing.assert_close(loss.prototypes[2], z[1])
    assert loss.present.tolist() == [True, False, True]
    # the loss: cross-entropy of the scaled cosines over the present classes only
    e = torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    got = loss.compute_loss_from_embeddings([e], torch.tensor([2, 0]))
    cos = torch.nn.functional.normalize(e, dim=1) @ torch.stack([mean0, z[1]]).T
    expected = torch.nn.functional.cross_entropy(5.0 * cos, torch.tensor([1, 0]))
    torch.testing.assert_close(got, expected)
    # two columns: each text is classified, with its row's class
    both = loss.compute_loss_from_embeddings([e, e], torch.tensor([2, 0]))
    torch.testing.assert_close(both, expected)
    # Matryoshka: each cut is compared with the prototypes cut as long
    wrapped = MatryoshkaLoss(PrototypeLoss(model=None, scale=5.0), dims=[3, 2])
    wrapped.prepare(lambda positions: z[torch.as_tensor(positions)], rows)
    assert torch.isfinite(wrapped.compute_loss_from_embeddings([e], torch.tensor([2, 0])))
    with pytest.raises(RuntimeError, match="prepare"):
        PrototypeLoss(model=None).compute_loss_from_embeddings([e], torch.tensor([2, 0]))


def test_prototype_is_a_learner_loss_that_pulls_texts_to_their_class(tiny_model_path, labelled):
    texts, verbs = labelled
    X1, X2, y = same_class_pairs(texts, verbs)
    assert isinstance(learner_loss("prototype", model=None), PrototypeLoss)
    fitted = SbertLearner(tiny_model_path, loss="prototype", batch_size=8, epochs=4,
                          learning_rate=1e-3, random_state=0).fit(X1, X2, y)
    assert fitted.n_iter_ == 4 and np.isfinite(fitted.loss_curve_).all()
    assert fitted.loss_curve_[-1] < fitted.loss_curve_[0]  # the texts move to their classes
    again = SbertLearner(tiny_model_path, loss="prototype", batch_size=8, epochs=4,
                         learning_rate=1e-3, random_state=0).fit(X1, X2, y)
    np.testing.assert_array_equal(fitted.transform(texts[:4]), again.transform(texts[:4]))


def test_prototype_learner_rejects_what_it_cannot_train_on(tiny_model_path, labelled):
    texts, verbs = labelled
    X1, X2, y = same_class_pairs(texts, verbs)
    make = lambda: SbertLearner(tiny_model_path, loss="prototype")  # noqa: E731
    with pytest.raises(ValueError, match="y is required for loss='prototype'"):
        make().fit(X1, X2)
    with pytest.raises(ValueError, match="multi-label 0/1 rows need loss='supcon'"):
        make().fit(X1, X2, np.eye(3, dtype=int)[y % 3])
    with pytest.raises(ValueError, match="int class codes"):
        make().fit(X1, X2, np.full(len(X1), 0.5))
    with pytest.raises(ValueError, match="codes >= 0"):
        make().fit(X1, X2, y - 1)
    with pytest.raises(ValueError, match="only used by loss='supcon'"):
        make().fit(X1, X2, y, class_texts=["a"] * (int(y.max()) + 1))


def test_a_prototype_tuner_streams_and_rejects_multi_label(tiny_model_path, labelled):
    texts, verbs = labelled
    kw = dict(loss="prototype", batch_size=8, learning_rate=1e-3, label_texts=None,
              random_state=0)
    fitted = SbertTuner(tiny_model_path, **kw).fit(texts, verbs)
    assert fitted.learner_.loss == "prototype" and (fitted.n_pos_, fitted.n_neg_) == (4, 0)
    half = len(texts) // 2
    stream = SbertTuner(tiny_model_path, **kw).partial_fit(texts[:half], verbs[:half])
    stream.partial_fit(texts[half:], verbs[half:])
    assert stream.transform(texts[:3]).shape == (3, 32) and stream.n_pairs_ > 0
    Y = (verbs[:, None] == np.unique(verbs)[None, :]).astype(int)
    with pytest.raises(ValueError, match="loss='prototype' needs one label per text"):
        SbertTuner(tiny_model_path, **kw).fit(texts, Y)


def test_a_failed_first_call_leaves_the_tuner_unfitted(tiny_model_path, labelled):
    """A first `partial_fit` that fails (here: no class has two texts, so no positive pair)
    records nothing: `check_is_fitted` says so and a retry resolves its own pair counts."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    texts, verbs = labelled
    tuner = SbertTuner(tiny_model_path, loss="prototype", label_texts=None, random_state=0)
    with pytest.raises(ValueError, match="needs positive pairs"):
        tuner.partial_fit(texts[:3], ["cat", "dog", "owl"])
    assert not [k for k in vars(tuner) if k.endswith("_") and not k.startswith("_")]
    with pytest.raises(NotFittedError):
        check_is_fitted(tuner)
    tuner.set_params(n_pos=1).partial_fit(texts, verbs)
    assert tuner.n_pos_ == 1 and len(tuner.seen_texts_) == len(texts)


def test_nearest_mean_accuracy_leaves_each_text_out_of_its_own_class():
    from embetter.finetune._losses import nearest_mean_accuracy

    def at(*degrees):
        return np.array([[np.cos(np.radians(d)), np.sin(np.radians(d))] for d in degrees])

    # class a at 0 and 10 degrees, b at 90 and 50, c alone at 45: b's text at 50 is nearer
    # c (5 degrees) than the rest of b (90); c, alone in its class, is not scored
    z, y = at(0, 10, 90, 50, 45), np.array(["a", "a", "b", "b", "c"])
    assert nearest_mean_accuracy(z, y) == 0.75
    assert nearest_mean_accuracy(3.0 * z, y) == 0.75  # cosine: lengths do not count
    assert np.isnan(nearest_mean_accuracy(z[:3], np.array([0, 1, 2])))


def test_auto_loss_anchors_on_the_class_means_only_where_they_fit_the_texts(
        tiny_model_path, corpus):
    """With more classes than a batch holds, loss="auto" trains the prototype loss when the
    untrained model's class means classify the texts (prototypes_fit_the_texts), else supcon."""
    from sentence_transformers import SentenceTransformer

    from embetter.finetune._losses import prototypes_fit_the_texts

    texts = corpus[::8]
    nouns = np.array([t.split()[3] for t in texts])  # 5 classes the tiny model's means tell apart
    shuffled = np.random.default_rng(0).permutation(nouns)  # the same classes, at random
    kw = dict(batch_size=2, learning_rate=1e-3, label_texts=None, random_state=0)
    anchored = SbertTuner(tiny_model_path, **kw).fit(texts, nouns)
    assert anchored.loss_ == anchored.learner_.loss == "prototype"
    loose = SbertTuner(tiny_model_path, **kw).fit(texts, shuffled)
    assert loose.loss_ == loose.learner_.loss == "supcon"
    assert SbertTuner(tiny_model_path, **kw, loss="supcon").fit(texts, nouns).loss_ == "supcon"
    Y = (nouns[:, None] == np.unique(nouns)[None, :]).astype(int)  # multi-label: supcon
    assert SbertTuner(tiny_model_path, **kw).fit(texts, Y).loss_ == "supcon"
    model = SentenceTransformer(tiny_model_path, device="cpu")
    assert prototypes_fit_the_texts(model, texts, nouns, random_state=0, max_texts=30)
    assert not prototypes_fit_the_texts(model, texts, shuffled, random_state=0, max_texts=30)
