"""Fixes from a review of what embetter leaves behind in the caller's process and files: each
test failed on the code before its fix."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests._api_server import EmbeddingServer
from tests._sbert_helpers import learner


def test_to_disk_refuses_a_folder_that_holds_something_else(tiny_model_path, corpus, tmp_path):
    fitted = learner(tiny_model_path, loss="mnrl", batch_size=8, device="cpu")
    fitted.fit(corpus[:8], corpus[8:16])
    models = tmp_path / "models"
    (models / "another-model").mkdir(parents=True)
    (models / "README.md").write_text("mine")
    with pytest.raises(ValueError, match="holding files that are not a saved sentence model"):
        fitted.to_disk(models)  # it was moved aside and deleted
    assert (models / "README.md").read_text() == "mine" and (models / "another-model").is_dir()
    saved = fitted.to_disk(models / "tuned")
    assert fitted.to_disk(saved) == saved  # a saved model's folder is replaced as before


@pytest.fixture
def server():
    api = EmbeddingServer(lambda texts: np.ones((len(texts), 4), np.float32)).start()
    yield api
    api.stop()


def test_retries_leave_the_callers_random_sequence_alone(server):
    from embetter.external import OllamaEncoder

    enc = OllamaEncoder("m", base_url=server.url, batch_size=8, max_concurrency=1)
    enc.transform(["warm up the client"])
    server.inject(status=500, times=1)
    random.seed(123)
    before = random.getstate()
    enc.transform(["a", "b"])  # retried once, after a jittered wait
    assert random.getstate() == before


@pytest.mark.parametrize("kind", ["openai", "cohere", "ollama"])
def test_no_request_is_sent_after_a_batch_failed(kind, server, monkeypatch):
    """Every provider's retries are the core's: once `transform` raised, nothing more goes
    out (the openai and cohere clients went on retrying the other batches on their own)."""
    import embetter.external._calls as calls
    from embetter.external import CohereEncoder, HostedAPIError, OllamaEncoder, OpenAIEncoder

    monkeypatch.setattr(calls, "INITIAL_RETRY_DELAY", 0.02)  # retries come fast if they come
    server.inject(status=400, match="text 0", times=None)  # batch 1 fails at once
    server.inject(status=503, times=None)  # the others would be retried
    make = {"openai": lambda **kw: OpenAIEncoder("m", base_url=server.url + "/v1", **kw),
            "cohere": lambda **kw: CohereEncoder("m", base_url=server.url, **kw),
            "ollama": lambda **kw: OllamaEncoder("m", base_url=server.url, **kw)}[kind]
    enc = make(api_key="k", batch_size=1, max_concurrency=4, max_retries=8)
    with pytest.raises(HostedAPIError, match="status 400"):
        enc.transform([f"text {i}" for i in range(8)])
    at_raise = len(server.requests)
    time.sleep(2.5)  # retries would come every 0.02-2.6 s here (0.5-2 s in openai's client)
    # at most the requests the other workers had sent when it raised, and no retry after
    assert len(server.requests) - at_raise <= 3


def test_an_interrupted_encode_stops_its_tokenizing_threads(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    from embetter.text import SentenceEncoder

    model = SentenceTransformer(tiny_model_path, device="cpu").eval()  # runs as it is
    enc = SentenceEncoder(model, backend="pipelined", batch_size=8)
    enc.transform(["warm up"])
    calls = []

    def forward(features, _real=model.forward):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return _real(features)

    model.forward = forward
    try:
        with pytest.raises(KeyboardInterrupt) as kept:  # the traceback (and frames) kept alive
            enc.transform([f"text number {i}" for i in range(5000)])
        alive = [t.name for t in threading.enumerate() if "embetter-tokenize" in t.name]
        assert alive == [] and kept.value is not None
    finally:
        del model.forward


def test_training_a_static_model_keeps_the_gpus_queued_seed(tiny_model_path):
    import torch

    if torch.cuda.is_initialized():
        pytest.skip("the queued seed exists only before CUDA starts")
    from embetter.text import TextEncoder, _distill

    folder = _distill.distill(tiny_model_path, pca_dims=8)
    queue = torch.cuda._lazy_seed_tracker
    torch.manual_seed(42)
    mine = queue.manual_seed_all_cb
    try:
        TextEncoder(folder, train_on_fit=True, teacher=tiny_model_path, random_state=0).fit(
            [f"some text number {i}" for i in range(40)])
        assert queue.manual_seed_all_cb is mine  # model2vec's seed had replaced it
    finally:
        torch.manual_seed(torch.initial_seed())


def test_cached_encoder_closes_the_database_it_leaves(tmp_path):
    from embetter.text import LiteTextEncoder
    from embetter.utils import cached

    texts = ["a b", "c d", "e f"]
    enc = cached(tmp_path / "a", LiteTextEncoder(n_components=2, random_state=0)).fit(texts)
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc to list open files (Linux)")

    def open_in(folder):
        return [p for p in fds.iterdir() if str(folder) in os.path.realpath(p)]

    enc.transform(texts)
    assert open_in(tmp_path / "a")
    enc.set_params(path=tmp_path / "b").transform(texts)
    assert not open_in(tmp_path / "a")  # open until a garbage collection before
    enc.close()
    assert not open_in(tmp_path / "b")
    assert "_cache_handle" not in enc.__dict__
    np.testing.assert_array_equal(enc.transform(texts), enc.encoder.transform(texts))


def test_cli_main_returns_the_exit_code_of_bad_arguments(capsys):
    from embetter.cli import main

    assert main(["embed"]) == 2 and main(["no-such-command"]) == 2
    assert "usage:" in capsys.readouterr().err


# -- a review of sharing one object between threads and processes -------------------------------
def test_a_forked_child_builds_its_own_client(server, monkeypatch):
    """gunicorn --preload: children shared the parent's open connection and got each
    other's rows."""
    from embetter.external import OllamaEncoder

    enc = OllamaEncoder("m", base_url=server.url)
    enc.transform(["warm the client"])
    parent = enc._client()
    assert enc._client() is parent
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as in a child after fork
    child = enc._client()
    assert child is not parent and enc._client() is child


def test_quieting_in_two_threads_puts_stderr_back(monkeypatch):
    """Interleaved, the second thread's restore put back the first one's buffer: sys.stderr
    stayed a dead StringIO for the rest of the process."""
    import sys

    from embetter._guest import quiet_stderr

    original = sys.stderr
    first_in = threading.Event()

    def first():
        with quiet_stderr():
            first_in.set()
            time.sleep(0.3)

    def second():
        first_in.wait()
        with quiet_stderr():
            time.sleep(0.6)  # it leaves last

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sys.stderr is original


def test_seeded_fits_in_threads_give_the_sequential_results():
    from embetter.finetune import FeedForwardTuner
    from tests._clustered import clustered

    X, y = clustered(120, 0)
    expected = FeedForwardTuner(n_epochs=5, random_state=0).fit(X, y).transform(X)
    results = [None] * 4

    def fit(k):
        results[k] = FeedForwardTuner(n_epochs=5, random_state=0).fit(X, y).transform(X)

    threads = [threading.Thread(target=fit, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        np.testing.assert_array_equal(got, expected)


def test_auto_measures_once_for_threads_that_ask_together(tiny_model_path, monkeypatch):
    from embetter.text import SentenceEncoder
    from embetter.text._backends.auto import Plan

    calls = []

    def slow_measure(self):
        calls.append(1)
        time.sleep(0.3)
        return Plan("torch"), {"chosen": "torch"}

    monkeypatch.setattr(SentenceEncoder, "_measure", slow_measure)
    enc = SentenceEncoder(tiny_model_path, device="cpu", backend="auto")
    threads = [threading.Thread(target=enc._plan) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_threads_that_ask_together_share_one_model_and_engine(tiny_model_path, monkeypatch):
    from embetter.text import SentenceEncoder, _backends

    built = []
    real = _backends.make_engine

    def counted(*args, **kwargs):
        built.append(1)
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(_backends, "make_engine", counted)
    enc = SentenceEncoder(tiny_model_path, device="cpu", backend="pipelined")
    texts = ["the cat likes pizza", "a dog hates the rain"]
    results = [None] * 4

    def run(k):
        results[k] = enc.transform(texts)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1
    for got in results:
        np.testing.assert_array_equal(got, results[0])


def test_shared_switches_interleaved_in_threads_come_back_and_nobody_waits():
    import logging

    from embetter._guest import GUEST_LOCK, quiet_loggers

    logger = logging.getLogger("embetter.test.shared")
    logger.setLevel(logging.DEBUG)
    first_in, second_in = threading.Event(), threading.Event()

    def first():
        with quiet_loggers("embetter.test.shared"):
            first_in.set()
            second_in.wait(5)
            time.sleep(0.1)  # leaves first

    def second():
        first_in.wait(5)
        with quiet_loggers("embetter.test.shared"):
            second_in.set()
            time.sleep(0.4)

    with GUEST_LOCK:  # a fit in progress elsewhere: raising a logger does not wait for it
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert logger.level == logging.DEBUG


def test_a_child_forked_while_a_lock_was_held_can_take_it():
    # (the model loads', exports', static builds' and Dask's locks were left out: a child
    # forked while another thread loaded a model hung for ever at its own first load)
    import contextlib

    from embetter import _dask_worker, dask
    from embetter._guest import GUEST_LOCK
    from embetter.text import _distill, _models
    from embetter.text._backends import _export
    from embetter.text._paths import BUILDING

    locks = [GUEST_LOCK, BUILDING, _models._shared_lock, _export._export_lock,
             _distill._build_lock, _dask_worker.kept_lock, dask._filters_lock]
    held, release = threading.Event(), threading.Event()

    def holder():
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    try:
        pid = os.fork()
        if pid == 0:  # the child: every lock must open
            ok = all(lock.acquire(timeout=2) for lock in locks)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        t.join()
    assert os.waitstatus_to_exitcode(status) == 0


def _overlap(other_block):
    """Thread A quiet; thread B enters `other_block()` inside A's block and leaves after it."""
    from embetter._guest import quiet_stderr

    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with quiet_stderr():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():
        a_in.wait(10)
        with other_block():
            b_in.set()
            a_out.wait(10)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)


def test_quiet_stderr_beside_another_threads_catch_warnings():
    """scikit-learn's threaded tasks run in catch_warnings(): one that began inside a quiet
    block put back our 'always' filter and recording hook after it, for the whole process."""
    import warnings

    before = list(warnings.filters)
    _overlap(warnings.catch_warnings)
    assert warnings.filters == before
    with pytest.warns(UserWarning, match="still seen"):
        warnings.warn("still seen", UserWarning, stacklevel=1)


def test_quiet_stderr_beside_another_threads_redirect(monkeypatch):
    """Another thread's redirect_stderr begun inside a quiet block put our dead buffer back as
    sys.stderr after it: the process's tracebacks went nowhere."""
    import contextlib
    import io
    import sys

    real = io.StringIO()
    monkeypatch.setattr(sys, "stderr", real)
    _overlap(lambda: contextlib.redirect_stderr(io.StringIO()))
    print("after", file=sys.stderr)
    assert real.getvalue() == "after\n"


def test_quiet_stderr_keeps_other_threads_writes(monkeypatch):
    import io
    import sys

    from embetter._guest import quiet_stderr

    real = io.StringIO()
    monkeypatch.setattr(sys, "stderr", real)
    quiet_in, done = threading.Event(), threading.Event()

    def quiet():
        with quiet_stderr():
            print("a bar", file=sys.stderr)
            quiet_in.set()
            done.wait(10)

    t = threading.Thread(target=quiet)
    t.start()
    quiet_in.wait(10)
    print("the user's line", file=sys.stderr)  # another thread, during the quiet block
    done.set()
    t.join(10)
    assert real.getvalue() == "the user's line\n" and sys.stderr is real


def test_quantising_leaves_other_threads_logging_alone(tmp_path, monkeypatch):
    """The int8 export raised the root logger to ERROR to quiet the quantiser: every other
    thread's warnings on loggers without a level of their own were dropped meanwhile."""
    import logging

    import onnx
    import onnxruntime.quantization as quantization

    from embetter.text._backends import _export

    graph = onnx.helper.make_graph([], "empty", [], [])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "m.onnx"))
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logging.getLogger().addHandler(handler)
    other = logging.getLogger("an_app_of_the_user")
    logged = threading.Event()

    def fake_quantize(*args, **kwargs):
        logging.warning("quantiser progress")  # as onnxruntime logs it
        t = threading.Thread(target=lambda: (other.warning("the user's warning"),
                                             logged.set()))
        t.start()
        t.join(10)

    monkeypatch.setattr(quantization, "quantize_dynamic", fake_quantize)
    try:
        _export._quantize_int8(tmp_path / "m.onnx", tmp_path / "q.onnx")
    finally:
        logging.getLogger().removeHandler(handler)
    assert logged.is_set() and seen == ["the user's warning"]
    assert logging.getLogger().filters == []


def test_quiet_stderr_drops_writelines_too(monkeypatch):
    import io
    import sys

    from embetter._guest import quiet_stderr

    real = io.StringIO()
    monkeypatch.setattr(sys, "stderr", real)
    with quiet_stderr():
        sys.stderr.writelines(["a bar\n", "another\n"])
    assert real.getvalue() == ""


def test_a_hook_chained_to_ours_does_not_go_round(monkeypatch):
    """Our pass-through left in place (another thread's catch_warnings put it back) and a
    user's hook that calls the one it found: each called the other for ever."""
    import io
    import sys
    import warnings

    import embetter._guest as guest

    real = io.StringIO()
    monkeypatch.setattr(sys, "stderr", real)
    monkeypatch.setattr(warnings, "showwarning", guest._hold_warning)
    monkeypatch.setattr(guest, "_PREVIOUS_SHOW", [])
    mine = []

    def my_hook(message, *args, previous=guest._hold_warning, **kwargs):
        mine.append(str(message))
        previous(message, *args, **kwargs)

    guest._PREVIOUS_SHOW.append(my_hook)  # what a user's hook set before ours would be
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = guest._hold_warning
        warnings.warn("once", UserWarning, stacklevel=1)
    assert mine == ["once"] and "UserWarning: once" in real.getvalue()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_forgets_other_threads_quiet_blocks():
    """A thread quiet at the fork never ends its block in the child: its id stayed quiet
    there (and a new thread can get that id), with sys.stderr gated for good."""
    import sys

    import embetter._guest as guest

    inside, leave = threading.Event(), threading.Event()

    def quiet():
        with guest.quiet_stderr():
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=quiet)
    t.start()
    inside.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code
        ok = not guest._HELD and not isinstance(sys.stderr, guest._StderrGate)
        os._exit(0 if ok else 1)
    leave.set()
    t.join(10)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("module, call", [
    ("embetter.finetune", "FeedForwardTuner(early_stopping=True, n_epochs=2, random_state=0)"
                          ".fit(X, y)"),
    ("embetter.finetune", "ContrastiveTuner(early_stopping=True, epochs=1, random_state=0)"
                          ".fit(X, y)"),
    ("embetter.model", "DifferenceClassifier(enc=Same()).fit(X[:20], X[20:], y[:20])"),
    ("embetter.plot", "project(X)"),
])
def test_a_first_call_keeps_pythons_random_sequence(module, call):
    """A first fit's lazy import of a scikit-learn subpackage imported rich, which draws
    from Python's `random` at import: a caller seeded after importing embetter got another
    sequence after the first fit (a fresh process, where nothing imported rich before; each
    case imports only its own module)."""
    import subprocess
    import sys

    code = (
        "import random\n"
        "import numpy as np\n"
        f"from {module} import {call.split('(')[0]}\n"
        "class Same:\n"
        "    def transform(self, X):\n"
        "        return np.asarray(X)\n"
        "X = np.random.default_rng(0).normal(size=(40, 4)).astype('float32')\n"
        "y = np.array([0, 1] * 20)\n"
        "random.seed(0)\n"
        "expected = random.random()\n"
        "random.seed(0)\n"
        f"{call}\n"
        "assert random.random() == expected\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300,
                   cwd=Path(__file__).resolve().parents[1])
