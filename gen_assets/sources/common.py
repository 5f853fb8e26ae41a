"""What every source reader shares: the error type and reading a local path or an http(s) URL."""

from __future__ import annotations

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
