"""Pipeline files of the command line: save and load them (skops or joblib), apply them.

A `.skops` file is loaded through the trusted-types check of `embetter._skops`; a `.joblib`
file is a pickle, loaded with a one-time note that it can run code.
"""

from __future__ import annotations

import os
import sys

from embetter._atomic import user_path
from embetter._files import UsageError, _format_of, atomic_path, read_table, text_column
from embetter._skops import UntrustedTypesError, load_skops, save_skops

PIPELINE_FORMATS = {".skops": "skops", ".joblib": "joblib", ".pkl": "joblib", ".pickle": "joblib"}
_warned_joblib = False


def pipeline_format(path) -> str:
    """`"skops"` or `"joblib"`, from the extension of a pipeline file."""
    return _format_of(path, PIPELINE_FORMATS, "pipeline")


def save_pipeline(pipe, path) -> None:
    """Save a fitted pipeline as skops or joblib (by extension), atomically."""
    if pipeline_format(path) == "skops":
        save_skops(pipe, path)
        return
    import joblib

    with atomic_path(path) as tmp:
        joblib.dump(pipe, tmp)


def load_pipeline(path, trust: bool = False):
    """Load a pipeline file: skops through the trusted-types check, joblib with a warning."""
    fmt = pipeline_format(path)
    path = user_path(path)  # `~` as the outputs expand it
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a directory, expected a pipeline file")
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    try:
        if fmt == "skops":
            pipe = load_skops(path, trust=trust)
        else:
            import joblib

            pipe = joblib.load(path)
    except UntrustedTypesError:
        raise
    except Exception as e:  # a corrupt or foreign file fails in many ways; all mean "not ours"
        raise UsageError(
            f"{path}: could not load a saved pipeline ({type(e).__name__}: {str(e)[:200]})"
        ) from None
    if not hasattr(pipe, "transform"):
        steps = getattr(pipe, "steps", None)
        if steps:  # a text -> vector pipeline with a classifier (or regressor) after it
            name, last = steps[-1]
            raise UsageError(
                f"{path}: the pipeline's last step {name!r} ({type(last).__name__}) has no "
                "transform, so it makes predictions, not vectors; this command needs a text "
                "-> vector pipeline: save the part before it (pipe[:-1]) and use that")
        raise UsageError(f"{path}: holds a {type(pipe).__name__}, not a pipeline with transform")
    global _warned_joblib
    if fmt == "joblib" and not _warned_joblib:
        _warned_joblib = True  # once per process: a loop over files need not repeat it
        print(f"embetter: note: {path} is a joblib (pickle) file; loading one can run any code "
              "it holds, so only load those you trust (`--out x.skops` saves a safe file)",
              file=sys.stderr)
    return pipe


def read_for_pipeline(pipe, pipeline_path, input_path, text_col):
    """INPUT's table and texts (the pipeline's own column by default), and the part of the
    pipeline that turns those texts into vectors."""
    from embetter.grab import ColumnGrabber

    steps = getattr(pipe, "steps", None)
    grabber = steps[0][1] if steps and isinstance(steps[0][1], ColumnGrabber) else None
    text_col = text_col or (grabber.colname if grabber is not None else None)
    if text_col is None:
        raise UsageError(
            f"{pipeline_path}: the pipeline does not start with a ColumnGrabber; "
            "pass --text-col to say which column holds the texts"
        )
    df = read_table(input_path)
    texts = text_column(df, text_col, input_path)
    return df, texts, (pipe[1:] if grabber is not None else pipe)


def transform_texts(encode, texts, progress: bool = False):
    """`encode.transform(texts)`, with the progress bars of its steps on or off."""
    if hasattr(encode, "steps"):
        set_progress(encode, progress)
    return encode.transform(texts)


def set_progress(pipe, show: bool) -> None:
    """Turn the progress bars of a pipeline's steps on or off."""
    for _, step in pipe.steps:
        if not hasattr(step, "get_params"):  # None or "passthrough"
            continue
        if "show_progress_bar" in step.get_params(deep=False):
            step.set_params(show_progress_bar=show)
