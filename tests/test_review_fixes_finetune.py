"""Fixes from a review of the tuners and learners: each test failed on the code before its
fix."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from embetter.finetune import ContrastiveLearner, ContrastiveTuner, FeedForwardTuner
from tests._sbert_helpers import learner, tuner

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 8)).astype(np.float32)
Y = np.zeros((60, 3), dtype=int)
Y[np.arange(60), np.arange(60) % 3] = 1


def test_a_contrastive_stream_refuses_balanced_pairs_for_multi_label_rows():
    # the sampler's error was taken for "one class so far": every call trained nothing
    with pytest.raises(ValueError, match="strategy='balanced' needs single-label y"):
        ContrastiveTuner(strategy="balanced", random_state=0).partial_fit(X, Y)
    with pytest.raises(ValueError, match="n_neg and n_pos are both 0"):  # ZeroDivisionError
        ContrastiveTuner(n_pos=0, n_neg=0).partial_fit(X, np.arange(60) % 2)
    stream = ContrastiveTuner(random_state=0).partial_fit(X[:5], [0] * 5, classes=[0, 1])
    assert stream.n_iter_ == 0  # one class so far: nothing to contrast, as before


def test_sentence_model_pickled_for_a_gpu_loads_on_a_cpu_only_machine(tiny_model_path, corpus,
                                                                      monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fitted = learner(tiny_model_path, loss="mnrl", batch_size=8, device="cpu")
    fitted.fit(corpus[:8], corpus[8:16])
    fitted.set_params(device="cuda")  # as if it had trained on a GPU
    again = pickle.loads(pickle.dumps(fitted))
    assert again.model_.device.type == "cpu"
    np.testing.assert_allclose(again.transform(corpus[:3]),
                               fitted.set_params(device="cpu").transform(corpus[:3]), atol=1e-5)
    head = FeedForwardTuner(hidden_dim=4, n_epochs=1, random_state=0).fit(X, np.arange(60) % 2)
    assert pickle.loads(pickle.dumps(head.set_params(device="cuda"))).device_.type == "cpu"


def test_contrastive_learner_saves_numpy_scalar_parameters_as_plain_values(tmp_path):
    X1, X2 = X[:30], X[30:]
    y = (np.arange(30) % 2).astype(float)
    fitted = ContrastiveLearner(epochs=2, random_state=0, learning_rate=np.float64(1e-3),
                                shape_out=np.int64(4), early_stopping=np.bool_(False))
    fitted.fit(X1, X2, y)
    back = ContrastiveLearner.load(fitted.save(tmp_path / "cl.pt"))
    assert back.get_params()["shape_out"] == 4 and type(back.shape_out) is int
    np.testing.assert_allclose(back.transform(X1), fitted.transform(X1), atol=1e-6)


def test_difference_classifier_fits_its_encoder_on_dataframes():
    from sklearn.pipeline import make_pipeline

    from embetter.grab import ColumnGrabber
    from embetter.model import DifferenceClassifier
    from embetter.text import LiteTextEncoder

    texts = [f"refund my order number {i}" for i in range(20)] + [
        f"where is parcel {i}" for i in range(20)]
    enc = make_pipeline(ColumnGrabber("text"), LiteTextEncoder(n_components=4, random_state=0))
    left, right = pd.DataFrame({"text": texts[::2]}), pd.DataFrame({"text": texts[1::2]})
    model = DifferenceClassifier(enc).fit(left, right, np.arange(20) % 2)
    assert model.predict_proba(left, right).shape == (20, 2)


def test_sbert_stream_refuses_multi_label_rows_after_1d_labels(tiny_model_path, corpus):
    stream = tuner(tiny_model_path, batch_size=8, device="cpu", loss="cosine")
    stream.partial_fit(corpus[:8], np.array(["a", "b"] * 4))
    with pytest.raises(ValueError, match="multi-label .2-D. but earlier batches were 1-D"):
        stream.partial_fit(corpus[8:12], np.eye(2, dtype=int)[[0, 1, 0, 1]])  # IndexError


def test_contrastive_learner_refuses_scores_a_cosine_cannot_reach():
    with pytest.raises(ValueError, match=r"loss='cosine' needs scores in \[-1, 1\]"):
        ContrastiveLearner(loss="cosine").fit(X[:30], X[30:], np.linspace(0, 5, 30))


def test_sbert_inputs_refuse_an_eval_set_without_scores_and_non_binary_rows():
    from embetter.finetune._sbert_inputs import check_classes, check_eval_set

    with pytest.raises(ValueError, match="eval_set's y must hold a similarity score"):
        check_eval_set((["a", "b"], ["c", "d"], None))
    with pytest.raises(ValueError, match="must hold 0/1 rows"):
        check_classes(np.array([[3, -1], [0, 7]]), 2, "supcon")


def test_mining_leaves_the_callers_model_in_training_mode(tiny_model_path, corpus):
    from sentence_transformers import SentenceTransformer

    from embetter.finetune import mine_hard_negatives

    model = SentenceTransformer(tiny_model_path, device="cpu")
    model.train()
    mine_hard_negatives(corpus[:10], corpus[10:20], model, margin=None)
    assert model.training


@pytest.mark.parametrize("make, param", [
    (lambda: FeedForwardTuner(hidden_dim=16, n_epochs=1, random_state=0), "hidden_dim"),
    (lambda: ContrastiveTuner(hidden_dim=16, epochs=1, random_state=0), "hidden_dim"),
])
def test_output_width_is_the_fitted_networks_until_a_refit(make, param):
    head = make().fit(X, np.arange(60) % 2)
    head.set_params(**{param: 32})
    assert head.transform(X).shape == (60, 16) and head.transform(X[:0]).shape == (0, 16)
    assert len(head.get_feature_names_out()) == 16
    assert head.set_output(transform="pandas").transform(X).shape == (60, 16)
    assert head.fit(X, np.arange(60) % 2).set_output(transform="default").transform(X).shape \
        == (60, 32)


def test_contrastive_tuner_validates_on_pairs_among_the_held_out_rows():
    y = np.arange(60) % 3
    head = ContrastiveTuner(early_stopping=True, epochs=2, random_state=0)
    seen, items = [], head._items

    def spy(rows, anchors, partners=None):
        table, draw = items(rows, anchors, partners)
        seen.append((set(anchors().tolist()), draw))
        return table, draw

    head._items = spy
    head.fit(X, y)
    held, draw = seen[0]  # the validation pairs are drawn first
    i, j, _ = draw()
    assert len(held) == 6 and set(i.tolist()) | set(j.tolist()) <= held  # partners held too


def test_sbert_tuner_says_it_needs_y_in_its_tags(tiny_model_path):
    from sklearn.utils import get_tags

    assert get_tags(tuner(tiny_model_path)).target_tags.required


def test_sbert_stream_may_start_with_one_of_its_declared_classes(tiny_model_path, corpus):
    from embetter.text import SentenceEncoder

    stream = tuner(tiny_model_path, batch_size=8, device="cpu", refit_growth=None)
    stream.partial_fit(corpus[:8], ["a"] * 8, classes=["a", "b"])  # refused before
    assert stream.n_pairs_ == 0 and stream.n_iter_ == 0  # nothing to contrast yet
    np.testing.assert_allclose(stream.transform(corpus[:3]),
                               SentenceEncoder(tiny_model_path, device="cpu").transform(
                                   corpus[:3]), atol=1e-5)
    stream.partial_fit(corpus[8:16], ["a", "b"] * 4)
    assert stream.n_pairs_ > 0 and stream.n_iter_ == 1
    with pytest.raises(ValueError, match=r"only one class \('a' x 8\)"):  # without classes=
        tuner(tiny_model_path, batch_size=8).partial_fit(corpus[:8], ["a"] * 8)


def test_sbert_stream_starting_with_one_class_decides_its_choices_with_two(
        tiny_model_path, corpus):
    start = tuner(tiny_model_path, batch_size=8, device="cpu", refit_growth=None,
                  label_texts="auto")
    start.partial_fit(corpus[:8], ["likes"] * 8, classes=["hates", "likes"])
    start.partial_fit(corpus[8:16], ["hates", "likes"] * 4)
    both = tuner(tiny_model_path, batch_size=8, device="cpu", refit_growth=None,
                 label_texts="auto")
    both.partial_fit(corpus[:8] + corpus[8:16], ["likes"] * 8 + ["hates", "likes"] * 4,
                     classes=["hates", "likes"])
    # the second call is the stream's real start: the same as one call on all 16 texts
    assert start.label_texts_ == both.label_texts_ and start.n_pairs_ == both.n_pairs_
    assert start.loss_ == both.loss_ and start.refit_rows_ == 16
    np.testing.assert_allclose(start.transform(corpus[:4]), both.transform(corpus[:4]),
                               atol=1e-5)  # no pretrained weights averaged in
    multi = tuner(tiny_model_path, batch_size=8, device="cpu")
    multi.partial_fit(corpus[:4], np.array([[1, 0]] * 4))  # one label set so far: accepted
    assert multi.n_pairs_ == 0
    with pytest.raises(ValueError, match="one distinct label set"):  # but not for fit
        tuner(tiny_model_path, batch_size=8).fit(corpus[:4], np.array([[1, 0]] * 4))


# -- a second review: the calls users bring from the sentence-transformers pages ------------
@pytest.mark.parametrize("loss, ours", [("CosineSimilarityLoss", "loss='cosine'"),
                                        ("MultipleNegativesRankingLoss", "loss='mnrl'"),
                                        ("TripletLoss", "negatives=")])
@pytest.mark.parametrize("kind", ["learner", "tuner"])
def test_sentence_transformers_loss_names_point_to_ours(tiny_model_path, loss, ours, kind):
    from embetter.finetune import SbertLearner, SbertTuner

    with pytest.raises(ValueError, match=f"sentence-transformers' class name; here pass .*{ours}"):
        if kind == "learner":
            SbertLearner(tiny_model_path, loss=loss).fit(["a b", "c d"], ["a", "c"], [1, 0])
        else:
            SbertTuner(tiny_model_path, loss=loss).fit(["a b", "c d"], [0, 1])


def test_a_loss_object_is_refused_with_its_name(tiny_model_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    from embetter.finetune import SbertLearner

    model = SentenceTransformer(tiny_model_path, device="cpu")
    with pytest.raises(TypeError, match="not a CosineSimilarityLoss object: pass loss='cosine'"):
        SbertLearner(model, loss=losses.CosineSimilarityLoss(model)).fit(["a"], ["b"], [1.0])


def test_pair_errors_speak_of_pairs_and_triplets(tiny_model_path):
    from embetter.finetune import ContrastiveLearner, SbertLearner

    with pytest.raises(ValueError, match="y has 3 entries but X1 and X2 hold 2 pairs"):
        SbertLearner(tiny_model_path).fit(["a", "b"], ["c", "d"], [1, 0, 1])
    X = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="y has 3 entries but X1 and X2 hold 2 pairs"):
        ContrastiveLearner().fit(X, X, [1, 0, 1])
    with pytest.raises(ValueError, match=r"got dtype <U1; for \(anchor, positive, negative\) "
                                         r"triplets pass .*negatives="):
        SbertLearner(tiny_model_path, loss="mnrl").fit(["a", "b"], ["c", "d"], ["e", "f"])


def test_a_fit_of_one_step_trains_the_model(tiny_model_path, corpus):
    # 16 pairs at the defaults are one step, all of it warm-up: its rate was 0, nothing moved
    import torch

    from embetter.finetune import SbertLearner

    fitted = SbertLearner(tiny_model_path, random_state=0).fit(
        corpus[:16], corpus[16:32], [1.0, 0.0] * 8)
    assert fitted.n_steps_ == 1
    from sentence_transformers import SentenceTransformer

    before = SentenceTransformer(tiny_model_path, device="cpu")
    fitted_weights = torch.cat([p.flatten() for p in fitted.model_.parameters()])
    untrained = torch.cat([p.flatten() for p in before.parameters()])
    assert not torch.allclose(fitted_weights, untrained)


@pytest.mark.parametrize("name, hint", [
    ("BatchHardTripletLoss", r"SbertTuner\(loss='supcon'\)"),
    ("BatchAllTripletLoss", r"SbertTuner\(loss='supcon'\)"),
    ("MegaBatchMarginLoss", "loss='mnrl'"),
    ("SoftmaxLoss", "loss='contrastive'"),
    ("AnglELoss", "loss='cosent'"),
    ("infonce", "ContrastiveLearner's 'infonce'"),
    ("triplet", "not a name here; here pass loss='mnrl'"),
])
def test_more_loss_names_from_elsewhere_get_a_pointer(name, hint):
    # before: scikit-learn's generic "must be a str among {...}"
    from embetter.finetune import SbertLearner

    with pytest.raises(ValueError, match=hint):
        SbertLearner("unused", loss=name).fit(["a"], ["b"], [1.0])


def test_several_negatives_per_anchor_get_the_way_to_pass_them():
    from embetter.finetune import SbertLearner

    with pytest.raises(ValueError, match=r"negatives\[0\] holds several texts.*repeat the anchor"):
        SbertLearner("unused", loss="mnrl").fit(["a", "b"], ["c", "d"],
                                                negatives=[["e", "f"], ["g", "h"]])


def test_embeddings_given_where_texts_go_are_named(tiny_model_path, corpus):

    fitted = learner(tiny_model_path, loss="mnrl", batch_size=8, device="cpu")
    fitted.fit(corpus[:8], corpus[8:16])
    with pytest.raises(ValueError, match="embeddings\\? this step encodes texts itself"):
        fitted.transform(np.zeros((4, 32), dtype=np.float32))


def test_prototype_codes_need_not_run_from_zero(tiny_model_path, corpus):
    # before: a table of codes.max() + 1 rows: 10**12 asked torch for 128 TB
    from embetter.finetune import SbertLearner

    big = SbertLearner(tiny_model_path, loss="prototype", random_state=0).fit(
        corpus[:4], corpus[4:8], [0, 0, 10**12, 10**12])
    small = SbertLearner(tiny_model_path, loss="prototype", random_state=0).fit(
        corpus[:4], corpus[4:8], [0, 0, 1, 1])
    assert big.loss_curve_ == small.loss_curve_


def test_supcon_class_texts_train_with_matryoshka_dims(tiny_model_path, corpus):
    # before: "Sizes of tensors must match": the class texts stayed full width
    from embetter.finetune import SbertLearner

    fitted = SbertLearner(tiny_model_path, loss="supcon", matryoshka_dims=[32, 16],
                          random_state=0).fit(corpus[:4], corpus[4:8], [0, 1, 0, 1],
                                              class_texts=["good", "bad"])
    assert fitted.n_steps_ == 1


def test_an_interrupted_learner_stream_call_puts_weights_and_optimizer_back(tiny_model_path,
                                                                            corpus):
    # before: the weights kept the half-finished update, and the saved AdamW moments, shared
    # with the optimizer on the CPU, had moved with it
    import copy

    import torch

    from embetter.finetune import SbertLearner

    X1, X2, y = corpus[:16], corpus[16:32], [1.0, 0.0] * 8
    fitted = SbertLearner(tiny_model_path, random_state=0, learning_rate=1e-3, batch_size=4,
                          device="cpu").fit(X1, X2, y)
    weights = {k: v.clone() for k, v in fitted.model_.state_dict().items()}
    moments = copy.deepcopy(fitted._optimizer_state)
    calls = [0]

    def interrupt(module, inputs, output):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt

    hook = fitted.model_.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        fitted.partial_fit(X1, X2, y)
    hook.remove()
    for key, value in fitted.model_.state_dict().items():
        assert torch.equal(value, weights[key]), key
    for key, state in fitted._optimizer_state["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(moments["state"][key][name]))


def test_a_device_set_in_mid_stream_is_taken_at_the_next_call(tiny_model_path, corpus):
    # before: ignored until a retrain took it silently (or crashed then, for a bad name);
    # then refused for good (a stream trained on a GPU could not go on on a CPU): now the
    # next call trains there, and a bad name fails that call, leaving the stream as it was
    stream = tuner(tiny_model_path, device="cpu", refit_growth=None).partial_fit(
        corpus[:8], [0, 1] * 4)
    before = stream.transform(corpus[:4])
    stream.set_params(device="bogus")
    with pytest.raises(ValueError, match="device"):
        stream.partial_fit(corpus[8:16], [0, 1] * 4)
    np.testing.assert_array_equal(stream.transform(corpus[:4]), before)
    assert stream.n_iter_ == 1
    stream.set_params(device="cpu").partial_fit(corpus[8:16], [0, 1] * 4)
    assert stream.n_iter_ == 2


def test_max_seq_length_of_one_is_refused():
    # a tokenizer cannot cut to 1 token beside its special tokens: it trained uncut
    from sklearn.utils._param_validation import InvalidParameterError

    from embetter.finetune import SbertLearner

    with pytest.raises(InvalidParameterError, match="max_seq_length"):
        SbertLearner("unused", max_seq_length=1).fit(["a"], ["b"], [1.0])


def test_prototypes_count_a_text_repeated_under_two_labels_for_both(tiny_model_path):
    # a repeated text kept one code (the last): its other class had no prototype, and the
    # check for that refused the fit
    from embetter.finetune import SbertLearner

    fitted = SbertLearner(tiny_model_path, loss="prototype", batch_size=4, random_state=0).fit(
        ["the cat sat", "the cat sat", "a dog ran"], ["cats sit", "cats sit", "dogs run"],
        [0, 1, 1])
    assert fitted.n_steps_ == 1
