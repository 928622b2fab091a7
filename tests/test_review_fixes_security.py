"""Fixes from a security review (files and folders handed to a user by someone else): each
test failed on the code before its fix."""

from __future__ import annotations

import builtins
import hashlib
import pickle
import sqlite3
import traceback

import numpy as np
import pytest
from sklearn.preprocessing import FunctionTransformer

from embetter.utils import cached
from tests import test_external as ext
from tests.test_external import KEY, KINDS, make

api, local, server = ext.api, ext.local, ext.server  # the live server's fixtures


def _three(texts):
    """(module level: the cache's key hashes a function by its name)"""
    return np.array([[1.0, 2.0, 3.0] for _ in texts])


class _Planted:
    """A value whose unpickling runs code."""

    def __reduce__(self):
        return exec, ("import builtins; builtins.EMBETTER_PLANTED = True",)


def _key(enc, text: str) -> str:
    return enc._identity() + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _plant(folder, key, *, filename=None, mode=None, value=None, expire=None):
    """A row written into the cache's table by another hand."""
    with sqlite3.connect(str(folder / "cache.db")) as db:
        db.execute("INSERT OR REPLACE INTO Cache (key, raw, store_time, expire_time, "
                   "access_time, access_count, tag, size, mode, filename, value) "
                   "VALUES (?, 1, 0, ?, 0, 0, NULL, 0, ?, ?, ?)",
                   (key, expire, mode, filename, value))


def test_a_planted_pickled_row_is_not_loaded(tmp_path):
    """A row stored pickled (not as this cache stores them) was read through diskcache's get,
    which unpickles it: code ran at transform."""
    enc = cached(tmp_path, FunctionTransformer(_three))
    enc.transform(["hello"])
    enc._cache().set(_key(enc, "hello"), _Planted())
    try:
        assert enc.transform(["hello"]).tolist() == [[1.0, 2.0, 3.0]]  # encoded again
        assert not hasattr(builtins, "EMBETTER_PLANTED")
    finally:
        if hasattr(builtins, "EMBETTER_PLANTED"):
            del builtins.EMBETTER_PLANTED


def test_a_row_naming_a_file_elsewhere_is_neither_read_nor_deleted(tmp_path):
    """diskcache reads the file a row names (any file: its bytes came back as the vector)
    and its cull deletes the files of expired rows (any file the user may delete)."""
    from diskcache.core import MODE_BINARY

    folder = tmp_path / "c"
    secret, victim = tmp_path / "secret", tmp_path / "victim"
    secret.write_bytes(b"SECRETPASSWD")  # 12 bytes: three float32s
    victim.write_text("keep me")
    enc = cached(folder, FunctionTransformer(_three))
    enc.transform(["hello"])
    _plant(folder, _key(enc, "asked"), filename=str(secret), mode=MODE_BINARY)
    _plant(folder, "expired", filename=str(victim), mode=MODE_BINARY, expire=1.0)
    assert enc.transform(["asked"]).tolist() == [[1.0, 2.0, 3.0]]  # not the secret's bytes
    enc.transform(["a new text"])  # a store (the cache culls no more: no size limit)
    enc._cache().cull()  # (as diskcache, or the user, may: the expired row's file is not ours)
    assert victim.read_text() == "keep me"


def test_a_skops_file_naming_a_cache_folder_needs_trust(tmp_path):
    from embetter.text import LiteTextEncoder
    from embetter.utils import UntrustedAddressError, load_skops, save_skops

    texts = [f"text {i} about cats" for i in range(20)]
    enc = cached(tmp_path / "theirs", LiteTextEncoder(n_components=4, random_state=0).fit(texts))
    path = save_skops(enc, tmp_path / "p.skops")
    with pytest.raises(UntrustedAddressError, match="CachedEncoder\\(path="):
        load_skops(path)
    assert load_skops(path, trust=True).path == enc.path


def test_a_model_file_under_dot_is_checked_as_itself():
    """'./modules.json' is modules.json on disk but escaped the check of its module types."""
    from embetter._state_bytes import check_model_files

    with pytest.raises(ValueError, match="only data files"):
        check_model_files({"./modules.json": b'[{"type": "evil.Backdoor", "path": ""}]'})


@pytest.mark.parametrize("kind", KINDS)
def test_an_echoed_key_is_blanked_out_of_the_error(kind, server):
    """A server echoing the request's headers put the key into HostedAPIError's message, and
    into the chained client exception's traceback."""
    from embetter.external import HostedAPIError

    server.inject(status=400, times=None, echo=True)
    enc = make(kind, server, max_retries=0)
    with pytest.raises(HostedAPIError) as err:
        enc.transform(["hello"])
    shown = "".join(traceback.format_exception(err.value))
    assert KEY not in shown and "400" in str(err.value)
    assert err.value.__context__ is None  # (pickled with tblib, as Dask does, it travels)
    assert KEY not in str(pickle.dumps(err.value))


_WIDE_CALLS: list = []


def _wide(texts):
    """(module level: the cache's key hashes a function by its name) rows of 16,384
    float32s, 64 kB each; counted in `_WIDE_CALLS`."""
    _WIDE_CALLS.append(len(texts))
    return np.tile(np.arange(16_384, dtype=np.float32), (len(texts), 1))


def test_wide_rows_are_read_back_inline_and_from_older_files(tmp_path):
    """Rows of 32 kB and more went to files of their own, which the bulk read (raw rows
    inline only) did not read: every call encoded them again; an older cache's file rows
    went cold after the upgrade."""
    import diskcache

    _WIDE_CALLS.clear()
    enc = cached(tmp_path / "new", FunctionTransformer(_wide))
    enc.transform(["a", "b"])
    assert enc.transform(["a", "b"]).shape == (2, 16_384) and _WIDE_CALLS == [2]
    older = cached(tmp_path / "old", FunctionTransformer(_wide))
    row = np.arange(16_384, dtype=np.float32)
    with diskcache.Cache(str(tmp_path / "old")) as cache:  # as the code before stored one
        cache.set(_key(older, "c"), row.tobytes())
    assert any((tmp_path / "old").rglob("*.val"))  # (in a file of its own)
    assert older.transform(["c"]).tolist() == [row.tolist()]
    assert _WIDE_CALLS == [2]  # read from the file, not encoded again


def test_a_short_placeholder_key_is_not_blanked_out_of_words(server):
    """A key of 4 characters ("test", "EMPTY") was blanked wherever it stood in a word."""
    enc = make("openai", server, api_key="test")
    assert enc._without_keys("model 'test-embed-latest'") == "model 'test-embed-latest'"
    assert make("openai", server)._without_keys(f"Bearer {KEY}") == "Bearer ***"


def test_an_unreadable_reply_repeating_the_key_is_blanked_out(server):
    """A reply the client could not read (status 200, no embeddings) kept the key it
    repeated in the error's message and its chained cause."""
    import json

    from embetter.external import HostedAPIError

    body = json.dumps({"error": f"bad auth header: Bearer {KEY}"}).encode()
    server.inject(raw=body, times=None)
    with pytest.raises(HostedAPIError, match="could not be read") as err:
        make("ollama", server, max_retries=0).transform(["hello"])
    assert KEY not in "".join(traceback.format_exception(err.value))
    assert err.value.__context__ is None and err.value.__cause__ is None
