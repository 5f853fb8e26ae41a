"""Where artifact files live: a local folder, or any fsspec URL (file://, s3://, gs://, memory://, ...).

Snapshots, model files and batches are written and read through `location()`, which gives a
`pathlib.Path` for a plain local path and a `upath.UPath` for a URL. Both have the same interface
(`/`, `exists`, `open`, `read_bytes`, `unlink`), so the code that writes a model does not care where it
goes; the filesystem behind a URL (s3fs, gcsfs, adlfs) is fsspec's, installed by the user with the
matching extra (`pip install gen-assets[s3]` / `[gcs]`).

Writes are atomic everywhere:
- local paths: write a temporary file in the same folder, fsync, rename over the target;
- URLs: write a local temporary file (in TMPDIR: give it room for the largest snapshot), then upload it
  in one call. An object store creates an object whole or not at all, so a reader never sees half a
  file; a file:// URL gets the same rename as a path.

DuckDB reads Parquet from the same places (`duckdb_source`): local paths and file:// URLs natively,
s3:// gs:// http(s):// through its httpfs extension (credentials from `CREATE SECRET`, e.g. the
credential chain), and any other fsspec protocol through the fsspec filesystem registered on the
connection. Pure module: no dagster import.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Union

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

Location = Union[Path, UPath]

# protocols DuckDB reads through httpfs; "gs" and "gcs" are both Google Cloud Storage
HTTPFS_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "http", "https", "r2", "hf")


def is_url(location: str | os.PathLike) -> bool:
    """True for "<protocol>://..." (file:// included), False for a plain path."""
    return isinstance(location, UPath) or "://" in str(location)


def location(value: str | os.PathLike) -> Location:
    """A Path for a local path ("~" expanded), a UPath for a URL; Path and UPath are returned as they are."""
    if isinstance(value, (Path, UPath)):
        return value
    text = str(value)
    if "://" in text:
        return UPath(text)
    return Path(text).expanduser()


def protocol(path: Location | str) -> str:
    """"" for a plain local path, else the URL's protocol ("file", "s3", "gs", "memory", ...)."""
    path = location(path)
    return path.protocol if isinstance(path, UPath) else ""


def _is_local(path: Location) -> bool:
    return protocol(path) in ("", "file", "local")


def _local_path(path: Location) -> Path:
    """The OS path of a local location (a Path, or a file:// UPath)."""
    return Path(path.path) if isinstance(path, UPath) else Path(path)


@contextlib.contextmanager
def staging_file(path: Location | str) -> Iterator[str]:
    """Yield a LOCAL temporary file name on the way to `path` (beside it when `path` is local, so that
    `publish` is a rename); the temporary file is gone afterwards, whatever happened."""
    path = location(path)
    if _is_local(path):
        directory = _local_path(path).parent
        directory.mkdir(parents=True, exist_ok=True)
    else:
        directory = None
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
    finally:
        Path(tmp).unlink(missing_ok=True)


def publish(tmp: str, path: Location | str) -> None:
    """Make the finished local file `tmp` appear as `path` in one step (rename, or one upload)."""
    path = location(path)
    if _is_local(path):
        target = _local_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    else:
        # needed on filesystems with real folders; on an object store it is a no-op, or, for a role
        # allowed one prefix only, an access error about the bucket that the upload itself does not hit
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
        path.fs.put_file(tmp, path.path)


@contextlib.contextmanager
def atomic_output(path: Location | str) -> Iterator[str]:
    """Yield a LOCAL file name to write; on success it becomes `path` atomically, on error it vanishes."""
    with staging_file(path) as tmp:
        yield tmp
        publish(tmp, path)


def atomic_write_bytes(path: Location | str, data: bytes) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


@contextlib.contextmanager
def open_read(path: Location | str) -> Iterator[IO[bytes]]:
    """A binary file object for reading, with a clear error when the file is missing."""
    path = location(path)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    with f:  # the caller's own errors inside the block pass through untouched
        yield f


def read_table(path: Location | str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file (or some of its columns) as a table, from a path or any fsspec URL."""
    path = location(path)
    if _is_local(path):
        return pq.read_table(_local_path(path), columns=columns)
    return pq.read_table(path.path, columns=columns, filesystem=path.fs)


def sha256_of(path: Location | str) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open_read(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove(path: Location | str) -> None:
    """Delete a file; a missing one is not an error."""
    path = location(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def prepare_connection(con: duckdb.DuckDBPyConnection, artifacts: Location | str | None) -> None:
    """Make the artifacts' filesystem readable on `con` (httpfs loaded, or fsspec registered).

    DuckDB keeps both per connection, and the `generated` view names batch files at the artifacts'
    location: every connection that reads it has to be prepared, not only the one that defined it."""
    if artifacts is not None and not _is_local(location(artifacts)):
        duckdb_source(con, artifacts)


def duckdb_source(con: duckdb.DuckDBPyConnection, path: Location | str) -> str:
    """The string DuckDB's read_parquet takes for `path`, after making its filesystem readable on `con`.

    Plain paths and file:// URLs are read natively. s3/gs/http(s) URLs need the httpfs extension: it is
    loaded here (DuckDB installs it from its extension repository the first time; offline, install it
    beforehand or point `extension_directory` at a copy), and credentials come from a DuckDB secret.
    Any other fsspec protocol is read through the fsspec filesystem, registered on the connection.
    """
    path = location(path)
    proto = protocol(path)
    if proto in ("", "local"):
        return str(_local_path(path))
    if proto == "file":
        return f"file://{path.path}"
    if proto in HTTPFS_PROTOCOLS and os.environ.get("GEN_ASSETS_DUCKDB_FSSPEC") != "1":
        try:
            con.execute("LOAD httpfs")
        except duckdb.Error:
            try:
                con.execute("INSTALL httpfs")
                con.execute("LOAD httpfs")
            except duckdb.Error as e:
                raise RuntimeError(
                    f"DuckDB needs its httpfs extension to read {path}, and it could not be installed: {e}. "
                    "Install it once with network access (duckdb -c 'INSTALL httpfs'), or set "
                    "GEN_ASSETS_DUCKDB_FSSPEC=1 to read through fsspec instead."
                ) from None
        return str(path)
    fs = path.fs
    names = {p for p in ([fs.protocol] if isinstance(fs.protocol, str) else list(fs.protocol))}
    registered = set(con.list_filesystems())
    if not any(n in registered for n in names):
        con.register_filesystem(fs)
    return str(path)
