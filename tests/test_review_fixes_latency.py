"""Fixes from a review of small calls (1-32 texts, many times: a notebook, a labelling loop):
each test failed on the code before its fix. The seconds saved are benchmarks' business
(benchmarks/encode_speed.py); these check the work that is no longer done."""

from __future__ import annotations

import numpy as np


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
    real = _cache._open_reader
    monkeypatch.setattr(_cache, "_open_reader", lambda d: opened.append(d) or real(d))
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
