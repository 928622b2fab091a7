"""The `embetter` command line: demo, embed, finetune, transform and project (the parser;
what each command does is in _commands.py)."""

from __future__ import annotations

import argparse
import sys
import textwrap

from embetter import __version__
from embetter._commands import (
    DEFAULT_MODEL,
    cmd_demo,
    cmd_embed,
    cmd_finetune,
    cmd_project,
    cmd_transform,
    info,
)
from embetter._files import UsageError, stdout_to_devnull
from embetter._st import progress_bars_off

TUNERS = ("feedforward", "contrastive", "sbert")
METHODS = ("umap", "pca", "tsne")

DESCRIPTION = "scikit-learn compatible text embeddings, and fine-tuning them to your task."
EPILOG = """\
Run `embetter COMMAND --help` for the options and examples of a command.
Bad input gives a one-line error and exit code 2."""


def _seed(text: str) -> int:
    """`--seed`: an int from 0 to 2**32 - 1 (what numpy, scikit-learn and UMAP take)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**32 - 1, got {value}")
    return value


def _trust_arg(parser) -> None:
    parser.add_argument("--trust", action="store_true",
                        help="load a .skops pipeline even if it holds types that are not trusted "
                             "(only for files from a source you trust)")


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
    demo.set_defaults(func=cmd_demo)

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
                            "on a CPU, batches by a token budget on CUDA)")
    embed.add_argument("--out", required=True, metavar="FILE",
                       help="where to write the embeddings: a .npy or .parquet file")
    embed.set_defaults(func=cmd_embed)

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
        embetter finetune inbox.jsonl --text-col text --label-col cats.shipping --out shipping.skops
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
    finetune.set_defaults(func=cmd_finetune)

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
    transform.set_defaults(func=cmd_transform)

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
    project.add_argument("--model",
                         help=f"sentence model name or local path (default: {DEFAULT_MODEL}, "
                              "bundled); not with --pipeline, which has its own")
    project.add_argument("--method", choices=METHODS, default="umap",
                         help="the 2-D projection (default: %(default)s; PCA without umap-learn)")
    project.add_argument("--seed", type=_seed, default=0,
                         help="random_state of UMAP and t-SNE (default: %(default)s)")
    project.add_argument("--out", required=True, metavar="FILE",
                         help="where to write the map: a .csv file")
    _trust_arg(project)
    project.set_defaults(func=cmd_project)
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
        info("embetter: interrupted")
        return 130
    except BrokenPipeError:  # the reader stopped (`| head`): nothing more to say
        stdout_to_devnull()
        return 0
    except Exception as e:
        if args.debug:
            raise
        user_error = isinstance(e, (UsageError, ValueError, TypeError, KeyError, OSError,
                                    ImportError))
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        message = " ".join(message.split()) or type(e).__name__
        if user_error:
            info(f"embetter {args.command}: error: {message}")
            return 2
        info(f"embetter {args.command}: internal error: {type(e).__name__}: {message} "
              "(rerun with --debug for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
