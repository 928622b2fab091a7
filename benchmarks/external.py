"""Texts/s of the hosted-API encoders at 1, 4 and 16 requests in flight.

Runs against the local server of the tests (tests/_api_server.py) on 127.0.0.1, which answers
OpenAI-, Cohere- and Ollama-shaped requests with real all-MiniLM-L6-v2 embeddings and waits a
simulated network latency before each reply. The model embeds the texts once, before the
timing, and the server serves those rows: a hosted service's compute is not what the client
can speed up (and on a shared 2-core machine it would drown the measurement); the round trips
are. Concurrency 1 is how embetter 0.9.1 sent batches: one after the other. Every
run's output is compared with the model's own embeddings of the same texts, so a fast but
wrong (misordered, partial) result would show.

    python benchmarks/external.py                    # 0.2 s latency, the support inbox
    python benchmarks/external.py --latency 0.5 --batch-size 32

Timings on a shared machine are noisy: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/_api_server.py

from embetter.datasets import load_support_inbox  # noqa: E402
from embetter.external import CohereEncoder, OllamaEncoder, OpenAIEncoder  # noqa: E402
from embetter.text import SentenceEncoder  # noqa: E402
from tests._api_server import EmbeddingServer  # noqa: E402


def encoders(url: str, batch_size: int, concurrency: int):
    common = {"model": "all-MiniLM-L6-v2", "api_key": "EMPTY", "batch_size": batch_size,
              "max_concurrency": concurrency}
    return {
        "OpenAIEncoder": OpenAIEncoder(base_url=f"{url}/v1", **common),
        "CohereEncoder": CohereEncoder(base_url=url, **common),
        "OllamaEncoder": OllamaEncoder(base_url=url, **common),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds added per request")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--texts", type=int, default=640, help="how many texts to embed")
    parser.add_argument("--concurrency", default="1,4,16")
    args = parser.parse_args()

    texts = list(load_support_inbox()[0])
    texts = (texts * (args.texts // len(texts) + 1))[: args.texts]
    texts = [f"{t} ({i})" for i, t in enumerate(texts)]  # all distinct
    model = SentenceEncoder(device="cpu")
    reference = model.transform(texts)
    rows_of = dict(zip(texts, reference))

    def serve(batch):  # the model's own rows, embedded above; anything else live
        return np.stack([rows_of[t] if t in rows_of else model.transform([t])[0] for t in batch])

    server = EmbeddingServer(serve, delay=args.latency).start()
    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"{len(texts)} texts, batches of {args.batch_size}, {args.latency:.2f} s simulated "
          f"latency per request, all-MiniLM-L6-v2 embeddings (precomputed) on the server")
    print(f"load average before: {tuple(round(x, 2) for x in os.getloadavg())}")
    rows = []
    try:
        for concurrency in levels:
            for name, enc in encoders(server.url, args.batch_size, concurrency).items():
                enc.transform(texts[:2])  # build the client outside the timing
                server.reset()
                start = time.perf_counter()
                X = enc.transform(texts)
                seconds = time.perf_counter() - start
                rows.append({
                    "encoder": name, "concurrency": concurrency,
                    "texts/s": round(len(texts) / seconds, 1), "seconds": round(seconds, 2),
                    "requests": len(server.requests), "max in flight": server.max_in_flight,
                    "max |diff| to model": float(np.abs(X - reference).max()),
                })
    finally:
        server.stop()
    table = pd.DataFrame(rows)
    base = table[table["concurrency"] == levels[0]].set_index("encoder")["texts/s"]
    table["speed-up"] = [round(r["texts/s"] / base[r["encoder"]], 2) for _, r in table.iterrows()]
    print(table.to_string(index=False))
    print(f"load average after: {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
