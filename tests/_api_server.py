"""A real HTTP server on 127.0.0.1 that speaks three hosted embedding APIs, for tests,
the docs pages and benchmarks/external.py.

It serves real embeddings from a local sentence model in the request shapes of OpenAI's
`/v1/embeddings` (also Azure's `/openai/deployments/<name>/embeddings`), Cohere's `/v2/embed`
and Ollama's `/api/embed`, and injects faults on request: a status code (429 with
`Retry-After`, 500, ...), a slow reply, a reply one row short, a reply in shuffled order, rows
of another width. It
records every request and the largest number of requests in flight at once.

    server = EmbeddingServer(encode=SentenceEncoder(path).transform, api_key="k").start()
    server.inject(status=429, times=2, headers={"retry-after-ms": "10"})
    ...
    server.stop()
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np


class Fault:
    """One injected misbehaviour: applies to the next `times` matching requests (None: all)."""

    def __init__(self, status=None, headers=None, slow=0.0, short=False, shuffle=False,
                 width=None, times=1, match=None, raw=None, echo=False):
        self.status, self.headers, self.slow, self.width = status, dict(headers or {}), slow, width
        self.echo = echo  # the error's message repeats the request's headers (key included)
        self.raw = raw  # bytes sent as the whole reply, with status 200 (a proxy's page, say)
        self.short, self.shuffle, self.times, self.match = short, shuffle, times, match

    def matches(self, texts) -> bool:
        return self.match is None or any(self.match in t for t in texts)


class EmbeddingServer:
    """A threaded HTTP server with an OpenAI-, Cohere- and Ollama-shaped embedding API."""

    def __init__(self, encode, api_key=None, delay=0.0, host="127.0.0.1"):
        self.encode = encode  # list[str] -> float32 (n, d), a real model
        self.api_key = api_key
        self.delay = delay  # seconds added to every reply (simulated network latency)
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = None
        self.reset()

    # -- control -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> EmbeddingServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="embedding-api-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self) -> None:
        """Forget faults, requests and the in-flight record (requests still being answered
        keep counting: see `wait_idle`)."""
        with self._lock:
            self.faults: list[Fault] = []
            self.requests: list[dict] = []
            self.in_flight = getattr(self, "in_flight", 0)
            self.max_in_flight = self.in_flight

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no request is being answered (slow replies a client gave up on)."""
        end = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < end:
            time.sleep(0.01)

    def inject(self, **kwargs) -> Fault:
        fault = Fault(**kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    @property
    def texts_seen(self) -> list[str]:
        return [t for r in self.requests for t in r["texts"]]

    # -- serving -----------------------------------------------------------------------------
    def _take_fault(self, texts) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(texts) and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _embed(self, texts, dims) -> np.ndarray:
        with self._model_lock:
            emb = np.asarray(self.encode(texts), dtype=np.float32)
        if dims:  # shorten and re-normalise, as text-embedding-3 does
            emb = emb[:, : int(dims)]
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb

    def handle(self, path: str, headers, body: dict):
        """Return (status, headers, payload) for one request."""
        kind = _kind(path)
        if kind is None:
            return 404, {}, {"error": f"no such endpoint: {path}"}
        texts = body.get("input") if kind in ("openai", "ollama") else body.get("texts")
        if isinstance(texts, str):
            texts = [texts]
        auth = headers.get("authorization") or ""
        key = auth.removeprefix("Bearer ") if auth else headers.get("api-key")
        with self._lock:
            self.requests.append({"kind": kind, "path": path, "texts": list(texts or []),
                                  "model": body.get("model"), "body": body, "key": key})
        if self.api_key is not None and key != self.api_key:
            return 401, {}, {"error": {"message": "Incorrect API key provided",
                                       "type": "invalid_request_error"}}
        if not isinstance(texts, list) or not texts:
            return 400, {}, {"error": {"message": "input must be a non-empty list of strings"}}
        fault = self._take_fault(texts)
        if fault is not None and fault.slow:
            time.sleep(fault.slow)
        if fault is not None and fault.status is not None:
            said = f"injected {fault.status}" + (f"; headers={dict(headers)}" if fault.echo else "")
            return fault.status, fault.headers, {"error": {"message": said,
                                                           "type": "server_error"}}
        if fault is not None and fault.raw is not None:
            return 200, {"content-type": "text/html", **fault.headers}, fault.raw
        if self.delay:
            time.sleep(self.delay)
        dims = body.get("dimensions") or body.get("output_dimension")
        emb = self._embed(texts, dims)
        if fault is not None and fault.width is not None:
            emb = emb[:, : fault.width]
        order = list(range(len(texts)))
        if fault is not None and fault.short:
            order = order[:-1]
        if fault is not None and fault.shuffle:
            order = order[::-1]
        model = body.get("model")
        if kind == "openai":
            b64 = body.get("encoding_format") == "base64"
            data = [{"object": "embedding", "index": i,
                     "embedding": base64.b64encode(emb[i].astype("<f4").tobytes()).decode()
                     if b64 else emb[i].tolist()} for i in order]
            n_tokens = sum(len(t.split()) for t in texts)
            return 200, {}, {"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
        rows = [emb[i].tolist() for i in order]
        if kind == "cohere":
            return 200, {}, {"id": "local", "response_type": "embeddings_by_type",
                             "embeddings": {"float": rows}, "texts": texts,
                             "meta": {"api_version": {"version": "2"}}}
        return 200, {}, {"model": model, "embeddings": rows}


def _kind(path: str) -> str | None:
    path = urlsplit(path).path
    if path.endswith("/embeddings"):
        return "openai"
    if path.endswith("/v2/embed"):
        return "cohere"
    if path.endswith("/api/embed"):
        return "ollama"
    return None


def _handler(server: EmbeddingServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                body = {}
            with server._lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                status, headers, payload = server.handle(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
            finally:
                with server._lock:
                    server.in_flight -= 1
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                if "content-type" not in headers:
                    self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

    return Handler
