"""Fitted estimators and pipelines round-trip through skops files; unknown types are refused."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import make_pipeline

import embetter.external
import embetter.finetune
import embetter.grab
import embetter.model
import embetter.text
from embetter._skops import TRUSTED
from embetter._state_bytes import check_model_files
from embetter.finetune import (
    ContrastiveLearner,
    ContrastiveTuner,
    FeedForwardTuner,
    SbertLearner,
    SbertTuner,
)
from embetter.grab import ColumnGrabber
from embetter.text import SentenceEncoder
from embetter.utils import UntrustedTypesError, load_skops, save_skops, trusted_types


class Shifter(TransformerMixin, BaseEstimator):
    """A type nobody trusted: loading a file that holds it must be refused."""

    def fit(self, X, y=None):
        self.shift_ = 1.0
        return self

    def transform(self, X):
        return np.asarray(X) + self.shift_


def blobs(n=60, d=8, seed=0):
    rng = np.random.RandomState(seed)
    y = np.array(["a", "b", "c"] * (n // 3))
    centers = {label: rng.randn(d) * 3 for label in "abc"}
    X = np.stack([centers[label] for label in y]) + rng.randn(n, d)
    return X.astype(np.float32), y


def round_trip(obj, path):
    save_skops(obj, path)
    return load_skops(path)


@pytest.mark.parametrize("make", [
    lambda: FeedForwardTuner(n_epochs=3, random_state=0),
    lambda: ContrastiveTuner(epochs=2, random_state=0),
], ids=["feedforward", "contrastive"])
def test_head_tuners_round_trip(make, tmp_path):
    X, y = blobs()
    tuner = make().fit(X, y)
    back = round_trip(tuner, tmp_path / "tuner.skops")
    assert type(back) is type(tuner) and back is not tuner
    np.testing.assert_array_equal(back.transform(X), tuner.transform(X))
    np.testing.assert_array_equal(back.classes_, tuner.classes_)
    # the optimizer state travels too: partial_fit continues identically after a reload
    np.testing.assert_array_equal(back.partial_fit(X, y).transform(X),
                                  tuner.partial_fit(X, y).transform(X))


def test_contrastive_learner_round_trips(tmp_path):
    X, y = blobs()
    similar = (y[:30] == y[30:]).astype(float)
    learner = ContrastiveLearner(epochs=2, random_state=0).fit(X[:30], X[30:], similar)
    back = round_trip(learner, tmp_path / "learner.skops")
    np.testing.assert_array_equal(back.transform(X), learner.transform(X))


def test_sbert_learner_and_fine_tuned_tuner_round_trip(tiny_model_path, corpus, tmp_path):
    texts = corpus[::8]
    labels = np.array([t.split()[2] for t in texts])
    tuner = SbertTuner(tiny_model_path, n_neg=1, n_pos=1, learning_rate=1e-3,
                       random_state=0).fit(texts, labels)
    before = SentenceEncoder(tiny_model_path).transform(texts)
    assert not np.allclose(tuner.transform(texts), before)  # really fine-tuned
    back = round_trip(tuner, tmp_path / "sbert.skops")
    np.testing.assert_array_equal(back.transform(texts), tuner.transform(texts))
    tuner.partial_fit(texts[:6], labels[:6])  # a stream: the model is a weight average
    back = round_trip(tuner, tmp_path / "stream.skops")
    np.testing.assert_array_equal(back.transform(texts), tuner.transform(texts))
    assert back._average.weight == tuner._average.weight > 0  # the stream goes on from it

    learner = SbertLearner(tiny_model_path, learning_rate=1e-3, random_state=0)
    learner.fit(texts[:8], texts[8:16], [1.0, 0.0] * 4)
    back = round_trip(learner, tmp_path / "learner.skops")
    np.testing.assert_array_equal(back.transform(texts), learner.transform(texts))


def test_a_text_pipeline_round_trips_with_only_trusted_types(tiny_model_path, tmp_path):
    import pandas as pd

    X = pd.DataFrame({"text": ["a dog", "the cat", "old cars", "the news"] * 5})
    y = [0, 0, 1, 1] * 5
    pipe = make_pipeline(ColumnGrabber("text"), SentenceEncoder(tiny_model_path),
                         FeedForwardTuner(n_epochs=2, random_state=0)).fit(X, y)
    path = tmp_path / "pipe.skops"
    save_skops(pipe, path)
    assert set(sio.get_untrusted_types(file=path)) <= set(trusted_types())
    np.testing.assert_array_equal(load_skops(path).transform(X), pipe.transform(X))


def test_unknown_types_are_refused_by_name_unless_trusted(tmp_path):
    X, y = blobs()
    pipe = make_pipeline(Shifter(), FeedForwardTuner(n_epochs=1, random_state=0)).fit(X, y)
    path = tmp_path / "pipe.skops"
    save_skops(pipe, path)
    name = f"{Shifter.__module__}.Shifter"
    with pytest.raises(UntrustedTypesError, match=name.replace(".", r"\.")) as err:
        load_skops(path)
    assert err.value.types == [name]  # embetter's own types are trusted
    np.testing.assert_array_equal(load_skops(path, trust=True).transform(X), pipe.transform(X))


def test_saving_is_atomic_and_unsupported_objects_get_a_clear_error(tmp_path):
    path = tmp_path / "x.skops"
    save_skops(ColumnGrabber("text"), path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot save a Thing as skops"):
        import torch

        thing = type("Thing", (), {})()
        thing.weights = torch.zeros(2)  # a live tensor is not data skops can store
        save_skops(thing, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.skops"]


def test_a_disk_error_is_not_called_a_data_problem_and_tilde_paths_round_trip(tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    written = save_skops(ColumnGrabber("text"), "~/grab.skops")
    assert written == str(tmp_path / "grab.skops")
    assert load_skops("~/grab.skops").colname == "text"

    def full(obj, file):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sio, "dump", full)
    with pytest.raises(OSError, match="No space left"):
        save_skops(ColumnGrabber("text"), "~/grab.skops")
    assert load_skops(written).colname == "text"  # the old file is intact


def test_the_trusted_list_covers_every_public_estimator():
    # A new estimator must be added to TRUSTED (after checking that rebuilding it from its
    # state runs no code the file names), or this fails and says which one.
    names = set(trusted_types())
    assert len(names) == len(TRUSTED)
    for module in (
        embetter.grab, embetter.text, embetter.finetune, embetter.model, embetter.external
    ):
        public = getattr(module, "__all__", None) or [
            name for name, obj in vars(module).items()
            if getattr(obj, "__module__", None) == module.__name__ and not name.startswith("_")
        ]
        for cls in (getattr(module, name) for name in public):
            if inspect.isclass(cls) and issubclass(cls, BaseEstimator):
                assert f"{cls.__module__}.{cls.__qualname__}" in names, cls


@pytest.mark.parametrize("files, needle", [
    ({"pytorch_model.bin": b""}, "pytorch_model.bin"),
    ({"custom.py": b""}, "custom.py"),
    ({"../escape.json": b"{}"}, "escape"),
    ({"C:/Users/me/escape.json": b"{}"}, "escape"),  # a Windows drive: outside the folder
    ({"C:escape.json": b"{}"}, "escape"),
    ({"a//escape.json": b"{}"}, "escape"),
    ({"modules.json": json.dumps([{"type": "os.system"}]).encode()}, "os.system"),
    # an allowed module class whose folder is elsewhere on the machine
    *[({"modules.json": json.dumps([{"type": "sentence_transformers.models.Transformer",
                                     "path": where}]).encode()}, "leads out")
      for where in ("/home/me/other_model", "../other_model", "C:/models/x", "\\server\\x")],
])
def test_model_files_that_could_run_code_are_refused(files, needle):
    with pytest.raises(ValueError, match=needle):
        check_model_files(files)


def test_a_saved_sentence_model_passes_the_check(tiny_model_path, tmp_path):
    from embetter.finetune._sbert_model import model_to_bytes

    model = SentenceEncoder(tiny_model_path).model_
    files = model_to_bytes(model)
    assert check_model_files(files) is files and "modules.json" in files


@pytest.mark.parametrize("name", ["OpenAIEncoder", "CohereEncoder", "OllamaEncoder"])
def test_hosted_encoders_load_as_trusted_types_without_their_key(tmp_path, name):
    # A hosted-API encoder in a shared skops file: trusted, and the key never travels.
    encoder = getattr(embetter.external, name)(model="some-model", api_key="sk-secret-123")
    path = save_skops(make_pipeline(ColumnGrabber("text"), encoder), tmp_path / "hosted.skops")
    assert b"sk-secret-123" not in Path(path).read_bytes()
    loaded = load_skops(path)[-1]
    assert type(loaded) is type(encoder)
    assert loaded.model == "some-model" and loaded.api_key is None


@pytest.mark.parametrize("name, param", [("OpenAIEncoder", "base_url"),
                                         ("CohereEncoder", "base_url"),
                                         ("OllamaEncoder", "base_url"),
                                         ("AzureOpenAIEncoder", "azure_endpoint")])
def test_a_file_cannot_send_your_key_to_an_address_it_chose(tmp_path, name, param):
    """The key never travels, but the address does: an encoder whose server the file names
    would send the key from your environment there, so loading one needs trust."""
    from embetter.utils import UntrustedAddressError

    address = "http://127.0.0.1:9/v1"
    encoder = getattr(embetter.external, name)(model="some-model", **{param: address})
    pipe = make_pipeline(ColumnGrabber("text"), make_pipeline(encoder))  # nested, too
    path = save_skops(pipe, tmp_path / "hosted.skops")
    with pytest.raises(UntrustedAddressError, match=f"{name}\\({param}='{address}'\\)") as e:
        load_skops(path)
    assert isinstance(e.value, ValueError) and e.value.addresses
    assert getattr(load_skops(path, trust=True)[-1][-1], param) == address
