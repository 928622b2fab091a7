"""Reading tables and writing outputs for the command line: clear errors, atomic writes.

Every problem a user can cause (a missing file, a bad format, a missing column, an empty
table) raises `UsageError` with a one-line message; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embetter._atomic import atomic_path, user_path
from embetter._validation import is_missing

__all__ = ["UsageError", "atomic_path", "read_table", "write_embeddings"]

TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
OUTPUT_FORMATS = {".npy": "npy", ".parquet": "parquet"}


class UsageError(Exception):
    """A problem with the user's input or arguments, reported in one line (exit code 2)."""


def _needs_pyarrow(action: str):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UsageError(
            f"{action} Parquet needs pyarrow, which is not installed; "
            "install it with `pip install 'embetter[parquet]'`"
        ) from None


def _format_of(path, formats: dict, what: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise UsageError(
            f"{path}: unsupported {what} format {suffix or '(no extension)'!r}; "
            f"use one of {', '.join(formats)}"
        )
    return formats[suffix]


def stdout_to_devnull() -> None:
    """Send what is left of this process's standard output nowhere: its reader stopped
    (`| head`), and another print would raise BrokenPipeError again (or at exit)."""
    import contextlib
    import os
    import sys

    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def check_out_file(path) -> None:
    """Refuse an output path that cannot be written (before any work is done): a directory,
    or one whose folder is a file or cannot be created or written."""
    target = Path(user_path(path))
    if target.is_dir():
        raise UsageError(f"{path}: is a directory; --out must name a file")
    _check_can_create(path, target.parent, "file in a folder")


def check_out_folder(path) -> None:
    """Refuse an output folder that cannot be written (before any work is done): a file, or
    one inside a file or a folder that cannot be written."""
    target = Path(user_path(path))
    if target.exists() and not target.is_dir():
        raise UsageError(f"{path}: is a file; --out must name a folder")
    _check_can_create(path, target, "folder")


def _check_can_create(path, folder: Path, what: str) -> None:
    """`folder` (which may not exist yet) can be created and written in."""
    import os

    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the nearest existing folder: the rest is created
    if not folder.is_dir():
        raise UsageError(f"{path}: {str(folder)!r} is a file, not a folder; --out must name a "
                         f"{what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: cannot write in {str(folder)!r} (no permission)")


def check_parquet_rows(df, path, out) -> None:
    """A `.parquet` output holds the input's columns and `embedding`: refuse, before any
    work, a table that already has an `embedding` column or one Parquet cannot store."""
    import pyarrow as pa

    try:
        table = _with_index(df)  # (an index named as a column cannot be one: said below)
        if "embedding" in table.columns:  # a column, or a named index kept as one
            raise UsageError(f"{path}: already has a column 'embedding', which {out} would "
                             "overwrite; rename it first, or write .npy")
        pa.Table.from_pandas(table, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise UsageError(f"{path}: its columns cannot be stored in Parquet ({_one_line(e)}); "
                         "write .npy, or convert those columns first") from None


def _with_index(df):
    """The rows with their index as a column when it holds ids to join back on (a named
    index, under its name; any other than the plain numbering 0, 1, 2, ... as `index`, such
    as a filtered frame's or string ids saved in a Parquet file), else renumbered."""
    import pandas as pd

    index = df.index
    plain = (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
             and index.name is None)
    return df.reset_index(drop=plain)


def table_format(path) -> str:
    """The format of an input table, from its extension (`.csv`, `.jsonl`, `.parquet`)."""
    return _format_of(path, TABLE_FORMATS, "input")


def output_format(path) -> str:
    """The format of an output file, from its extension (`.npy` or `.parquet`)."""
    fmt = _format_of(path, OUTPUT_FORMATS, "output")
    check_out_file(path)
    if fmt == "parquet":
        _needs_pyarrow("Writing")
    return fmt


def read_table(path):
    """Read a CSV, JSONL or Parquet file into a DataFrame; every CSV cell is kept as written
    (texts such as `42` or `NA`, labels such as `007`, ids, zip codes)."""
    import pandas as pd

    fmt = table_format(path)
    p = Path(user_path(path))  # `~` as the outputs expand it
    if not p.exists():
        raise UsageError(f"{path}: no such file")
    if p.is_dir():
        raise UsageError(f"{path}: is a directory, expected a {fmt} file")
    try:
        if fmt == "csv":
            # Every cell as written: "42", "007" or "NA" must not turn into a number or a
            # missing value (the columns travel to a .parquet output as they were); a line
            # with a trailing comma must not turn the first column into the index.
            # (with index_col=False pandas cuts the extra fields of a first data row and only
            # warns: blank ones are trailing commas, a text is an unquoted comma: an error)
            # (a later row's extra fields are pandas' error: blank ones are let through too)
            import warnings

            _check_unique_header(p, path)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                try:
                    df = _read_csv(p)
                except pd.errors.ParserError as e:
                    if "Expected" not in str(e):
                        raise
                    width = _check_no_extra_fields(p, path)
                    df = _read_csv(p, usecols=range(width))  # extras all blank
            for w in caught:
                if issubclass(w.category, pd.errors.ParserWarning):
                    _check_no_extra_fields(p, path)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif fmt == "jsonl":
            # floats exactly as written, keys such as "1" kept as names, a BOM tolerated
            df = pd.read_json(p, lines=True, dtype=False, precise_float=True,
                              convert_axes=False, encoding="utf-8-sig")
        else:
            _needs_pyarrow("Reading")
            df = pd.read_parquet(p)
    except UsageError:
        raise
    except pd.errors.EmptyDataError:
        raise UsageError(f"{path}: the file is empty") from None
    except UnicodeDecodeError as e:  # (a ValueError too) an Excel export in Latin-1, UTF-16
        raise UsageError(
            f"{path}: could not read it as {fmt}: it is not UTF-8 text ({_one_line(e)}); "
            "save it again as UTF-8 (in Excel: CSV UTF-8)") from None
    except (ValueError, OSError) as e:
        hint = ""
        if fmt == "csv" and "Expected" in str(e) and "fields" in str(e):
            hint = ("; the rows have different numbers of fields: a text with an unquoted comma, "
                    "or another delimiter (a ';' or tab file: save it with ',' and quoted texts)")
        raise UsageError(f"{path}: could not read it as {fmt}: {_one_line(e)}{hint}") from None
    except Exception as e:  # pyarrow raises its own error classes for corrupt files
        raise UsageError(f"{path}: could not read it as {fmt}: {_one_line(e)}") from None
    if len(df.columns) == 0 or len(df) == 0:
        raise UsageError(f"{path}: the file holds no rows")
    return df


def _read_csv(p: Path, usecols=None):
    import pandas as pd

    return pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""], index_col=False,
                       usecols=usecols)


def _check_unique_header(p: Path, path) -> None:
    """A CSV header naming a column twice is refused (pandas would rename the second one
    `NAME.1` and read the first one's cells for NAME, without a word)."""
    import csv

    with open(p, newline="", encoding="utf-8-sig", errors="replace") as f:
        header = next(csv.reader(f), [])
    seen, twice = set(), []
    for name in header:
        if name in seen and name not in twice:
            twice.append(name)
        seen.add(name)
    if twice:
        raise UsageError(f"{path}: the header names the column(s) {', '.join(map(repr, twice))} "
                         "more than once; give each column its own name")


def _check_no_extra_fields(p: Path, path) -> int:
    """A CSV row with a non-blank field past the header's columns (an unquoted comma in a
    text) is refused, naming its line; blank ones (trailing commas) are not. Returns the
    header's width."""
    import csv

    with open(p, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        width = len(next(reader, []))
        for row in reader:
            if any(cell.strip() for cell in row[width:]):
                raise UsageError(
                    f"{path}: line {reader.line_num} has more fields than the header; put "
                    'texts that contain commas in double quotes ("a, b"), and save a file '
                    "with another delimiter (';', tab) with ','")
    return width


def column(df, name: str, path, role: str, rows=None) -> list:
    """One column as a list, with an error naming the file and the columns it does have
    (`rows`: the file's data-row positions of `df`'s rows, when some were left out)."""
    if name not in df.columns:
        available = ", ".join(map(str, list(df.columns)[:20]))
        flag = {"text": "--text-col", "label": "--label-col"}.get(role)
        hint = f" (name one with {flag} COL)" if flag else ""
        raise UsageError(f"{path}: no {role} column {name!r}; its columns are: "
                         f"{available}{hint}")
    values = df[name]
    missing = values.isna().to_numpy()
    if missing.any():
        empty = np.flatnonzero(missing)
        where = ", ".join(str(_data_row(r, rows)) for r in empty[:5]) + (
            " ..." if len(empty) > 5 else "")
        raise UsageError(
            f"{path}: {role} column {name!r} is empty in {len(empty)} row(s) (data rows "
            f"{where}); fill or drop them first"
        )
    return values.tolist()


def text_column(df, name: str, path, rows=None) -> list[str]:
    """The text column as a list of str; a column of non-text values is refused (`rows`: as
    `column` takes them)."""
    values = column(df, name, path, "text", rows)
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise UsageError(
            f"{path}: text column {name!r} holds non-text values "
            f"(data row {_data_row(bad[0], rows)}: {values[bad[0]]!r:.40})"
        )
    return values


def _data_row(position: int, rows=None) -> int:
    """The 1-based data row in the file of the table's row at `position`."""
    return int(position if rows is None else rows[position]) + 1


def labelled_texts(df, text_col: str, label_col: str, path, say) -> tuple[list[str], list]:
    """The texts and labels of the rows that carry a label (`label_column`); `say` is told
    how many rows were left out, and an empty or non-text cell is named by its data row in
    the file, not in the rows kept."""
    keep, labels = label_column(df, label_col, path)
    rows = None
    if keep is not None:  # rows without this label are left out, their texts unread
        if not keep.all():
            say(f"{path}: {int((~keep).sum())} row(s) without a label left out")
        rows = np.flatnonzero(keep)
        df = df[keep]
    return text_column(df, text_col, path, rows), labels


def label_column(df, name: str, path):
    """The label column as `(keep, labels)`; `cats.NAME` reads one label from JSONL records'
    `cats` dicts (`keep`: the rows that carry a label; `None` when a plain column labels
    every row)."""
    if name in df.columns or "." not in name:
        records = [c for c in df[name] if isinstance(c, dict)] if name in df.columns else []
        if records:  # JSONL categories: one of them is the label
            names = sorted({str(k) for c in records for k in c})
            raise UsageError(
                f"{path}: column {name!r} holds records of categories (e.g. {records[0]!r:.60}), "
                f"not one label per row; pick one with --label-col {name}.NAME (NAMEs: "
                f"{', '.join(map(str, names[:10]))}{', ...' if len(names) > 10 else ''})")
        keep = ~df[name].isna().to_numpy() if name in df.columns else None
        if keep is not None and not keep.all():  # rows not labelled yet: left out
            if not keep.any():
                raise UsageError(f"{path}: label column {name!r} is empty in every row")
            return keep, df[name][keep].tolist()
        return None, column(df, name, path, "label")
    field, _, key = name.partition(".")
    if field not in df.columns:
        column(df, name, path, "label")  # raises: no such column
    # a record that never got labels has no cell at all (NaN/None): it carries no label
    values = df[field].tolist()
    bad = [c for c in values if not isinstance(c, dict) and not is_missing(c)]
    if bad:
        raise UsageError(f"{path}: column {field!r} does not hold records (e.g. {bad[0]!r}), "
                         f"cannot read {name!r}")
    # Partial labels: records that do not carry this label are left out of training.
    cells = [c if isinstance(c, dict) else {} for c in values]
    keep = np.array([key in c and c[key] is not None for c in cells])
    if not keep.any():
        raise UsageError(f"{path}: no record carries the label {key!r} in {field!r}")
    return keep, [c[key] for c in cells if key in c and c[key] is not None]


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(error).__name__


def write_embeddings(path, X: np.ndarray, df=None) -> None:
    """Write embeddings to `.npy` (the matrix) or `.parquet` (the input rows + `embedding`)."""
    fmt = output_format(path)
    if hasattr(X, "toarray"):  # a pipeline ending in TfidfVectorizer: a sparse matrix
        X = X.toarray()
    X = np.asarray(X, dtype=np.float32)
    with atomic_path(path) as tmp:
        if fmt == "npy":
            with open(tmp, "wb") as f:
                np.save(f, X)
        else:
            import pandas as pd

            out = pd.DataFrame(index=range(len(X))) if df is None else _with_index(df)
            out = out.copy()
            out["embedding"] = list(X)
            out.to_parquet(tmp, index=False)
