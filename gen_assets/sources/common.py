"""What every source reader shares: the error type, downloading an http(s) URL within limits, and walking a
folder without quietly losing any part of it."""

from __future__ import annotations

import http.client
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DownloadLimits:
    """Bounds on one http(s) download.

    deadline_s: the whole download, connection to last byte; a server that drips a byte every few seconds
        keeps every single read inside `read_timeout_s` and would otherwise hold the run for days.
    max_bytes: the body, whether announced by Content-Length (refused before reading) or counted as it
        arrives (a server that sends none, or more than it announced).
    read_timeout_s: one wait for the connection or for the next bytes (never more than what is left of
        the deadline).
    """

    deadline_s: float = 300.0
    max_bytes: int = 2 << 30
    read_timeout_s: float = 60.0

    def __post_init__(self):
        if not (self.deadline_s > 0 and self.max_bytes > 0 and self.read_timeout_s > 0):
            raise ValueError(f"download limits must be positive: {self}")


DEFAULT_DOWNLOAD_LIMITS = DownloadLimits()


def download(url: str, limits: DownloadLimits = DEFAULT_DOWNLOAD_LIMITS, chunk: int = 1 << 20) -> IO[bytes]:
    """GET an http(s) URL into an anonymous temporary file, up to `chunk` bytes at a time, and return it
    rewound: a download of any size passes through disk, not memory. Within `limits` (see DownloadLimits);
    a body shorter than its Content-Length is an error, not a document. Any failure becomes a SourceError
    naming the URL."""
    f = tempfile.TemporaryFile()
    try:
        _download_into(url, f, limits, chunk)
    except BaseException:
        f.close()
        raise
    f.seek(0)
    return f


def _download_into(url: str, f: IO[bytes], limits: DownloadLimits, chunk: int) -> None:
    end = time.monotonic() + limits.deadline_s
    received = 0

    def past_deadline() -> SourceError:
        return SourceError(url, f"download not finished within its deadline of {limits.deadline_s:g} s "
                                f"({received} bytes received)")

    # the deadline covers everything from the connection to the last byte, the headers too: a watchdog
    # shuts the socket down when it passes, whatever read is waiting then
    opener = urllib.request.build_opener(_DeadlineHTTP(end), _DeadlineHTTPS(end))
    try:
        # the scheme was checked by is_url
        with opener.open(url, timeout=min(limits.read_timeout_s, limits.deadline_s)) as resp:
            announced = _content_length(url, resp)
            if announced is not None and announced > limits.max_bytes:
                raise SourceError(url, f"announces {announced} bytes (Content-Length), more than the limit of "
                                       f"{limits.max_bytes} bytes")
            while True:
                block = resp.read1(chunk)  # whatever has arrived: a dripping server cannot hold one read forever
                if time.monotonic() >= end:
                    raise past_deadline()
                if not block:
                    break
                received += len(block)
                if received > limits.max_bytes:
                    raise SourceError(url, f"larger than the limit of {limits.max_bytes} bytes")
                f.write(block)
    except SourceError:
        raise
    except urllib.error.HTTPError as e:
        raise SourceError(url, f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        if time.monotonic() >= end:  # the watchdog cut the connection
            raise past_deadline() from None
        if isinstance(e, http.client.IncompleteRead):  # a chunked body cut short
            raise SourceError(url, f"truncated: the connection closed after {received} bytes, mid-body") from None
        if isinstance(e, TimeoutError):
            raise SourceError(url, f"download failed: no data for {limits.read_timeout_s:g} s "
                                   f"({received} bytes received)") from None
        reason = getattr(e, "reason", e)
        raise SourceError(url, f"download failed: {reason}") from None
    if announced is not None and received < announced:
        raise SourceError(url, f"truncated: {received} bytes received of the {announced} announced by "
                               "Content-Length (the connection closed early)")


def _with_deadline(connection: type, end: float) -> type:
    """An http.client connection class whose socket is shut down at `end` (time.monotonic())."""

    class Connection(connection):
        def connect(self):
            super().connect()
            self._watchdog = threading.Timer(max(0.0, end - time.monotonic()), self._cut)
            self._watchdog.daemon = True
            self._watchdog.start()

        def _cut(self):
            sock = self.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:  # already closed
                    pass

        def close(self):
            watchdog = getattr(self, "_watchdog", None)
            if watchdog is not None:
                watchdog.cancel()
            super().close()

    return Connection


class _DeadlineHTTP(urllib.request.HTTPHandler):
    def __init__(self, end: float):
        super().__init__()
        self.end = end

    def http_open(self, req):
        return self.do_open(_with_deadline(http.client.HTTPConnection, self.end), req)


class _DeadlineHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, end: float):
        super().__init__()
        self.end = end

    def https_open(self, req):
        return self.do_open(_with_deadline(http.client.HTTPSConnection, self.end), req, context=self._context)


def _content_length(url: str, resp) -> int | None:
    """The body size the server announced, or None (no header, or a chunked body)."""
    value = resp.headers.get("Content-Length")
    if value is None or resp.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return None
    try:
        length = int(value)
    except ValueError:
        raise SourceError(url, f"invalid Content-Length {value!r}") from None
    if length < 0:
        raise SourceError(url, f"invalid Content-Length {value!r}")
    return length


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
