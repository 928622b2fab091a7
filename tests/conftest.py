"""Shared fixtures: a tiny sentence model built locally (no download) and the bundled model."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Tests never touch the network: the bundled model and the tiny models are local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SUBJECTS = ["the cat", "a dog", "my neighbour", "the market", "our team", "the weather", "a pilot"]
VERBS = ["likes", "hates", "watches", "moves", "fixes", "predicts", "follows"]
OBJECTS = ["the ball", "stock prices", "a movie", "the rain", "old cars", "the news", "pizza"]


#: what the dev and docs extras install, by import name: with EMBETTER_EXTRAS=required (set
#: by `make test`, which installs them) a missing one fails the run instead of letting the
#: tests that need it skip quietly
DEV_EXTRAS = ("matplotlib", "pyarrow", "distributed", "onnxruntime", "openvino", "openai",
              "cohere", "ollama", "umap", "numba", "anywidget", "datasets", "playwright",
              "mkdocs", "mkdocstrings")


def pytest_sessionstart(session):
    if os.environ.get("EMBETTER_EXTRAS") != "required":
        return
    import importlib.util

    missing = [name for name in DEV_EXTRAS if importlib.util.find_spec(name) is None]
    if missing:
        raise pytest.UsageError(
            f"EMBETTER_EXTRAS=required but {', '.join(missing)} cannot be imported: the tests "
            "that need them would skip. Install the extras: pip install -e '.[dev,docs]'")


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    """Exports, distilled static models and the `auto` choice go to a folder of this session:
    every run takes the first-use paths (a warm cache would hide a broken export) and the
    user's own cache is left as it was."""
    patch = pytest.MonkeyPatch()
    patch.setenv("EMBETTER_CACHE_DIR", str(tmp_path_factory.mktemp("embetter-cache")))
    yield
    patch.undo()


def tiny_corpus() -> list[str]:
    """Deterministic short sentences to train a tokenizer on and to encode in tests."""
    return [f"{s} {v} {o}" for s in SUBJECTS for v in VERBS for o in OBJECTS]


def build_tiny_model(path, seed: int = 0, hidden: int = 32) -> str:
    """Save a random-weight BERT sentence model with a locally trained WordPiece tokenizer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(tiny_corpus(), trainers.WordPieceTrainer(vocab_size=200,
                                                                       special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    hf_dir = os.path.join(str(path), "hf")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=64)
    fast.save_pretrained(hf_dir)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=64)
    BertModel(config).save_pretrained(hf_dir)
    transformer = Transformer(hf_dir, max_seq_length=64)
    dim_of = getattr(transformer, "get_embedding_dimension", None)
    dim_of = dim_of or transformer.get_word_embedding_dimension
    pooling = Pooling(dim_of(), pooling_mode="mean")
    st_dir = os.path.join(str(path), "st")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(st_dir)
    return st_dir


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """Path of a tiny (32-dim) sentence-transformers model, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return tiny_corpus()


@pytest.fixture(scope="session")
def labelled(corpus):
    """Texts labelled by their verb: learnable from the tokens."""
    import numpy as np

    texts = corpus[::8]
    return texts, np.array([t.split()[2] for t in texts])


@pytest.fixture(scope="session", autouse=True)
def docs_embedding_api():
    """The local embedding API that docs/hosted-apis.md talks to (tests/_api_server.py), at
    $EMBETTER_DOCS_API_URL. Starting it is instant; it loads the bundled all-MiniLM-L6-v2 on
    its first request only, so sessions that never call it pay nothing."""
    try:
        from tests._api_server import EmbeddingServer
    except ImportError:  # pytest started without the repository root on sys.path
        from _api_server import EmbeddingServer

    model = []

    def encode(texts):
        if not model:
            from embetter.text import SentenceEncoder

            model.append(SentenceEncoder(device="cpu"))
        return model[0].transform(texts)

    server = EmbeddingServer(encode).start()
    previous = os.environ.get("EMBETTER_DOCS_API_URL")
    os.environ["EMBETTER_DOCS_API_URL"] = server.url
    yield server
    server.stop()
    if previous is None:
        os.environ.pop("EMBETTER_DOCS_API_URL", None)
    else:
        os.environ["EMBETTER_DOCS_API_URL"] = previous


@pytest.fixture(scope="module")
def pairs(corpus):
    """256 text pairs with a 0/1 label: 1 when the subjects fall in the same (arbitrary) group,
    which no word overlap gives away: the model has to learn it."""
    rng = np.random.default_rng(0)
    i = rng.integers(0, len(corpus), 256)
    j = rng.integers(0, len(corpus), 256)
    X1 = [corpus[k] for k in i]
    X2 = [corpus[k] for k in j]
    group = {s: n % 2 for n, s in enumerate(SUBJECTS)}
    subject = [group[" ".join(t.split()[:2])] for t in X1 + X2]
    y = (np.array(subject[:256]) == np.array(subject[256:])).astype(float)
    return X1, X2, y


@pytest.fixture
def no_network(monkeypatch):
    """A machine that cannot resolve host names (and is not told HF_HUB_OFFLINE); returns the
    host names asked for."""
    import socket

    from huggingface_hub import constants

    asked = []

    def fail(host, *args, **kwargs):
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    return asked
