"""What each `embetter` command does, given its parsed arguments (the parser is in cli.py)."""

from __future__ import annotations

import ast
import os
import sys

from embetter._files import (
    UsageError,
    check_out_file,
    check_parquet_rows,
    labelled_texts,
    output_format,
    read_table,
    text_column,
    write_embeddings,
)
from embetter._pipelines import (
    load_pipeline,
    pipeline_format,
    read_for_pipeline,
    save_pipeline,
    set_progress,
    transform_texts,
)

#: the sentence model the commands encode with unless told otherwise (bundled)
DEFAULT_MODEL = "all-MiniLM-L6-v2"


def _progress() -> bool:
    # A progress bar helps people at a terminal and only clutters logs and pipes.
    return sys.stderr.isatty()


def _model_arg(model: str) -> str:
    # A relative model directory is stored absolute, so a saved pipeline loads from anywhere.
    return os.path.abspath(model) if os.path.isdir(model) else model


def info(message: str) -> None:
    print(message, file=sys.stderr)


# -- embed ---------------------------------------------------------------------------------------
def cmd_embed(args) -> int:
    fmt = output_format(args.out)  # refuse a bad --out before any work is done
    df = read_table(args.input)
    texts = text_column(df, args.text_col, args.input)
    if fmt == "parquet":
        check_parquet_rows(df, args.input, args.out)

    from embetter.text import SentenceEncoder

    enc = SentenceEncoder(_model_arg(args.model), batch_size=args.batch_size,
                          show_progress_bar=_progress())
    X = enc.transform(texts)
    write_embeddings(args.out, X, df)
    info(f"wrote {X.shape[0]} embeddings of dimension {X.shape[1]} to {args.out}")
    return 0


# -- finetune ------------------------------------------------------------------------------------
def parse_params(items) -> dict:
    params = {}
    for item in items or []:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param expects NAME=VALUE, got {item!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            # true/false/none as JSON and shells write them; any other bare word (relu) is
            # meant as a string
            value = {"true": True, "false": False, "none": None, "null": None}.get(
                raw.strip().lower(), raw)
        params[name.strip()] = value
    return params


def _make_tuner(kind: str, model: str, seed):
    if kind == "feedforward":
        from embetter.finetune import FeedForwardTuner

        return FeedForwardTuner(random_state=seed)
    if kind == "contrastive":
        from embetter.finetune import ContrastiveTuner

        return ContrastiveTuner(random_state=seed)
    try:
        from embetter.finetune import SbertTuner
    except ImportError:
        raise UsageError("--tuner sbert is not available in this installation") from None
    return SbertTuner(sent_tfm=model, random_state=seed)


def cmd_finetune(args) -> int:
    pipeline_format(args.out)  # refuse a bad --out before any work is done
    check_out_file(args.out)
    params = parse_params(args.param)
    # labels kept as written: "007" and "7" are two classes (a CSV column "label.v2" too; a
    # JSONL "cats.NAME" path names no column but a field of its records)
    texts, y = labelled_texts(read_table(args.input), args.text_col, args.label_col,
                              args.input, info)
    if len(set(map(str, y))) < 2:
        raise UsageError(
            f"{args.input}: label column {args.label_col!r} holds a single class "
            f"({y[0]!r}); fine-tuning needs at least two"
        )

    import pandas as pd
    from sklearn.pipeline import make_pipeline

    from embetter.grab import ColumnGrabber
    from embetter.text import SentenceEncoder

    model = _model_arg(args.model)
    tuner = _make_tuner(args.tuner, model, args.seed)
    if params:
        tuner.set_params(**params)
    tuner._validate_params()  # a bad -p value or --seed fails now, not after the encoding
    if "device" in tuner.get_params():  # (the device's name too: -p device=cuda on a CPU)
        from embetter._torch.device import available_device

        try:
            available_device(tuner.device)
        except ValueError as e:
            raise UsageError(f"-p device: {e}") from None
    if args.tuner == "sbert":
        steps = [ColumnGrabber(args.text_col), tuner]
    else:
        steps = [ColumnGrabber(args.text_col), SentenceEncoder(model), tuner]
    pipe = make_pipeline(*steps)
    set_progress(pipe, _progress())
    info(f"fitting {type(tuner).__name__} on {len(texts)} labelled texts ...")
    pipe.fit(pd.DataFrame({args.text_col: texts}), y)
    set_progress(pipe, False)  # the saved pipeline stays quiet when used from Python

    save_pipeline(pipe, args.out)
    info(f"saved the fitted pipeline ({' -> '.join(pipe.named_steps)}) to {args.out}")
    return 0


# -- transform -----------------------------------------------------------------------------------
def cmd_transform(args) -> int:
    fmt = output_format(args.out)
    pipe = load_pipeline(args.pipeline, trust=args.trust)
    df, texts, encode = read_for_pipeline(pipe, args.pipeline, args.input, args.text_col)
    if fmt == "parquet":
        check_parquet_rows(df, args.input, args.out)
    X = transform_texts(encode, texts, progress=_progress())
    write_embeddings(args.out, X, df)
    info(f"wrote {X.shape[0]} embeddings of dimension {X.shape[1]} to {args.out}")
    return 0


# -- project -------------------------------------------------------------------------------------
def cmd_project(args) -> int:
    from embetter._project import run_project

    if args.pipeline is not None and args.model is not None:
        raise UsageError("--model and --pipeline cannot be combined: the pipeline encodes with "
                         "the model it was fitted with")
    model = _model_arg(args.model if args.model is not None else DEFAULT_MODEL)
    return run_project(args.input, args.out, text_col=args.text_col, label_col=args.label_col,
                       pipeline=args.pipeline, trust=args.trust, model=model,
                       method=args.method, seed=args.seed, progress=_progress())


# -- demo ----------------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from embetter._demo import run_demo

    return run_demo(out_dir=args.out, sbert=args.sbert, seed=args.seed, data=args.data,
                    model=_model_arg(args.model), progress=_progress())
