"""embetter 0.9.1 parameter names get an error that says what replaces them."""

from __future__ import annotations

import pickle

import pytest
from sklearn.base import clone

from embetter.finetune import SbertLearner
from embetter.text import MatryoshkaEncoder, SentenceEncoder


@pytest.mark.parametrize(
    ("make", "name", "hint"),
    [
        (lambda: SentenceEncoder("all-MiniLM-L6-v2", quantize=True), "quantize", "backend='onnx'"),
        (lambda: SentenceEncoder(num_threads=1), "num_threads", "torch.set_num_threads"),
        (lambda: MatryoshkaEncoder(quantize=False), "quantize", "backend="),
        (lambda: SbertLearner("all-MiniLM-L6-v2", warmup_steps=100), "warmup_steps",
         "warmup_ratio"),
    ],
)
def test_a_0_9_1_parameter_names_its_replacement(make, name, hint):
    with pytest.raises(TypeError, match=f"got {name}=, a parameter of embetter 0.9.1") as e:
        make()
    assert hint in str(e.value)


def test_other_unknown_names_keep_python_s_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        SentenceEncoder(colour="red")


def test_the_check_leaves_construction_clone_and_pickle_alone():
    enc = SentenceEncoder("some-model", batch_size=8)
    assert clone(enc).get_params() == enc.get_params()
    assert pickle.loads(pickle.dumps(enc)).get_params() == enc.get_params()
    learner = SbertLearner("some-model", warmup_ratio=0.2)
    assert clone(learner).warmup_ratio == 0.2
    assert "warmup_steps" not in learner.get_params() and "quantize" not in enc.get_params()
