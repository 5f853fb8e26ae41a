"""Stored artifact paths: relative to the artifacts root, resolved against the current one when read.

The warehouse (models.checkpoint_path, batches.path / grid_path, the `generated` view) and the training
runs' done.json name artifact files RELATIVE to the artifacts root (<home>/artifacts, or the folder or
URL of GEN_ASSETS_ARTIFACTS), e.g. "batches/image/<batch_id>.parquet". So a home can be moved (`mv`) or
copied (`cp -a`) and it keeps working: every read resolves the stored path against the artifacts root
of the current settings (`resolve`), and a copy names its own files, never the original's.

A warehouse connection carries its artifacts root as the DuckDB variable `gen_assets_artifacts`
(`bind`, called by gen_assets.store.warehouse.connect and by the Dagster warehouse resource): the
registry reads it there (`bound_root`) and the `generated` view resolves its batch files with it.

Nothing is deleted outside the current home and artifacts location: `remove_inside` refuses any path
that resolves outside the given roots (`OutsideHome`), whatever the warehouse says.

Pure module (DuckDB + files): no dagster import.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import duckdb

from gen_assets.store.files import Location, duckdb_source, is_url, location, remove

ROOT_VARIABLE = "gen_assets_artifacts"  # the DuckDB variable holding a connection's artifacts root
ARTIFACTS_DIR = "artifacts"  # the folder of a home that holds its artifacts (see settings.Paths)


class OutsideHome(ValueError):
    """A path to write or delete lies outside the current home / artifacts location."""


def bind(con: duckdb.DuckDBPyConnection, root: Location | str) -> None:
    """Give `con` its artifacts root: stored paths read and written on it are relative to `root`."""
    con.execute(f"SET VARIABLE {ROOT_VARIABLE} = ?", [_text(duckdb_source(con, root))])


def bound_root(con: duckdb.DuckDBPyConnection) -> Location | None:
    """The artifacts root `bind` gave `con`; None for a connection nobody bound (paths then pass as given)."""
    value = con.execute(f"SELECT getvariable('{ROOT_VARIABLE}')").fetchone()[0]
    return location(value) if value else None


def is_absolute(stored: str) -> bool:
    """A path or URL that names its file on its own (not relative to an artifacts root)."""
    return is_url(stored) or os.path.isabs(stored)


def _text(path: Location | str) -> str:
    """A location as the string stored and compared: no trailing slash."""
    text = str(path)
    return text.rstrip("/") if len(text) > 1 else text


def _relative(path: Location | str, root: Location | str) -> str | None:
    """`path` relative to `root` in POSIX form, or None when it is not under it.

    Local paths are compared after resolving symbolic links and "..", so a link inside the root that
    points outside it is outside."""
    path, root = location(path), location(root)
    if not is_url(path) and not is_url(root):
        try:
            rel = Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
        except ValueError:
            return None
        return rel.as_posix() if rel.parts else None
    if is_url(path) != is_url(root):
        return None
    path_text, root_text = _text(path), _text(root)
    if "://" in path_text and "://" in root_text:
        proto, rest = path_text.split("://", 1)
        root_proto, root_rest = root_text.split("://", 1)
        if proto != root_proto:
            return None
        path_text, root_text = posixpath.normpath("/" + rest), posixpath.normpath("/" + root_rest)
    if not path_text.startswith(root_text.rstrip("/") + "/"):
        return None
    return path_text[len(root_text.rstrip("/")) + 1:]


def to_stored(path: Location | str, root: Location | str | None) -> str:
    """What the warehouse stores for an artifact file: its path relative to `root`.

    `root` None (a connection nobody bound): the path as given. A path outside `root` is refused:
    stored, it would name another home's file."""
    if root is None:
        return str(path)
    if not is_absolute(str(path)):
        return PurePosixPath(str(path)).as_posix()  # already relative to the root
    rel = _relative(path, root)
    if rel is None:
        raise OutsideHome(f"{path} is outside the artifacts location {root}: the warehouse only names files there")
    return rel


def to_stored_if_inside(value: str | None, root: Location | str | None) -> str | None:
    """For a column that names artifact files and other things (quarantine.source: a batch file, or a
    raw data source): relative to `root` when it is an artifact file there, else as given."""
    if value is None or root is None or not is_absolute(value):
        return value
    rel = _relative(value, root)
    return value if rel is None else rel


def _join(root: Location | str, rel: str) -> str:
    return _text(root) + "/" + rel


def rebased(stored: str, root: Location | str) -> str | None:
    """For an absolute path outside `root` (a home moved before its paths were made relative): the part
    after its last "artifacts/" folder, relative to `root`, when that file exists there; else None."""
    parts = PurePosixPath(str(stored).split("://", 1)[-1]).parts
    if ARTIFACTS_DIR not in parts:
        return None
    last = len(parts) - 1 - parts[::-1].index(ARTIFACTS_DIR)
    tail = "/".join(parts[last + 1:])
    if not tail or not location(_join(root, tail)).exists():
        return None
    return tail


def resolve(stored: str | None, root: Location | str | None) -> str | None:
    """The absolute path (or URL) of a stored artifact path, under the current artifacts root.

    The one function every reader of a stored path goes through: a relative path is joined to `root`;
    an absolute one inside `root` stays; an absolute one outside it (an old home, not migrated yet) is
    rebased onto `root` when its file is there (`rebased`), else returned as it is."""
    if stored is None or root is None:
        return stored
    if not is_absolute(stored):
        return _join(root, stored)
    if _relative(stored, root) is not None:
        return stored
    tail = rebased(stored, root)
    return _join(root, tail) if tail is not None else stored


def check_inside(path: Location | str, roots: Iterable[Location | str]) -> None:
    """Raise OutsideHome unless `path` resolves inside one of `roots`."""
    roots = [r for r in roots if r is not None]
    if not any(_relative(path, root) is not None for root in roots):
        raise OutsideHome(f"refusing to delete {path}: it is outside the current home and artifacts location "
                          f"({', '.join(str(r) for r in roots)})")


def remove_inside(path: Location | str, roots: Iterable[Location | str]) -> None:
    """Delete a file (a missing one is not an error), only if it lies inside one of `roots`."""
    check_inside(path, roots)
    remove(path)


def rmtree_inside(folder: Location | str, roots: Iterable[Location | str]) -> None:
    """Delete a local folder and its contents, only if it lies inside one of `roots`."""
    check_inside(folder, roots)
    shutil.rmtree(folder, ignore_errors=True)
