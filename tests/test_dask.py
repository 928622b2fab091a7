"""embetter.dask on a real LocalCluster: 2 worker processes with 1 thread each."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed", reason="embetter.dask needs the dask extra (in dev)")
pytest.importorskip("pyarrow", reason="dask.dataframe needs pyarrow (in dev)")

import dask.bag as db  # noqa: E402
import dask.dataframe as dd  # noqa: E402
from distributed import Client, LocalCluster, WorkerPlugin  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402

from embetter.dask import transform  # noqa: E402
from embetter.grab import ColumnGrabber, KeyGrabber  # noqa: E402
from embetter.text import SentenceEncoder  # noqa: E402

# Partitions are batched differently from one local call (and workers run torch on 1 thread),
# so sums are accumulated in another order: equal up to float32 rounding, not bit for bit.
TOL = {"rtol": 1e-4, "atol": 1e-5}


class CountModelLoads(WorkerPlugin):
    """Counts, in each worker process, the calls that load a sentence model from disk."""

    name = "count-model-loads"

    def setup(self, worker):
        from embetter.text import _models

        if getattr(_models.load_sentence_transformer, "_counting", False):
            return
        real = _models.load_sentence_transformer

        def counting(*args, **kwargs):
            _models._test_load_count += 1
            return real(*args, **kwargs)

        counting._counting = True
        _models._test_load_count = 0
        _models.load_sentence_transformer = counting


def _reset_loads():
    from embetter.text import _models

    _models._test_load_count = 0


def _loads():
    from embetter.text import _models

    return _models._test_load_count


def _first_columns(X, weights):
    """Two columns of the rows; `weights` only makes the pipeline large to pickle."""
    assert weights.size > 0
    return np.asarray(X, dtype=np.float32)[:, :2]


def _slow(X):
    """Identity, slowly: keeps partitions running long enough to kill a worker under them."""
    time.sleep(0.4)
    return X


@pytest.fixture(scope="module")
def client():
    # Not the default client: tests pass client= and compute through it explicitly.
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address=None, silence_logs=40) as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        c.register_plugin(CountModelLoads())
        yield c


@pytest.fixture
def fresh_model(tiny_model_path, tmp_path):
    """A copy of the tiny model at a new path, so no worker has it loaded already."""
    path = tmp_path / "model"
    shutil.copytree(tiny_model_path, path)
    return str(path)


@pytest.fixture
def frame(corpus):
    texts = corpus  # 343 short sentences
    return pd.DataFrame({"id": np.arange(len(texts)), "text": texts})


def test_dataframe_column_with_pca_matches_local_and_loads_model_once_per_worker(
    client, fresh_model, frame
):
    pipe = make_pipeline(SentenceEncoder(fresh_model), PCA(8, random_state=0))
    pipe.fit(frame["text"].tolist()[::3])
    expected = pipe.transform(frame["text"].tolist())
    ddf = dd.from_pandas(frame, npartitions=8)
    client.run(_reset_loads)

    X = transform(pipe, ddf, column="text", client=client, lengths=True)
    assert X.dtype == np.float32
    assert X.chunks[1] == (8,)
    assert X.chunks[0] == tuple(ddf.map_partitions(len).compute())
    got = client.compute(X, sync=True)

    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **TOL)
    loads = client.run(_loads)
    # 8 partitions on 2 workers: some worker ran several, and still loaded the model once.
    assert sorted(loads.values()) in ([1, 1], [0, 1]), loads

    # Same fitted pipeline again: the workers' copies (and models) are reused, also after
    # Dask's memory manager has dropped the spare copies and must send the pipeline again.
    _sole_pipeline_holder(client, pipe)
    client.run(gc.collect)  # what a dropped copy alone held is gone now, not at some later time
    again = transform(pipe, ddf, column="text", client=client, dim=8)
    np.testing.assert_allclose(client.compute(again, sync=True), expected, **TOL)
    assert client.run(_loads) == loads
    # Refitted: a new copy is shipped, never the stale one.
    pipe.set_params(pca__n_components=3).fit(frame["text"].tolist()[1::3])
    refit = client.compute(transform(pipe, ddf, column="text", client=client), sync=True)
    np.testing.assert_allclose(refit, pipe.transform(frame["text"].tolist()), **TOL)


def test_series_and_bag_keep_order_with_unknown_chunks(client, tiny_model_path, corpus):
    enc = SentenceEncoder(tiny_model_path)
    expected = enc.transform(corpus)

    series = dd.from_pandas(pd.Series(corpus, name="text"), npartitions=5)
    X = transform(enc, series, client=client)
    assert X.shape[1] == 32 and np.isnan(X.shape[0]) and X.numblocks == (5, 1)
    np.testing.assert_allclose(client.compute(X, sync=True), expected, **TOL)

    bag = db.from_sequence(corpus, npartitions=4).map(str.strip)  # lazy partitions
    X = transform(enc, bag, client=client, lengths=True)
    assert sum(X.chunks[0]) == len(corpus)
    np.testing.assert_allclose(client.compute(X, sync=True), expected, **TOL)


def test_in_memory_model_is_shipped_not_reloaded(client, tiny_model_path, corpus):
    # Same situation as a fine-tuned SbertTuner: the weights exist only in this process.
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    with __import__("torch").no_grad():
        for p in model.parameters():
            p.add_(0.01)  # now it matches nothing on disk
    pipe = make_pipeline(SentenceEncoder(model), StandardScaler()).fit(corpus)
    expected = pipe.transform(corpus)
    client.run(_reset_loads)

    bag = db.from_sequence(corpus, npartitions=6)
    got = client.compute(transform(pipe, bag, client=client), sync=True)
    np.testing.assert_allclose(got, expected, **TOL)
    assert set(client.run(_loads).values()) == {0}


@pytest.mark.parametrize("tuner", ["feedforward", "contrastive", "sbert"])
def test_fitted_tuners_run_on_the_cluster(client, tiny_model_path, frame, tuner):
    """A pipeline with a tuner fitted here gives, on the workers, what it gives locally."""
    from embetter.finetune import ContrastiveTuner, FeedForwardTuner, SbertTuner

    texts = frame["text"].tolist()
    y = np.array([t.split()[2] for t in texts])  # the verb: seven classes
    if tuner == "sbert":  # fine-tunes the tiny model itself: its weights exist only here
        pipe = make_pipeline(ColumnGrabber("text"),
                             SbertTuner(tiny_model_path, learning_rate=1e-3, random_state=0))
    else:
        cls = FeedForwardTuner if tuner == "feedforward" else ContrastiveTuner
        pipe = make_pipeline(ColumnGrabber("text"), SentenceEncoder(tiny_model_path),
                             cls(random_state=0))
    pipe.fit(frame[:120], y[:120])
    expected = pipe.transform(frame)
    got = client.compute(
        transform(pipe, dd.from_pandas(frame, npartitions=4), client=client), sync=True
    )
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **TOL)


def test_parquet_files_to_npy_files_on_the_workers(client, fresh_model, corpus, tmp_path):
    """The file-to-file recipe of docs/dask.md: the workers read Parquet and write .npy."""
    import dask
    import dask.array as da

    folder = tmp_path / "texts"
    folder.mkdir()
    parts = [corpus[i::3] for i in range(3)]
    for i, part in enumerate(parts):
        pd.DataFrame({"text": part, "id": range(len(part))}).to_parquet(
            folder / f"part-{i}.parquet")
    enc = SentenceEncoder(fresh_model)
    client.run(_reset_loads)

    texts = dd.read_parquet(str(folder / "*.parquet"), columns=["text"])
    X = transform(enc, texts, column="text", client=client, lengths=True)
    assert X.chunks[0] == tuple(len(p) for p in parts)
    with dask.config.set(scheduler=client.get):  # the module's client is not the default
        da.to_npy_stack(str(tmp_path / "out"), X)
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["0.npy", "1.npy", "2.npy",
                                                                      "info"]
    got = da.from_npy_stack(str(tmp_path / "out")).compute()
    expected = enc.transform([t for part in parts for t in part])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, **TOL)
    assert sorted(client.run(_loads).values()) in ([1, 1], [0, 1])  # one load per worker


def test_whole_dataframe_through_a_column_grabber(client, tiny_model_path, frame):
    pipe = make_pipeline(ColumnGrabber("text"), SentenceEncoder(tiny_model_path))
    ddf = dd.from_pandas(frame, npartitions=3)
    with client.as_current():  # client=None: the current client
        X = transform(pipe, ddf)
    assert X.shape[1] == 32
    np.testing.assert_allclose(client.compute(X, sync=True), pipe.transform(frame), **TOL)


def test_empty_partitions_give_empty_blocks(client, tiny_model_path, frame):
    pipe = make_pipeline(SentenceEncoder(tiny_model_path), PCA(4)).fit(frame["text"])
    ddf = dd.from_pandas(frame, npartitions=4)
    # partitions 2-4 become empty (PCA refuses 0 rows); map_partitions, so that Dask's
    # optimizer cannot prune or merge them away
    kept = ddf.map_partitions(lambda df: df[df["id"] < 50])
    X = transform(pipe, kept, column="text", client=client, lengths=True)
    assert X.chunks == ((50,), (4,))  # dask.array drops chunks known to be empty
    np.testing.assert_allclose(client.compute(X, sync=True),
                               pipe.transform(frame["text"][:50]), **TOL)


def test_bad_arguments_are_named(client, tiny_model_path, frame):
    enc = SentenceEncoder(tiny_model_path)
    ddf = dd.from_pandas(frame, npartitions=2)
    bag = db.from_sequence(frame["text"].tolist(), npartitions=2)
    with pytest.raises(TypeError, match="data must be a Dask DataFrame"):
        transform(enc, frame["text"].tolist(), client=client)
    with pytest.raises(ValueError, match="column 'nope' is not in the DataFrame"):
        transform(enc, ddf, column="nope", client=client)
    with pytest.raises(ValueError, match="one-column DataFrame.*pass column="):
        transform(enc, ddf, client=client)  # two columns, and the encoder wants texts
    with pytest.raises(ValueError, match="column is only for a Dask DataFrame"):
        transform(enc, bag, column="text", client=client)
    with pytest.raises(NotFittedError, match="fit it locally on a sample"):
        transform(make_pipeline(enc, PCA(2)), bag, client=client)
    with pytest.raises(TypeError, match="transform method"):
        transform("all-MiniLM-L6-v2", bag, client=client)
    with pytest.raises(TypeError, match="client must be a distributed.Client"):
        transform(enc, bag, client="tcp://localhost:8786")
    with pytest.raises(ValueError, match="dim must be None or a positive int"):
        transform(enc, bag, client=client, dim=0)
    with pytest.raises(ValueError, match="lengths must be False, True or a sequence"):
        transform(enc, bag, client=client, lengths=[1])
    with pytest.raises(ValueError, match="no Dask client is running"):
        transform(enc, bag)
    # a pipeline taking dicts cannot be probed with made-up texts: the error says to pass dim
    records = db.from_sequence([{"text": t} for t in frame["text"]], npartitions=2)
    by_key = make_pipeline(KeyGrabber("text"), enc)
    with pytest.raises(ValueError, match="pass dim="):
        transform(by_key, records, client=client)
    got = client.compute(transform(by_key, records, client=client, dim=32), sync=True)
    np.testing.assert_allclose(got, enc.transform(frame["text"]), **TOL)
    # wrong promises are caught on the workers, with what was promised and what came
    with pytest.raises(ValueError, match=r"expected \(\d+, 5\) \(dim=5\)"):
        client.compute(transform(enc, bag, client=client, dim=5), sync=True)
    with pytest.raises(ValueError, match="lengths says this partition has 1000 rows"):
        wrong = [1000] * bag.npartitions
        client.compute(transform(enc, bag, client=client, lengths=wrong), sync=True)


def test_job_survives_a_worker_killed_mid_job(client, tiny_model_path, corpus):
    pipe = make_pipeline(FunctionTransformer(_slow), SentenceEncoder(tiny_model_path))
    pipe.fit(corpus)
    expected = SentenceEncoder(tiny_model_path).transform(corpus)
    bag = db.from_sequence(corpus, npartitions=12)  # ~0.4 s each: ~2.5 s on 2 workers
    X = transform(pipe, bag, client=client, dim=32)
    job = client.compute(X)

    # Kill a worker once it holds finished partitions and the job is still running, so both
    # its running task and its finished results are lost and must be redone elsewhere.
    deadline = time.monotonic() + 30
    victim = None
    while victim is None and time.monotonic() < deadline:
        for worker, keys in client.has_what().items():
            if any(not str(k).startswith("embetter-pipeline-") for k in keys):
                # a finished partition waiting to be concatenated
                victim = worker
                break
        time.sleep(0.05)
    assert victim is not None and not job.done(), "no partition finished in time"
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)  # a hard crash: no goodbye to the scheduler

    got = job.result(timeout=60)
    np.testing.assert_allclose(got, expected, **TOL)
    assert victim not in client.scheduler_info()["workers"]


def _sole_pipeline_holder(client, pipeline=None, timeout=90):
    """The one worker holding a shipped pipeline (`pipeline`'s, else any), once exactly one
    does (spare copies of data no task waits for are dropped by distributed's memory manager
    every 2 s; asked to run now as well, so that a busy machine does not stretch the wait).
    Naming the pipeline matters on a busy machine: an earlier test's pipeline, still
    referenced until its futures are collected, may sit on the other worker."""
    from embetter.dask import _content_key, _pickled

    prefix = "embetter-pipeline-" if pipeline is None else _content_key(_pickled(pipeline))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holders = [w for w, keys in client.has_what().items()
                   if any(str(k).startswith(prefix) for k in keys)]
        if len(holders) == 1:
            return holders[0]
        client.amm.run_once()
        time.sleep(0.2)
    raise AssertionError(f"the pipeline is not held by exactly one worker: {holders}")


def test_job_survives_losing_the_only_copy_of_the_pipeline(client, tiny_model_path, corpus):
    # Distributed's memory manager drops spare copies of data nobody waits for; the worker left
    # holding the one copy can then die. A scattered pipeline cannot be remade and the job
    # would be cancelled ("already forgotten"); ours is remade from the bytes the scheduler keeps.
    pipe = make_pipeline(SentenceEncoder(tiny_model_path), PCA(4, random_state=0)).fit(corpus)
    expected = pipe.transform(corpus)
    X = transform(pipe, db.from_sequence(corpus, npartitions=4), client=client, dim=4)
    victim = _sole_pipeline_holder(client, pipe)
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)

    got = client.compute(X, sync=True)
    np.testing.assert_allclose(got, expected, **TOL)
    assert victim not in client.scheduler_info()["workers"]


def test_a_large_pipeline_is_sent_without_distributed_s_size_warning(client, corpus):
    import warnings

    big = np.random.default_rng(0).standard_normal((4_000_000,)).astype(np.float32)  # 16 MB
    pipe = make_pipeline(FunctionTransformer(_first_columns, kw_args={"weights": big}))
    pipe.fit(np.ones((2, 3)))
    rows = db.from_sequence([[1.0, 2.0, 3.0]] * 6, npartitions=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X = transform(pipe, rows, client=client, dim=2)
    assert [str(w.message) for w in caught] == []
    got = client.compute(X, sync=True)
    np.testing.assert_allclose(got, [[1.0, 2.0]] * 6)


def test_release_drops_the_pipelines_the_workers_keep(client, tiny_model_path, corpus):
    from embetter.dask import release

    enc = SentenceEncoder(tiny_model_path)
    series = dd.from_pandas(pd.Series(corpus[:40], name="text"), npartitions=2)
    client.compute(transform(enc, series, client=client), sync=True)
    kept = client.run(lambda: len(__import__("embetter._dask_worker")._dask_worker.KEPT))
    assert sum(kept.values()) >= 1  # a worker that ran a partition keeps the pipeline
    assert release(client) >= 1
    kept = client.run(lambda: len(__import__("embetter._dask_worker")._dask_worker.KEPT))
    assert sum(kept.values()) == 0
    assert release(client) == 0


def test_a_missing_text_names_its_partition(client, tiny_model_path):
    # before: "X[5] is missing", counted from the start of an unnamed partition
    frame = pd.DataFrame({"text": [f"text {i}" for i in range(40)]}, index=range(100, 140))
    frame.loc[135, "text"] = None
    X = transform(SentenceEncoder(tiny_model_path), dd.from_pandas(frame, npartitions=4),
                  column="text", client=client)
    with pytest.raises(ValueError, match=r"partition of index 130 to 139 .*X\[5\] is missing"):
        client.compute(X, sync=True)


def test_an_error_of_another_kind_keeps_its_type_in_a_partition(tiny_model_path):
    from embetter._dask_worker import encode_partition
    from embetter.text import LiteTextEncoder

    with pytest.raises(NotFittedError):  # not rebuilt as a plain ValueError
        encode_partition(pd.Series(["a b", "c d"], index=[10, 11]), LiteTextEncoder(),
                          "unfitted-lite", 4, None)


def test_a_bag_partition_keeps_its_error(tiny_model_path):
    from embetter._dask_worker import encode_partition
    from embetter.text import LiteTextEncoder

    encoder = LiteTextEncoder(n_components=2, random_state=0).fit(["a b", "c d", "e f"])
    # a Bag's partition is a list, whose `index` is a method: "no len()" before
    with pytest.raises(ValueError, match=r"X\[1\] is missing"):
        encode_partition(["a film", None, "great"], encoder, "lite", 2, None)
