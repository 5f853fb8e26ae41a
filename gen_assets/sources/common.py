"""What every source reader shares: the error type and reading a local path or an http(s) URL."""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO


class SourceError(ValueError):
    """A source that cannot be read at all. The message names the source and what is wrong."""

    def __init__(self, source: str, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def fetch_url(url: str, timeout: float = 60.0, max_bytes: int = 2 << 30) -> bytes:
    """GET an http(s) URL into memory; any failure becomes a SourceError naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (scheme checked by is_url)
            data = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise SourceError(url, f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise SourceError(url, f"download failed: {reason}") from None
    if len(data) > max_bytes:
        raise SourceError(url, f"larger than {max_bytes} bytes")
    return data


def download(url: str, timeout: float = 60.0, chunk: int = 1 << 20) -> IO[bytes]:
    """GET an http(s) URL into an anonymous temporary file, 1 MiB at a time, and return it rewound: a
    download of any size passes through disk, not memory. Any failure becomes a SourceError naming the URL."""
    f = tempfile.TemporaryFile()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (scheme checked by is_url)
            while block := resp.read(chunk):
                f.write(block)
    except urllib.error.HTTPError as e:
        f.close()
        raise SourceError(url, f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        f.close()
        reason = getattr(e, "reason", e)
        raise SourceError(url, f"download failed: {reason}") from None
    f.seek(0)
    return f


def read_bytes(source: str) -> bytes:
    """Bytes of a local file or an http(s) URL, with a clear error when it is missing or unreadable."""
    if is_url(source):
        return fetch_url(source)
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.exists():
        raise SourceError(source, "file does not exist")
    if not path.is_file():
        raise SourceError(source, "is not a file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise SourceError(source, f"cannot read: {e.strerror}") from None


def list_folder(source: str, root: Path, folder: Path | None = None) -> list[os.DirEntry]:
    """The entries of `folder` (default `root`), hidden ones (a name starting with ".") left out, sorted by
    name. A folder that cannot be listed is a SourceError naming it: never an empty listing."""
    folder = root if folder is None else folder
    try:
        with os.scandir(folder) as entries:
            return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        where = "the folder" if folder == root else f"folder {folder.relative_to(root).as_posix()}"
        raise SourceError(source, f"cannot list {where}: {e.strerror or e}") from None


def entry_kind(source: str, root: Path, entry: os.DirEntry) -> str:
    """"dir" or "file" (symbolic links followed), or "other" (a device, a FIFO, a socket: never data).

    A symbolic link whose target is missing (or that loops) is a SourceError naming it: whether it stood
    for a file or a whole folder of data cannot be known, so skipping it could lose a category unseen."""
    relative = Path(entry.path).relative_to(root).as_posix()
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
        if entry.is_symlink() and not os.path.exists(entry.path):
            raise SourceError(source, f"{relative} is a broken symbolic link (its target is missing or loops)")
        return "other"
    except OSError as e:
        raise SourceError(source, f"cannot inspect {relative}: {e.strerror or e}") from None


def list_files(source: str, root: Path, folder: Path | None = None) -> tuple[list[str], list[str]]:
    """(files, others) below `folder` (default `root`), as posix paths relative to `root`, in path order.

    `others` are entries that are neither files nor folders (devices, FIFOs, sockets). Hidden files and
    folders are left out. Symbolic links to folders are followed; one that leads back to a folder that
    contains it is an error. A folder that cannot be listed and a broken link raise SourceError naming them
    (see `list_folder`, `entry_kind`): a walk never quietly returns less than the folder holds, which is
    what pathlib's rglob does with a folder it may not read."""
    start = root if folder is None else folder
    files: list[str] = []
    others: list[str] = []

    def key(path: Path) -> tuple[int, int]:
        try:
            st = path.stat()
        except OSError as e:
            raise SourceError(source, f"cannot inspect {relative(path)}: {e.strerror or e}") from None
        return st.st_dev, st.st_ino

    def relative(path: Path) -> str:
        return path.relative_to(root).as_posix()

    # depth first over name-sorted entries: the order of sorting the paths by their parts
    stack = [(iter(list_folder(source, root, start)), frozenset({key(start)}))]
    while stack:
        entries, ancestors = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        path = Path(entry.path)
        kind = entry_kind(source, root, entry)
        if kind == "dir":
            folder_key = key(path)
            if folder_key in ancestors:
                raise SourceError(source, f"{relative(path)} links back to a folder that contains it")
            stack.append((iter(list_folder(source, root, path)), ancestors | {folder_key}))
        else:
            (files if kind == "file" else others).append(relative(path))
    return files, others
