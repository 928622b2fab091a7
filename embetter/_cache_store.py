"""Where the disk cache keeps its rows: diskcache's database in the cache's folder, opened,
written in one transaction per call, and read back in bulk over a read-only connection
(only the raw rows it stores: nothing unpickled, no file outside its folder)."""

from __future__ import annotations

import os
import sqlite3
import threading

import diskcache
from diskcache.core import DBNAME, MODE_BINARY, MODE_PICKLE, MODE_RAW


def open_cache(folder: str) -> diskcache.Cache:
    """The diskcache `Cache` in `folder` (made when missing), as the encoders' cache keeps it;
    a clear error for a folder that cannot be written and for a damaged database."""
    # no size limit (diskcache's default dropped the oldest rows past 1 GiB: texts
    # paid for, sent again) and so no culling; every row inline in the database (a
    # row is a few kB; a file per row is not read back)
    try:
        cache = diskcache.Cache(folder, disk=ConfinedDisk, cull_limit=0,
                                size_limit=_NO_LIMIT, disk_min_file_size=_INLINE_BYTES)
    except sqlite3.OperationalError as e:
        if "readonly" not in str(e) and "unable to open" not in str(e):
            raise  # (a database locked past diskcache's timeout says so)
        raise PermissionError(
            f"the cache at {folder!r} cannot be written ({e}): the cache stores what "
            "it computes, so give a folder this process may write to") from None
    except sqlite3.DatabaseError as e:  # "file is not a database", "malformed"
        raise ValueError(
            f"the cache at {folder!r} is damaged ({e}); delete that folder (its "
            "vectors are computed again) or give another path") from None
    return cache


def store_rows(cache, keys, rows) -> None:
    """Write rows under their keys in one transaction."""
    with cache.transact():
        for key, row in zip(keys, rows):
            cache.set(key, row)


def database_file(folder: str):
    """The identity of the cache's database file (device, inode), None while there is none."""
    try:
        st = os.stat(os.path.join(folder, DBNAME))
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Reader:
    """A thread's read-only connection and where it reads (process, folder, database file);
    closed when the thread ends and its thread-local value goes (a connection sits in a
    cycle with its statement cache: left to the collector, it kept a file open)."""

    __slots__ = ("db", "where", "thread")

    def __init__(self, db, where):
        self.db, self.where, self.thread = db, where, threading.get_ident()

    def close(self):
        """Close it in its own thread of its own process; elsewhere (the encoder closed or
        collected by another thread, a forked child) only let go of it: SQLite refuses a
        connection's close from another thread, and frees it when it is collected."""
        if (self.db is not None and self.where[0] == os.getpid()
                and self.thread == threading.get_ident()):
            self.db.close()
        self.db = None

    def __del__(self):
        self.close()


def open_reader(directory: str):
    """A read-only connection to the database of the cache in `directory` (None if it cannot
    be opened: `bulk_get` then finds nothing)."""
    from urllib.parse import quote

    # (quoted: a folder named with ?, # or % is a path, not a query or an escape)
    uri = "file:" + quote(os.path.join(directory, DBNAME)) + "?mode=ro"
    try:
        return sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=True)
    except sqlite3.Error:
        return None


def bulk_get(cache, keys: list[str], db, chunk: int = 500) -> dict[str, bytes]:
    """Fetch many cached rows in a few SQL queries instead of one `get` per key.

    diskcache has no multi-get; its per-key `get` costs ~50 us, which would dominate a
    warm-cache pass. Only rows as this cache stores them are read, over the read-only
    connection `db`: raw bytes inline in its table, or (written before rows were kept inline:
    32 kB and wider) in a file of its own inside the cache's folder. Anything else is a miss
    (encoded again and stored over): diskcache's `get` would unpickle a row another hand
    stored (code run on load) or read any file a row names. No connection, or another
    schema: all misses.
    """
    unique = list(dict.fromkeys(keys))
    found: dict[str, bytes] = {}
    if db is None:
        return found
    folder = os.path.realpath(cache.directory)
    try:
        for start in range(0, len(unique), chunk):
            part = unique[start : start + chunk]
            marks = ",".join("?" * len(part))
            rows = db.execute(
                "SELECT key, mode, filename, value FROM Cache WHERE raw = 1 AND key IN "
                f"({marks})", part,
            ).fetchall()
            for key, mode, filename, value in rows:
                if mode == MODE_RAW and isinstance(value, bytes):
                    found[key] = value
                elif mode == MODE_BINARY and isinstance(filename, str):
                    data = _file_row(folder, filename)
                    if data is not None:
                        found[key] = data
    except sqlite3.Error:
        return {}
    return found


def _inside(folder: str, file_path: str) -> bool:
    """Whether `file_path` (relative to the real path `folder`, as a row names its file)
    stays inside `folder`: not an absolute path, no `..` or link out of it."""
    full = os.path.realpath(os.path.join(folder, file_path))
    return full.startswith(folder + os.sep)


def _file_row(folder: str, filename: str):
    """The bytes of a row kept in a file of the cache's own (a regular file inside `folder`),
    else None."""
    full = os.path.join(folder, filename)
    if not _inside(folder, filename) or not os.path.isfile(full):
        return None
    try:
        with open(full, "rb") as f:
            return f.read()
    except OSError:  # (removed by a cull meanwhile)
        return None


#: diskcache keeps values up to this size inline in its database (its default, 32 kB, would
#: put a row of 8,192 float32s in a file of its own, which `bulk_get` does not read)
_INLINE_BYTES = 1 << 24
#: the cache's size limit: none (a row once stored is kept until its folder is deleted)
_NO_LIMIT = 1 << 62


class ConfinedDisk(diskcache.Disk):
    """diskcache's `Disk`, confined to the cache's folder: a row that names a file elsewhere
    (an absolute path, `..`: a row another hand stored) is neither read nor deleted (its
    `cull` deleted any file a row named, and empty folders above it), and no pickled value
    is loaded."""

    def __init__(self, directory, **kwargs):
        super().__init__(directory, **kwargs)
        self.folder = os.path.realpath(directory)

    def remove(self, file_path):
        if _inside(self.folder, file_path):
            super().remove(file_path)

    def fetch(self, mode, filename, value, read):
        if mode == MODE_PICKLE or (filename is not None and not _inside(self.folder, filename)):
            raise ValueError("the cache holds a row it did not store (a pickled value, or a "
                             "file outside its folder): not read")
        return super().fetch(mode, filename, value, read)
