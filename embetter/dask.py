"""Apply a fitted embetter pipeline to texts on a Dask cluster, partition by partition.

Fitting needs a few hundred labelled texts and runs locally; applying the fitted pipeline to
millions of texts is the expensive part, and this module hands it to `dask.distributed`.

Dask is an optional dependency: `pip install 'embetter[dask]'`. Importing this module is cheap
and works without it; calling `transform` without it raises an `ImportError` saying how to
install it.
"""

from __future__ import annotations

import hashlib
import numbers
import threading

import numpy as np

from embetter._dask_worker import (
    count_rows,
    encode_partition,
    forget_kept,
    unpickle,
)
from embetter._guest import reopen_after_fork
from embetter._validation import check_int

__all__ = ["transform", "release"]

_INSTALL_HINT = "pip install 'embetter[dask]'"


def _import_dask():
    """Import what this module needs from Dask, or explain how to install it."""
    try:
        import dask
        import dask.array as da
        import distributed
    except ImportError as e:
        raise ImportError(
            f"embetter.dask needs Dask with its distributed scheduler ({e}); "
            f"install it with `{_INSTALL_HINT}`"
        ) from e
    return dask, da, distributed


def _kind(data) -> str:
    """'frame', 'series' or 'bag', judged without importing dask.dataframe (needs pyarrow)."""
    module = type(data).__module__ or ""
    if module.startswith("dask.bag"):
        return "bag"
    if module.startswith("dask.dataframe") or module.startswith("dask_expr"):
        # by dimensions: a Dask Series has a `columns` attribute too (its name)
        if getattr(data, "ndim", None) == 2:
            return "frame"
        if getattr(data, "ndim", None) == 1 and hasattr(data, "map_partitions"):
            return "series"
    raise TypeError(
        "data must be a Dask DataFrame, a Dask Series or a Dask Bag of texts, "
        f"got {type(data).__module__}.{type(data).__name__}"
    )


def _client(distributed, client):
    if client is not None:
        if not isinstance(client, distributed.Client):
            raise TypeError(
                f"client must be a distributed.Client or None, got {type(client).__name__}"
            )
        return client
    try:
        return distributed.default_client()
    except ValueError:
        raise ValueError(
            "client is None and no Dask client is running: start one first, e.g. "
            "`Client(LocalCluster())` on this machine or `Client('tcp://scheduler:8786')` "
            "for a running cluster, or pass client="
        ) from None


def _check_pipeline(pipeline):
    from sklearn.exceptions import NotFittedError

    from embetter._estimator_checks import check_steps_fitted

    if not callable(getattr(pipeline, "transform", None)) or isinstance(pipeline, type):
        raise TypeError(
            "pipeline must be a fitted estimator or Pipeline with a transform method, "
            f"got {type(pipeline).__name__}"
        )
    try:  # (every step that learns: scikit-learn's check looks at the last one only; a
        # stateless step of the user's before the last is taken, which the width probe runs)
        check_steps_fitted(pipeline, lenient=True)
    except NotFittedError as e:
        raise NotFittedError(
            f"pipeline ({type(pipeline).__name__}) is not fitted ({e}): fit it locally on a "
            "sample, then ship it to the cluster"
        ) from e


def _probe_dim(pipeline, data, kind: str) -> int:
    """The output width, from running the pipeline locally on two made-up rows."""
    texts = ["embetter probe text", "another probe text"]
    if kind == "bag":
        probe = texts
    else:
        import pandas as pd
        from dask.dataframe.utils import make_meta, meta_nonempty

        # Dask's made-up rows hold a missing value in text columns: put texts there instead.
        def fill(s):
            is_text = s.dtype == object or pd.api.types.is_string_dtype(s.dtype)
            return pd.Series(texts, index=s.index, name=s.name, dtype=s.dtype) if is_text else s

        probe = meta_nonempty(make_meta(data))
        if hasattr(probe, "columns"):
            probe = pd.DataFrame({c: fill(probe[c]) for c in probe.columns}, index=probe.index)
        else:
            probe = fill(probe)
    from sklearn.exceptions import NotFittedError

    try:
        out = _without_cache(pipeline).transform(probe)
    except NotFittedError:  # (a step the fitted check could not judge: as it says)
        raise
    except Exception as e:
        hint = "pass column= to embed one column of the DataFrame, or " if kind == "frame" else ""
        raise ValueError(
            "could not infer the output width by running the pipeline on two made-up rows "
            f"shaped like the data ({type(e).__name__}: {str(e)[:200]}); {hint}pass dim="
        ) from e
    shape = getattr(out, "shape", ())
    if len(shape) != 2:
        raise ValueError(
            f"pipeline.transform must return a 2-D array of embeddings, got shape {shape}"
        )
    return int(shape[1])


def _without_cache(pipeline):
    """`pipeline` with each disk cache in it (itself, a step, a union's or a fitted column
    transformer's part) replaced by the encoder it wraps: the made-up rows of the width probe
    are not stored in the caller's cache. A shallow copy where one is replaced: the fitted
    steps are the caller's own objects, only used."""
    import copy

    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    from embetter._cache import CachedEncoder

    if isinstance(pipeline, CachedEncoder):
        return _without_cache(pipeline.encoder)
    # (a column transformer runs the fitted copies it keeps in transformers_)
    field = ("steps" if isinstance(pipeline, Pipeline)
             else "transformer_list" if isinstance(pipeline, FeatureUnion)
             else "transformers_" if isinstance(pipeline, ColumnTransformer)
             and hasattr(pipeline, "transformers_") else None)
    if field is None:
        return pipeline
    parts = getattr(pipeline, field)
    bare = [(item[0], _without_cache(item[1]), *item[2:]) for item in parts]
    if all(new[1] is old[1] for new, old in zip(bare, parts)):
        return pipeline
    out = copy.copy(pipeline)
    setattr(out, field, bare)
    return out


def _check_lengths(lengths, n_partitions: int):
    if lengths is None or lengths is False:
        return None
    if lengths is True:
        return True
    try:
        out = tuple(lengths)
    except TypeError:
        out = None
    if (
        out is None
        or len(out) != n_partitions
        or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0
                   for n in out)
    ):
        raise ValueError(
            "lengths must be False, True or a sequence of one row count (int >= 0) per "
            f"partition ({n_partitions} partitions), got {lengths!r:.100}"
        )
    return tuple(int(n) for n in out)


def _pickled(pipeline) -> bytes:
    """The pipeline as bytes, pickled once: plain pickle, or cloudpickle for what it cannot do.

    Functions of a script or notebook (`__main__`) go by value, as Dask itself sends them: the
    workers do not have that module.
    """
    import pickle

    try:
        blob = pickle.dumps(pipeline, protocol=5)
        if b"__main__" not in blob:
            return blob
    except Exception:  # lambdas, local functions
        pass
    try:
        import cloudpickle

        return cloudpickle.dumps(pipeline, protocol=5)
    except Exception as e:
        raise TypeError(
            f"pipeline ({type(pipeline).__name__}) cannot be pickled to send it to the workers "
            f"({type(e).__name__}: {str(e)[:200]})"
        ) from e


def _content_key(blob: bytes) -> str:
    """A key that changes when the pipeline does (refit, set_params)."""
    return f"embetter-pipeline-{hashlib.blake2b(blob, digest_size=16).hexdigest()}"


def _ship(client, pipeline):
    """A future of the pipeline on the cluster that survives the loss of any worker.

    The pipeline is made by a task that unpickles bytes held in the task itself, so when the
    workers holding its copies die, the scheduler runs the task again elsewhere. (A scattered
    object cannot be remade: once the Active Memory Manager has dropped its spare copies, the
    death of the one worker left holding it cancels every job that needs it.) Other workers
    fetch their copy from a peer on their first partition, as they fetched scattered data.
    """
    import warnings

    import dask
    from dask.utils import parse_bytes

    blob = _pickled(pipeline)
    key = _content_key(blob)
    threshold = dask.config.get("distributed.admin.large-graph-warning-threshold", "10MB")
    # (the graph is the pipeline and a little more: a margin for the rest of it)
    if len(blob) + (64 << 10) < parse_bytes(threshold):  # (no advice: the filters untouched)
        return client.submit(unpickle, blob, key=key, pure=False)
    # The bytes travel once, on purpose (a fine-tuned model's weights can exceed the size at
    # which distributed suggests scattering instead): silence that advice here. One call at a
    # time: two threads' catch_warnings blocks, overlapping, restore each other's filters
    # (another library's block overlapping this one can still keep its one narrow filter).
    with _filters_lock, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        return client.submit(unpickle, blob, key=key, pure=False)


_filters_lock = threading.Lock()  # (around the warning filters, see _ship)
reopen_after_fork(_filters_lock)


def release(client=None) -> int:
    """Drop the pipelines (and the models they loaded) that workers keep between jobs: those
    of this process (the workers of a `LocalCluster(processes=False)` live here), and with
    `client` those of each of its workers. Returns how many copies were dropped.

    Arguments:
        client: a `distributed.Client` whose workers drop theirs too, or `None` for this
            process only.

    Usage:

    ```python
    from embetter.dask import release

    assert release() >= 0  # after the last job: free the workers' models
    ```
    """
    if client is not None and not callable(getattr(client, "run", None)):
        raise TypeError("client must be a dask.distributed Client (or None: this process "
                        f"only), got {type(client).__name__}")
    dropped = forget_kept()
    if client is not None:
        dropped += sum(client.run(forget_kept).values())
    return dropped


def transform(pipeline, data, *, column=None, client=None, dim=None, lengths=False):
    """Embed a Dask collection of texts with a fitted pipeline, one partition per task.

    The pipeline is pickled once and sent to the cluster once (not once per task); each
    worker takes its copy on its first partition and loads its sentence model once, and
    keeps that copy for the next job with the same fitted pipeline (the last two pipelines
    are kept per worker process; with `processes=False` workers, in this process). The
    scheduler keeps the pickled pipeline while the result lives, so a worker that dies
    mid-job costs its partitions, never the job. The result is a lazy Dask
    array of float32 embeddings, one row chunk per input partition (partitions known to be
    empty leave none), in the input's order, equal to what `pipeline.transform` gives locally
    (up to float32 rounding: partitions are batched differently).

    Arguments:
        pipeline: a fitted estimator or `Pipeline` with a `transform` method (an encoder,
            encoder + tuner, encoder + PCA...), fitted locally on a sample.
        data: a Dask DataFrame, Dask Series or Dask Bag. Each partition goes to
            `pipeline.transform` as it is (a pandas object, or a list for a Bag), so a
            pipeline starting with `ColumnGrabber` can take the whole DataFrame.
        column: with a DataFrame, the column of texts to embed (None: pass whole partitions).
        client: the `distributed.Client` to use; None uses the current default client. The
            result holds a future of that client's: with a client that is not the default
            one, compute it there too (`client.compute(X)`, `X.compute(scheduler=client)`);
            a plain `X.compute()` fails with Dask's "Missing dependency".
        dim: the output width. None infers it by running the pipeline locally on two made-up
            rows shaped like the data (a disk cache in it is skipped: the made-up rows are not
            stored); pass it when that is not possible.
        lengths: False leaves the row chunk sizes unknown (NaN); True computes them first (one
            extra pass over the input: `persist()` it if loading is expensive); or a sequence
            of one row count per partition when you know them.

    Usage:

    ```python
    import dask.dataframe as dd
    import pandas as pd
    from distributed import Client, LocalCluster
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline

    from embetter.dask import transform
    from embetter.text import LiteTextEncoder

    texts = [f"review {i}: {w} film" for i in range(40) for w in ("great", "dull")]
    pipe = make_pipeline(LiteTextEncoder(n_components=8, random_state=0), PCA(4))
    pipe.fit(texts[:30])

    df = dd.from_pandas(pd.DataFrame({"text": texts}), npartitions=4)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster):
            X = transform(pipe, df, column="text", lengths=True)
            assert X.chunks == ((20, 20, 20, 20), (4,))
            assert abs(X.compute() - pipe.transform(texts)).max() < 1e-5
    ```
    """
    dask, da, distributed = _import_dask()
    kind = _kind(data)
    if column is not None:
        if kind != "frame":
            raise ValueError(
                f"column is only for a Dask DataFrame; data is a Dask {kind}, got "
                f"column={column!r}"
            )
        if isinstance(column, (list, tuple)) or column.__hash__ is None:  # (sets, dicts)
            raise TypeError(f"column must be one column name (the texts' column), got "
                            f"{column!r}")
        if column not in data.columns:
            raise ValueError(
                f"column {column!r} is not in the DataFrame; its columns are "
                f"{list(data.columns)[:10]}"
            )
        # Select early: Dask then reads only that column (from Parquet, say).
        data, kind = data[column], "series"
    _check_pipeline(pipeline)
    client = _client(distributed, client)
    dim = check_int(dim, "dim", allow_none=True)
    dim = _probe_dim(pipeline, data, kind) if dim is None else dim

    parts = data.to_delayed()
    lengths = _check_lengths(lengths, len(parts))
    if lengths is True:
        lengths = tuple(
            int(n) for n in client.compute([dask.delayed(count_rows)(p) for p in parts], sync=True)
        )
    # Keyed by content: transforming again with the same fitted pipeline reuses the copies
    # (and the models they loaded) that the workers keep (`worker_copy`).
    remote = _ship(client, pipeline)
    encode = dask.delayed(encode_partition, pure=True)
    blocks = [
        da.from_delayed(
            encode(part, remote, remote.key, dim, None if lengths is None else lengths[i]),
            shape=(np.nan if lengths is None else lengths[i], dim),
            dtype=np.float32,
        )
        for i, part in enumerate(parts)
    ]
    if not blocks:
        return da.zeros((0, dim), dtype=np.float32)
    return da.concatenate(blocks, axis=0)
