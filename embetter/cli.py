"""The `embetter` command line: demo, embed, finetune, transform and project."""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import sys
import textwrap

from embetter import __version__
from embetter._files import (
    UsageError,
    check_out_file,
    check_parquet_rows,
    label_column,
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
from embetter._st import progress_bars_off

DEFAULT_MODEL = "all-MiniLM-L6-v2"
TUNERS = ("feedforward", "contrastive", "sbert")
METHODS = ("umap", "pca", "tsne")

DESCRIPTION = "scikit-learn compatible text embeddings, and fine-tuning them to your task."
EPILOG = """\
Run `embetter COMMAND --help` for the options and examples of a command.
Bad input gives a one-line error and exit code 2."""



def _seed(text: str) -> int:
    """`--seed`: an int from 0 to 2**32 - 1 (what numpy, scikit-learn and UMAP take)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**32 - 1, got {value}")
    return value

def _progress() -> bool:
    # A progress bar helps people at a terminal and only clutters logs and pipes.
    return sys.stderr.isatty()


def _model_arg(model: str) -> str:
    # A relative model directory is stored absolute, so a saved pipeline loads from anywhere.
    return os.path.abspath(model) if os.path.isdir(model) else model


def _info(message: str) -> None:
    print(message, file=sys.stderr)


# -- embed ---------------------------------------------------------------------------------------
def _embed(args) -> int:
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
    _info(f"wrote {X.shape[0]} embeddings of dimension {X.shape[1]} to {args.out}")
    return 0


# -- finetune ------------------------------------------------------------------------------------
def _parse_params(items) -> dict:
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


def _finetune(args) -> int:
    pipeline_format(args.out)  # refuse a bad --out before any work is done
    check_out_file(args.out)
    params = _parse_params(args.param)
    # labels kept as written: "007" and "7" are two classes (a CSV column "label.v2" too; a
    # JSONL "cats.NAME" path names no column but a field of its records)
    df = read_table(args.input)
    keep, y = label_column(df, args.label_col, args.input)
    if keep is not None:  # rows without this label are left out, their texts unread
        if not keep.all():
            _info(f"{args.input}: {int((~keep).sum())} row(s) without a label left out")
        df = df[keep].reset_index(drop=True)
    texts = text_column(df, args.text_col, args.input)
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
    if args.tuner == "sbert":
        steps = [ColumnGrabber(args.text_col), tuner]
    else:
        steps = [ColumnGrabber(args.text_col), SentenceEncoder(model), tuner]
    pipe = make_pipeline(*steps)
    set_progress(pipe, _progress())
    _info(f"fitting {type(tuner).__name__} on {len(texts)} labelled texts ...")
    pipe.fit(pd.DataFrame({args.text_col: texts}), y)
    set_progress(pipe, False)  # the saved pipeline stays quiet when used from Python

    save_pipeline(pipe, args.out)
    _info(f"saved the fitted pipeline ({' -> '.join(pipe.named_steps)}) to {args.out}")
    return 0


# -- transform -----------------------------------------------------------------------------------
def _transform(args) -> int:
    fmt = output_format(args.out)
    pipe = load_pipeline(args.pipeline, trust=args.trust)
    df, texts, encode = read_for_pipeline(pipe, args.pipeline, args.input, args.text_col)
    if fmt == "parquet":
        check_parquet_rows(df, args.input, args.out)
    X = transform_texts(encode, texts, progress=_progress())
    write_embeddings(args.out, X, df)
    _info(f"wrote {X.shape[0]} embeddings of dimension {X.shape[1]} to {args.out}")
    return 0


# -- project -------------------------------------------------------------------------------------
def _project(args) -> int:
    from embetter._project import run_project

    return run_project(args.input, args.out, text_col=args.text_col, label_col=args.label_col,
                       pipeline=args.pipeline, trust=args.trust, model=_model_arg(args.model),
                       method=args.method, seed=args.seed, progress=_progress())


def _trust_arg(parser) -> None:
    parser.add_argument("--trust", action="store_true",
                        help="load a .skops pipeline even if it holds types that are not trusted "
                             "(only for files from a source you trust)")


# -- demo ----------------------------------------------------------------------------------------
def _demo(args) -> int:
    from embetter._demo import run_demo

    return run_demo(out_dir=args.out, sbert=args.sbert, seed=args.seed, data=args.data,
                    model=_model_arg(args.model), progress=_progress())


# -- parser --------------------------------------------------------------------------------------
def _sub(sub, name: str, help: str, description: str, examples: str):
    parser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # also after the command, where "rerun with --debug" sends people
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback when something goes wrong")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `embetter` command."""
    parser = argparse.ArgumentParser(
        prog="embetter", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(
            prog, max_help_position=30
        ),
    )
    parser.add_argument("-V", "--version", action="version", version=f"embetter {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when something goes wrong")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")

    demo = _sub(
        sub, "demo", "the main story: tune on a few hundred labels, compare, plot",
        "The main story, offline: encode 638 short support-inbox messages with the bundled\n"
        "all-MiniLM-L6-v2, fit FeedForwardTuner and ContrastiveTuner (and SbertTuner with\n"
        "--sbert) on the training half, print held-out accuracy of a logistic regression and\n"
        "of 5-nearest-neighbours on raw vs tuned embeddings, and save PCA plots of the test\n"
        "embeddings coloured by label.",
        """
        embetter demo
        embetter demo --out plots/ --seed 3
        embetter demo --sbert          # also fine-tune the sentence model itself (slower)
        """,
    )
    demo.add_argument("--out", default="demo-output", metavar="DIR",
                      help="folder for the PNG plots (default: %(default)s)")
    demo.add_argument("--sbert", action="store_true",
                      help="also fine-tune the whole sentence model with SbertTuner (slower)")
    demo.add_argument("--seed", type=_seed, default=0,
                      help="seed for the train/test split and the tuners (default: %(default)s)")
    demo.add_argument("--data", metavar="CSV",
                      help="run the story on your own CSV with columns text,label instead")
    demo.add_argument("--model", default=DEFAULT_MODEL,
                      help="sentence model name or path (default: %(default)s, bundled)")
    demo.set_defaults(func=_demo)

    embed = _sub(
        sub, "embed", "encode a text column of a CSV, JSONL or Parquet file",
        "Encode the texts in one column of a CSV, JSONL or Parquet file with a sentence model.\n"
        "Output: .npy holds the float32 matrix (one row per input row, in order); .parquet\n"
        "holds the input columns plus an `embedding` column.",
        """
        embetter embed messages.csv --text-col text --out messages.npy
        embetter embed tickets.jsonl --text-col body --model path/to/model --out tickets.parquet
        """,
    )
    embed.add_argument("input", metavar="INPUT", help="a .csv, .jsonl or .parquet file")
    embed.add_argument("--text-col", required=True, metavar="COL",
                       help="the column holding the texts")
    embed.add_argument("--model", default=DEFAULT_MODEL,
                       help="sentence model name or local path (default: %(default)s, bundled)")
    embed.add_argument("--batch-size", type=int, default=None, metavar="N",
                       help="texts per forward pass (default: the encoder's own: 32 texts "
                            "on a CPU, batches by a token budget on a GPU)")
    embed.add_argument("--out", required=True, metavar="FILE",
                       help="where to write the embeddings: a .npy or .parquet file")
    embed.set_defaults(func=_embed)

    finetune = _sub(
        sub, "finetune", "fit an encoder + tuner pipeline on labelled texts and save it",
        "Fit a scikit-learn pipeline ColumnGrabber -> SentenceEncoder -> tuner on the labelled\n"
        "rows of INPUT and save it: a .skops file is safe to share (it is loaded as data, see\n"
        "embetter.utils.load_skops), a .joblib file is a pickle. Apply it with `embetter\n"
        "transform` or, in Python, pipe.transform(dataframe) or pipe[1:].transform(texts).\n"
        "With --tuner sbert the sentence model itself is fine-tuned and\n"
        "the pipeline is ColumnGrabber -> SbertTuner. For JSONL records with a `cats` dict of\n"
        "partial labels, --label-col cats.NAME trains on the records that carry NAME.",
        """
        embetter finetune train.csv --text-col text --label-col label --out tuned.skops
        embetter finetune train.csv --text-col text --label-col label --tuner contrastive \\
            --param hidden_dim=100 --seed 1 --out tuned.skops
        embetter finetune inbox.jsonl --text-col text --label-col cats.billing --out billing.skops
        """,
    )
    finetune.add_argument("input", metavar="INPUT", help="a .csv, .jsonl or .parquet file")
    finetune.add_argument("--text-col", required=True, metavar="COL",
                          help="the column holding the texts")
    finetune.add_argument("--label-col", required=True, metavar="COL",
                          help="the column holding the labels (or cats.NAME for JSONL records)")
    finetune.add_argument("--tuner", choices=TUNERS, default="feedforward",
                          help="which tuner to fit (default: %(default)s)")
    finetune.add_argument("--model", default=DEFAULT_MODEL,
                          help="sentence model name or local path (default: %(default)s, bundled)")
    finetune.add_argument("--seed", type=_seed, default=0,
                          help="random_state of the tuner (default: %(default)s)")
    finetune.add_argument("--param", "-p", action="append", metavar="NAME=VALUE",
                          help="set a tuner parameter, e.g. -p hidden_dim=100 (repeatable); "
                               "the value is read as a Python literal (100, 0.5, True, "
                               "[8, 16]; true/false/none too), a bare word as a string")
    finetune.add_argument("--out", required=True, metavar="PIPELINE",
                          help="where to save the fitted pipeline: a .skops (safe to share) "
                               "or .joblib file")
    finetune.set_defaults(func=_finetune)

    transform = _sub(
        sub, "transform", "apply a saved pipeline to a text column",
        "Load a pipeline saved by `embetter finetune` (or any text -> vector pipeline saved\n"
        "with skops or joblib) and write the embeddings of INPUT's texts. The text column\n"
        "defaults to the one the pipeline was fitted on. A .skops file is refused when it\n"
        "names types that neither skops nor embetter trusts (--trust accepts them); a .joblib\n"
        "file can run any code when loaded: only load joblib files you trust.",
        """
        embetter transform tuned.skops new_messages.csv --out new_messages.npy
        embetter transform tuned.skops inbox.jsonl --text-col body --out inbox.parquet
        """,
    )
    transform.add_argument("pipeline", metavar="PIPELINE", help="a pipeline saved by finetune")
    transform.add_argument("input", metavar="INPUT", help="a .csv, .jsonl or .parquet file")
    transform.add_argument("--text-col", metavar="COL",
                           help="the column holding the texts (default: the pipeline's own)")
    transform.add_argument("--out", required=True, metavar="FILE",
                           help="where to write the embeddings: a .npy or .parquet file")
    _trust_arg(transform)
    transform.set_defaults(func=_transform)

    project = _sub(
        sub, "project", "write a 2-D map of texts (text,x,y[,label]) for labelling tools",
        "Encode the texts of INPUT (with --model, or with a pipeline saved by `embetter\n"
        "finetune`) and project them to 2-D. The output CSV has the columns text,x,y and,\n"
        "with --label-col, label (left empty where a row has none): the map that bulk-\n"
        "labelling tools read. --method umap needs umap-learn (`pip install\n"
        "'embetter[umap]'`) and falls back to PCA, saying so, when it is not installed.",
        """
        embetter project inbox.csv --text-col text --out map.csv
        embetter project inbox.csv --text-col text --label-col label --method pca --out map.csv
        embetter project inbox.csv --pipeline tuned.skops --label-col label --out tuned-map.csv
        """,
    )
    project.add_argument("input", metavar="INPUT", help="a .csv, .jsonl or .parquet file")
    project.add_argument("--text-col", metavar="COL",
                         help="the column holding the texts (default with --pipeline: the "
                              "pipeline's own; required otherwise)")
    project.add_argument("--label-col", metavar="COL",
                         help="a column of labels to copy into the map (may have empty cells)")
    project.add_argument("--pipeline", metavar="PIPELINE",
                         help="encode with a pipeline saved by finetune (.skops or .joblib) "
                              "instead of --model")
    project.add_argument("--model", default=DEFAULT_MODEL,
                         help="sentence model name or local path (default: %(default)s, bundled)")
    project.add_argument("--method", choices=METHODS, default="umap",
                         help="the 2-D projection (default: %(default)s; PCA without umap-learn)")
    project.add_argument("--seed", type=_seed, default=0,
                         help="random_state of UMAP and t-SNE (default: %(default)s)")
    project.add_argument("--out", required=True, metavar="FILE",
                         help="where to write the map: a .csv file")
    _trust_arg(project)
    project.set_defaults(func=_project)
    return parser


def main(argv=None) -> int:
    """Run the `embetter` command line with `argv` (default: `sys.argv[1:]`); returns the exit code.

    Arguments:
        argv: the arguments after `embetter`, a list of str; `None` reads `sys.argv[1:]`.

    Usage:

    ```python
    from embetter.cli import main

    assert main(["embed", "no-such-file.csv", "--text-col", "text", "--out", "x.npy"]) == 2
    ```
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse's exit: bad arguments (2, said on stderr), --help (0)
        return e.code if isinstance(e.code, int) else 2
    # transformers draws a bar for every model load; on the command line it only hides the
    # output that matters (our own progress bars are sentence-transformers', not affected).
    try:
        with progress_bars_off():
            return args.func(args)
    except KeyboardInterrupt:
        _info("embetter: interrupted")
        return 130
    except BrokenPipeError:  # the reader stopped (`| head`): nothing more to say
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if args.debug:
            raise
        user_error = isinstance(e, (UsageError, ValueError, TypeError, KeyError, OSError,
                                    ImportError))
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        message = " ".join(message.split()) or type(e).__name__
        if user_error:
            _info(f"embetter {args.command}: error: {message}")
            return 2
        _info(f"embetter {args.command}: internal error: {type(e).__name__}: {message} "
              "(rerun with --debug for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
