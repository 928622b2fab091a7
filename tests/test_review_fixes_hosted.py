"""Fixes from a review of the hosted-API encoders: each test failed on the code before its
fix."""

from __future__ import annotations

import pytest

from embetter.external import AzureOpenAIEncoder, OpenAIEncoder
from embetter.external._calls import estimate_tokens
from tests import test_external as ext
from tests.test_external import KEY, KINDS, make

api, local, server = ext.api, ext.local, ext.server  # the live server's fixtures

SECRET = "sk-SECRETVALUE42"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [SECRET + "\n", SECRET + " ", SECRET + "\u00a0"])
def test_a_key_a_header_cannot_carry_is_refused_without_showing_it(kind, bad, server):
    # before: "Illegal header value b'Bearer sk-...\n'" (the key in the message), retried as a
    # connection error; a non-ASCII character gave a UnicodeEncodeError holding the key
    enc = make(kind, server, api_key=bad, max_retries=0)
    with pytest.raises(ValueError, match="api_key") as info:
        enc.transform(["a b"])
    assert "SECRETVALUE" not in str(info.value) and "SECRETVALUE" not in repr(info.value)
    assert not server.requests


@pytest.mark.parametrize("kind, env", [("openai", "OPENAI_API_KEY"), ("cohere", "CO_API_KEY"),
                                       ("ollama", "OLLAMA_API_KEY"),
                                       ("azure", "AZURE_OPENAI_API_KEY")])
def test_a_key_from_the_environment_is_checked_and_named(kind, env, server, monkeypatch):
    monkeypatch.setenv(env, SECRET + "\r\n")
    with pytest.raises(ValueError, match=f"environment variable {env}") as info:
        make(kind, server, api_key=None, max_retries=0).transform(["a b"])
    assert "SECRETVALUE" not in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_a_text_utf8_cannot_write_is_named_before_any_request(kind, server):
    # before: a UnicodeEncodeError from the token estimate, or "the server's reply could not
    # be read" though no request was sent
    with pytest.raises(ValueError, match=r"X\[1\] is not valid Unicode text"):
        make(kind, server, max_retries=0).transform(["ok", "bad \udcff byte"])
    assert not server.requests


@pytest.mark.parametrize("make_bad", [
    lambda: OpenAIEncoder(base_url="127.0.0.1:8000/v1", api_key=KEY),
    lambda: AzureOpenAIEncoder(azure_endpoint="example.openai.azure.com", api_key=KEY),
])
def test_an_address_without_its_scheme_is_refused(make_bad):
    # before: retried for seconds as a connection error, the reason only in the chained cause
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        make_bad().transform(["a b"])


def test_ollama_takes_an_address_without_its_scheme(server):
    from embetter.external import OllamaEncoder

    host = server.url.removeprefix("http://")
    assert OllamaEncoder("tiny", base_url=host, api_key=KEY).transform(["a b"]).shape[0] == 1


def test_openai_refuses_an_empty_text_before_any_request(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match=r"X\[2\] is an empty string"):
        OpenAIEncoder(api_key=KEY).transform(["a", "b", "", "c"])


def test_a_compatible_server_gets_empty_texts(server):
    assert make("openai", server).transform(["a", ""]).shape[0] == 2


def test_the_token_estimate_counts_every_byte_outside_ascii():
    # a byte-level tokeniser can spend a token per byte there (it was bytes / 3)
    assert estimate_tokens("\u0928\u092e\u0938\u094d\u0924\u0947") == 18  # 6 x 3 bytes
    assert estimate_tokens("abcdef") == 2
    assert estimate_tokens("ab\u00e9") == 1 + 2


@pytest.mark.parametrize("kind, env", [("openai", "OPENAI_BASE_URL"), ("cohere", "CO_API_URL"),
                                       ("azure", "AZURE_OPENAI_ENDPOINT")])
def test_an_address_from_the_environment_without_its_scheme_is_refused(kind, env, monkeypatch):
    from embetter.external import CohereEncoder

    monkeypatch.setenv(env, "my.example.com")
    make_one = {"openai": OpenAIEncoder, "cohere": CohereEncoder,
                "azure": AzureOpenAIEncoder}[kind]
    with pytest.raises(ValueError, match=f"environment variable {env} must start with http"):
        make_one(api_key=KEY).transform(["a b"])


def test_an_address_given_wins_over_a_bad_one_in_the_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "my.example.com")
    assert make("openai", server).transform(["a b"]).shape[0] == 1


def test_an_address_error_shows_no_credentials():
    with pytest.raises(ValueError, match="must start with http") as info:
        OpenAIEncoder(base_url="user:SECRETVALUE@my.host/v1?api-key=SECRETVALUE",
                      api_key=KEY).transform(["a"])
    assert "SECRETVALUE" not in str(info.value) and "my.host/v1" in str(info.value)


def test_an_address_with_a_question_mark_in_its_password_is_hidden():
    from embetter.external._core import _shown

    assert _shown("user:pa?SECRET@host/v1?api-key=SECRET") == "***@host/v1"


def test_the_token_estimate_is_not_under_the_pieces_of_numbers_and_ids():
    # a BPE tokeniser's pre-tokeniser cuts each digit group and punctuation mark apart, a
    # token at least each: characters / 3 took "7,7,7,..." at a third of its tokens, and a
    # batch of such texts past a provider's per-request token limit
    digits = ",".join("7" * 3000)
    assert estimate_tokens(digits) >= 5999
    assert estimate_tokens(" ".join("abc" * 500)) >= 1500
    # white space and control characters: a run of them is not one token
    assert estimate_tokens(" \n" * 5000) >= 5000 and estimate_tokens("\x07" * 3000) >= 3000
    english = "The quick brown fox jumps over the lazy dog. " * 10
    assert len(english) / 4 < estimate_tokens(english) <= len(english) / 2.5


def test_an_azure_ad_token_a_header_cannot_carry_is_refused(server, monkeypatch):
    # before: the AD token went to the client unchecked; the HTTP layer refused it with the
    # token in its message, retried as a connection error
    monkeypatch.setenv("AZURE_OPENAI_AD_TOKEN", SECRET + "\n")
    with pytest.raises(ValueError, match="AZURE_OPENAI_AD_TOKEN") as info:
        make("azure", server, api_key=None, max_retries=0).transform(["a b"])
    assert "SECRETVALUE" not in str(info.value) and not server.requests


def test_an_address_from_the_environment_keys_the_known_width(server, monkeypatch):
    # before: keyed by base_url=None, so an empty input got the last server's width
    import numpy as np

    from tests._api_server import EmbeddingServer

    wide = EmbeddingServer(lambda texts: np.ones((len(texts), 7), np.float32), api_key=KEY)
    wide.start()
    try:
        from embetter.external import OllamaEncoder

        enc = OllamaEncoder("tiny", api_key=KEY, max_retries=0)
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        width = enc.transform(["x"]).shape[1]
        monkeypatch.setenv("OLLAMA_HOST", wide.url)
        assert enc.transform(["x"]).shape == (1, 7) and enc.transform([]).shape == (0, 7)
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        assert enc.transform([]).shape == (0, width)
    finally:
        wide.stop()


def test_an_unreadable_retry_after_ms_falls_back_to_retry_after():
    from embetter.external._calls import retry_after

    assert retry_after({"retry-after-ms": "abc", "retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5


def test_an_openai_compatible_reply_without_indices_is_taken_in_order(server):
    import json

    rows = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    body = {"object": "list", "model": "tiny", "usage": {"prompt_tokens": 2, "total_tokens": 2},
            "data": [{"object": "embedding", "embedding": r} for r in rows]}
    server.inject(raw=json.dumps(body).encode(), headers={"content-type": "application/json"})
    out = make("openai", server, max_retries=0).transform(["a", "b"])
    assert out.tolist() == rows
