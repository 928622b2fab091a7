"""Fixes from a review of small calls (1-32 texts, many times: a notebook, a labelling loop):
each test failed on the code before its fix. The seconds saved are benchmarks' business
(benchmarks/encode_speed.py); these check the work that is no longer done."""

from __future__ import annotations

import os

import numpy as np
import pytest


def test_one_window_is_tokenised_without_a_thread_pool(tiny_model_path, corpus, monkeypatch):
    """A pool of tokenising threads was started and joined on every call: 0.1-0.5 ms of a
    one-text call, for nothing to overlap."""
    from embetter.text import SentenceEncoder
    from embetter.text._backends import _batching

    enc = SentenceEncoder(tiny_model_path, backend="pipelined")
    expected = enc.transform(corpus[:3])

    def no_pool(*args, **kwargs):
        raise AssertionError("a thread pool for one window")

    monkeypatch.setattr(_batching, "ThreadPoolExecutor", no_pool)
    np.testing.assert_array_equal(enc.transform(corpus[:3]), expected)


def test_pipelined_engine_puts_an_eval_model_in_eval_mode_once(tiny_model_path, corpus,
                                                               monkeypatch):
    """model.eval() walked every module on every call (0.35 ms on MiniLM)."""
    from embetter.text import SentenceEncoder

    enc = SentenceEncoder(tiny_model_path, backend="pipelined")
    enc.transform(corpus[:2])
    model = enc._fast_engine(enc._plan()).model
    calls = []
    real = type(model).eval
    monkeypatch.setattr(type(model), "eval", lambda self: calls.append(1) or real(self))
    enc.transform(corpus[:2])
    assert calls == [] and not model.training
    model.train()  # (whoever set it training, the engine encodes in eval mode)
    enc.transform(corpus[:2])
    assert calls == [1] and not model.training


def test_cache_reads_through_one_connection_per_thread(tmp_path, corpus, monkeypatch):
    """A read-only SQLite connection was opened (and closed) on every cached call: 0.6 ms of
    a 0.9 ms hit. One per thread now, another for another folder or process."""
    import threading

    from embetter import _cache
    from embetter.text import LiteTextEncoder
    from embetter.utils import cached

    opened = []
    real = _cache.open_reader
    monkeypatch.setattr(_cache, "open_reader", lambda d: opened.append(d) or real(d))
    enc = cached(tmp_path / "a", LiteTextEncoder(n_components=4, random_state=0).fit(corpus))
    first = enc.transform(corpus[:5])
    for _ in range(3):
        np.testing.assert_array_equal(enc.transform(corpus[:5]), first)
    assert len(opened) == 1
    t = threading.Thread(target=enc.transform, args=(corpus[:5],))
    t.start()
    t.join()
    assert len(opened) == 2  # (sqlite connections are not shared between threads)
    enc.set_params(path=tmp_path / "b")
    enc.transform(corpus[:5])
    assert len(opened) == 3 and opened[-1].endswith("b")
    enc.close()
    assert "_readers" not in enc.__dict__


def test_a_pickled_cache_opens_its_own_connection(tmp_path, corpus):
    import pickle

    from embetter.text import LiteTextEncoder
    from embetter.utils import cached

    enc = cached(tmp_path / "a", LiteTextEncoder(n_components=4, random_state=0).fit(corpus))
    first = enc.transform(corpus[:5])
    copy = pickle.loads(pickle.dumps(enc))
    assert "_readers" not in copy.__dict__
    np.testing.assert_array_equal(copy.transform(corpus[:5]), first)


def test_a_lite_encoder_pickled_before_keeps_one_cache_key(tmp_path, corpus, monkeypatch):
    """One pickled before its basis was kept in order got it in order at its first
    transform: its cache key moved between its first and second call (texts encoded twice).
    It is put in order at load now, with the key of a fresh fit."""
    import pickle

    from embetter.text import LiteTextEncoder
    from embetter.utils import cached

    enc = LiteTextEncoder(n_components=4, random_state=0).fit(corpus)
    older = pickle.loads(pickle.dumps(enc))
    older.svd_.components_ = np.ascontiguousarray(older.svd_.components_)  # as pickled then
    older = pickle.loads(pickle.dumps(older))
    assert older.svd_.components_.flags.f_contiguous
    assert cached(tmp_path, older)._identity() == cached(tmp_path, enc)._identity()
    calls = []
    real = LiteTextEncoder.transform
    monkeypatch.setattr(LiteTextEncoder, "transform",
                        lambda self, X: calls.append(len(X)) or real(self, X))
    wrapped = cached(tmp_path / "old", older)
    wrapped.transform(corpus[:7])
    wrapped.transform(corpus[:7])
    assert calls == [7]


def test_cache_keys_hash_arrays_in_their_own_order():
    """Hashing every array in C order moved the key of every pipeline holding a
    Fortran-ordered array (a fitted PCA, NMF, FastICA): their caches were orphaned."""
    from embetter._cache_key import _without_volatile

    fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    assert _without_volatile(fortran) is fortran
    strided = np.arange(24.0).reshape(4, 6)[:, ::2]  # (comes back contiguous from a pickle)
    assert _without_volatile(strided).flags.c_contiguous


def test_closing_a_cache_beside_a_working_thread_raises_nothing(tmp_path, corpus, monkeypatch):
    """Closing (or collecting) the encoder in one thread closed the other threads' reader
    connections there: SQLite refuses that, "Exception ignored in Reader.__del__"."""
    import sys
    import threading

    from embetter.text import LiteTextEncoder
    from embetter.utils import cached

    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: ignored.append(u.exc_value))
    enc = cached(tmp_path, LiteTextEncoder(n_components=4, random_state=0).fit(corpus))
    read, done = threading.Event(), threading.Event()

    def work():
        enc.transform(corpus[:3])
        read.set()
        done.wait(10)

    t = threading.Thread(target=work)
    t.start()
    read.wait(10)
    enc.close()
    done.set()
    t.join(10)
    assert ignored == []
    assert enc.transform(corpus[:3]).shape == (3, 4)  # (opens again)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_threads_connection_closes_with_the_thread(tmp_path, corpus):
    """A reader connection of a thread that ended waited for the cycle collector, a file
    left open each."""
    import gc
    import threading

    from embetter.text import LiteTextEncoder
    from embetter.utils import cached

    enc = cached(tmp_path, LiteTextEncoder(n_components=4, random_state=0).fit(corpus))
    enc.transform(corpus[:3])
    was = gc.isenabled()
    gc.disable()
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(30):
            t = threading.Thread(target=enc.transform, args=(corpus[:3],))
            t.start()
            t.join()
        after = len(os.listdir("/proc/self/fd"))
    finally:
        if was:
            gc.enable()
    assert after - before < 5


def test_a_cache_folder_made_again_is_read_again(tmp_path, corpus):
    """An encoder kept reading (and writing) the deleted database after its folder was
    removed and made again: rows another process stored there were encoded again."""
    import shutil

    from sklearn.preprocessing import FunctionTransformer

    from embetter.utils import cached

    _ENCODED.clear()
    live = cached(tmp_path / "c", FunctionTransformer(_encode_lengths))
    live.transform(["x"])
    shutil.rmtree(tmp_path / "c")
    cached(tmp_path / "c", FunctionTransformer(_encode_lengths)).transform(["y"])  # another
    assert live.transform(["y"]).tolist() == [[1.0, 1.0]]
    assert _ENCODED == [["x"], ["y"]]  # "y" came from the cache made again


_ENCODED: list = []


def _encode_lengths(texts):
    """(module level: the cache's key hashes a function by its name)"""
    _ENCODED.append(list(texts))
    return np.array([[float(len(t)), 1.0] for t in texts])


def test_cached_rows_are_read_in_bulk_not_one_get_each(tmp_path, corpus, monkeypatch):
    """The bulk read goes to diskcache's own table (its schema is not a public API): a change
    there would only fall back to one `get` per text, 50 us each, silently. Fail loudly."""
    import diskcache

    from embetter.text import LiteTextEncoder
    from embetter.utils import cached

    enc = cached(tmp_path, LiteTextEncoder(n_components=4, random_state=0).fit(corpus))
    first = enc.transform(corpus[:20])

    def one_by_one(*args, **kwargs):
        raise AssertionError("a row read through Cache.get: the bulk read found nothing")

    monkeypatch.setattr(diskcache.Cache, "get", one_by_one)
    np.testing.assert_array_equal(enc.transform(corpus[:20]), first)


@pytest.mark.parametrize("backend", [None, "torch", "pipelined"])
def test_transform_lists_a_model_folder_once(tiny_model_path, corpus, monkeypatch, backend):
    """Each transform listed and stat'ed the model folder's files three times (loading the
    model, choosing the path, sizing the output): about 0.15 ms each on MiniLM's folder.
    Once per call now, and a folder saved again is still noticed at the next call."""
    from embetter.text import SentenceEncoder, _models

    enc = SentenceEncoder(tiny_model_path, backend=backend)
    expected = enc.transform(corpus[:2])
    calls = []
    real = _models.folder_state
    monkeypatch.setattr(_models, "folder_state", lambda p: calls.append(p) or real(p))
    np.testing.assert_array_equal(enc.transform(corpus[:2]), expected)
    assert len(calls) == 1
    enc.get_feature_names_out()  # (another call: reads it again, once)
    assert len(calls) == 2


def test_text_encoder_builds_no_progress_bar_of_its_own_for_one_chunk(tiny_model_path, corpus,
                                                                      tmp_path, monkeypatch):
    """A disabled tqdm bar was built (and closed) on every call: about 20 us of a 50 us
    one-text call. It is built only when it shows: a progress bar over several chunks."""
    import tqdm.auto

    from embetter.text import TextEncoder, _distill

    _distill.distill(tiny_model_path, pca_dims=16).save_pretrained(str(tmp_path / "m2v"))
    enc = TextEncoder(str(tmp_path / "m2v"))
    expected = enc.transform(corpus[:2])

    def no_bar(*args, **kwargs):
        raise AssertionError("a progress bar for one chunk")

    monkeypatch.setattr(tqdm.auto, "tqdm", no_bar)
    np.testing.assert_array_equal(enc.transform(corpus[:2]), expected)
    np.testing.assert_array_equal(enc.set_params(show_progress_bar=True).transform(corpus[:2]),
                                  expected)  # (one chunk: model2vec's own bar)
