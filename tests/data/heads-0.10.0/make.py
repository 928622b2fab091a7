"""Write the fixtures of tests/test_heads_compat.py: FeedForwardTuner, ContrastiveTuner and
ContrastiveLearner as embetter 0.10.0 saved them (pickle and skops), fitted and then streamed.

These files must keep loading: run this script only with the release that wrote them (it was
run once, before the heads moved onto one engine); `expected.npz` holds the inputs and what the
saved estimators returned for them."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from embetter.finetune import ContrastiveLearner, ContrastiveTuner, FeedForwardTuner
from embetter.utils import save_skops

HERE = Path(__file__).resolve().parent


def data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(90, 8)).astype(np.float32)
    y = np.array(["a", "b", "c"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)]
    return X, y


def heads(X, y):
    ff = FeedForwardTuner(hidden_dim=6, n_epochs=3, batch_size=16, replay_size=20,
                          random_state=0).fit(X[:40], y[:40])
    ct = ContrastiveTuner(epochs=2, batch_size=32, replay_size=20, random_state=0)
    ct.fit(X[:40], y[:40])
    similar = (y[:40] == y[40:80]).astype(np.float32)
    cl = ContrastiveLearner(shape_out=6, epochs=2, batch_size=16, replay_size=10,
                            random_state=0).fit(X[:40], X[40:80], similar)
    for batch in (slice(40, 60), slice(60, 80)):
        ff.partial_fit(X[batch], y[batch])
        ct.partial_fit(X[batch], y[batch])
        cl.partial_fit(X[batch], X[batch][::-1], similar[batch.start - 40:batch.stop - 40])
    return {"ff": ff, "ct": ct, "cl": cl}


def main():
    X, y = data()
    expected = {"X": X, "y": y}
    for name, head in heads(X, y).items():
        with open(HERE / f"{name}.pkl", "wb") as f:
            pickle.dump(head, f)
        save_skops(head, HERE / f"{name}.skops")
        expected[f"{name}_transform"] = head.transform(X)
        # one more stream batch, as the release that saved the file continued the stream
        if name == "cl":
            head.partial_fit(X[80:], X[80:][::-1], np.ones(10, dtype=np.float32))
        else:
            head.partial_fit(X[80:], y[80:])
        expected[f"{name}_continued"] = head.transform(X)
    np.savez(HERE / "expected.npz", **expected)


if __name__ == "__main__":
    main()
