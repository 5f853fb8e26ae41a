"""Raw image collection: a builtin corpus, a folder of labelled images, or IDX files (local or URL) -> rows.

`iter_images` yields record batches (IMAGE_SCHEMA) as it reads and encodes, a thousand images at a time,
so a folder larger than memory can be collected; `collect_images` gathers them into one table. Neither
writes anything: the caller streams the batches into `gen_assets.store.snapshots.write_snapshot`, which
names the file only after the last batch, so a source that fails half-way (a missing labels file, a
truncated download) raises and no partial snapshot is left behind. Whole-source problems (a missing
folder, a wrong IDX header, mismatched counts) raise before the first batch.

Row-level problems are not errors here: an image file that Pillow cannot decode becomes a row with
`decode_error` set, and cleaning quarantines it with that reason. Only a source that cannot be read at
all raises `SourceError`, whose message names the source and what is wrong.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import math
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
from PIL import Image

from gen_assets.media.png import encode_png
from gen_assets.sources.common import (
    DEFAULT_DOWNLOAD_LIMITS,
    DownloadLimits,
    SourceError,
    download,
    entry_kind,
    is_url,
    list_files,
    list_folder,
)

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "builtin:digits"
BUILTINS = ("builtin:digits",)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

# The columns that define a snapshot's version: the image bytes enter through their hash.
IMAGE_SNAPSHOT_HASH_COLUMNS = ["source", "row_id", "label", "content_hash"]

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("channels", pa.int32()),
        pa.field("decode_error", pa.string()),
    ]
)

BATCH_ROWS = 1024  # images per record batch
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, cols)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)
# The data of one IDX file, decompressed: it is held in memory whole (EMNIST's largest, 698k 28x28 images,
# is 0.55 GB). A header promising more is refused before anything is allocated.
IDX_MAX_BYTES = 1 << 30
IDX_TRAILING_PROBE = 1 << 20  # bytes after the data read to report how many there are, at most


def collect_images(
    source: str = DEFAULT_SOURCE,
    *,
    labels: str | None = None,
    idx_max_bytes: int = IDX_MAX_BYTES,
    download_limits: DownloadLimits = DEFAULT_DOWNLOAD_LIMITS,
) -> pa.Table:
    """Every image of `source` in one table with the columns of IMAGE_SCHEMA (see `iter_images`)."""
    batches = list(iter_images(source, labels=labels, idx_max_bytes=idx_max_bytes, download_limits=download_limits))
    return pa.Table.from_batches(batches, schema=batches[0].schema)


def iter_images(
    source: str = DEFAULT_SOURCE,
    *,
    labels: str | None = None,
    batch_rows: int = BATCH_ROWS,
    idx_max_bytes: int = IDX_MAX_BYTES,
    download_limits: DownloadLimits = DEFAULT_DOWNLOAD_LIMITS,
) -> Iterator[pa.RecordBatch]:
    """Read the images of `source` as record batches of up to `batch_rows` rows (IMAGE_SCHEMA).

    Sources:
    - ``builtin:digits`` (default): scikit-learn's 1,797 8x8 digits, scaled 0..16 -> 0..255 and stored as
      grayscale PNG; label "0".."9"; row_id the zero-padded index.
    - a local folder with one sub-folder per label: ``<folder>/<label>/**/<name>.png|.jpg|.jpeg``. The
      label is the first-level sub-folder name, row_id the path relative to the folder ("7/a.png") and
      source the folder. Everything else (files at the top level, files with other extensions) is
      skipped: a README or a stray .csv in a dataset folder is not an image, and quarantining it would
      only bury the real problems. The skipped count is logged with a few example names and stored in the
      table's schema metadata (``skipped_files``). Hidden files and folders (.DS_Store,
      .ipynb_checkpoints) are ignored without counting. A file with an image extension that does not
      decode (or cannot be read) is kept as a row with `decode_error` set. A sub-folder that cannot be
      listed (permission denied) or a broken symbolic link is an error naming it: a label's images would
      otherwise vanish without a trace. Symbolic links to folders are followed.
    - IDX files (the MNIST / Fashion-MNIST format), gzipped or plain: `source` is the images file,
      `labels` the labels file; when `labels` is omitted it is the images name with "images-idx3"
      replaced by "labels-idx1" (train-images-idx3-ubyte.gz -> train-labels-idx1-ubyte.gz).
      An IDX file is read as a stream and, gzipped, decompressed as one: never past the data its header
      promises, which may be at most `idx_max_bytes` (1 GiB), so a gzip bomb is refused early.
    - the same IDX files at an http(s) URL (the labels URL is inferred the same way), downloaded to a
      temporary file within `download_limits` (an overall deadline, a size cap, Content-Length checked).
    A ``file://`` prefix is accepted on local paths.

    Raises SourceError for a missing or unreadable file, a folder or sub-folder that cannot be listed, a
    broken symbolic link, an empty folder, a wrong IDX magic number, mismatched counts, truncated data, more
    data than the IDX header promises or than `idx_max_bytes`, or a failed download.
    """
    source = str(source).strip()
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    if source.startswith("builtin:"):
        if labels is not None:
            raise SourceError(source, "labels= only applies to IDX image files")
        if source != "builtin:digits":
            raise SourceError(source, f"unknown builtin source; available: {', '.join(BUILTINS)}")
        return _collect_digits(batch_rows)
    if is_url(source):
        idx = _IdxLimits(idx_max_bytes, download_limits)
        return _collect_idx(source, labels if labels is not None else _infer_labels(source), batch_rows, idx)

    path = Path(_strip_file_scheme(source)).expanduser()
    if path.is_dir():
        if labels is not None:
            raise SourceError(source, "labels= only applies to IDX image files, not to a folder")
        return _collect_folder(path, _strip_file_scheme(source), batch_rows)
    if not path.exists():
        raise SourceError(source, "no such file or folder")
    if labels is None:
        labels = _infer_labels(_strip_file_scheme(source))
        if not Path(labels).expanduser().exists():
            raise SourceError(
                source, f"labels file {labels} (inferred from the images name) does not exist; pass labels="
            )
    return _collect_idx(_strip_file_scheme(source), _strip_file_scheme(labels) if not is_url(labels) else labels,
                        batch_rows, _IdxLimits(idx_max_bytes, download_limits))


def image_table(rows: dict[str, list], metadata: dict[str, str] | None = None) -> pa.Table:
    """Column lists -> a table with IMAGE_SCHEMA (and optional string metadata)."""
    schema = IMAGE_SCHEMA.with_metadata(metadata) if metadata else IMAGE_SCHEMA
    return pa.table({name: rows[name] for name in schema.names}, schema=schema)


def image_batch(rows: dict[str, list], metadata: dict[str, str] | None = None) -> pa.RecordBatch:
    """Column lists -> a record batch with IMAGE_SCHEMA (and optional string metadata)."""
    schema = IMAGE_SCHEMA.with_metadata(metadata) if metadata else IMAGE_SCHEMA
    return pa.RecordBatch.from_pydict({name: rows[name] for name in schema.names}, schema=schema)


def inspect_image(data: bytes) -> tuple[int | None, int | None, int | None, str | None]:
    """(width, height, channels, decode_error) of encoded image bytes; load() so truncated files fail here."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.width, img.height, len(img.getbands()), None
    except Exception as e:  # noqa: BLE001 (Pillow raises many types; each becomes the row's reason)
        return None, None, None, f"{type(e).__name__}: {e}"


def _strip_file_scheme(source: str) -> str:
    return source.removeprefix("file://")


def _array_batches(images: np.ndarray, labels: list[str], source: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """uint8 N x H x W images, PNG-encoded a batch at a time."""
    width = len(str(max(len(images) - 1, 0)))  # zero-padded ids sort like the index: "first by row_id" = file order
    for start in range(0, len(images), batch_rows):
        stop = min(start + batch_rows, len(images))
        yield image_batch(_array_rows(images[start:stop], labels[start:stop], source, start, width))


def _array_rows(images: np.ndarray, labels: list[str], source: str, start: int, width: int) -> dict[str, list]:
    """uint8 N x H x W images we encoded ourselves: size is known, nothing to decode back."""
    n, h, w = images.shape
    pngs = [encode_png(img) for img in images]
    return {
        "source": [source] * n,
        "row_id": [f"{i:0{width}d}" for i in range(start, start + n)],
        "label": labels,
        "image": pngs,
        "content_hash": [hashlib.sha256(b).hexdigest() for b in pngs],
        "width": [w] * n,
        "height": [h] * n,
        "channels": [1] * n,
        "decode_error": [None] * n,
    }


def _collect_digits(batch_rows: int) -> Iterator[pa.RecordBatch]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)
    return _array_batches(images, [str(int(t)) for t in digits.target], "builtin:digits", batch_rows)


def _collect_folder(root: Path, source: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    # (label, path relative to root, posix): plain strings, so a million files cost ~0.1 KB each here
    files: list[tuple[str, str]] = []
    skipped: list[str] = []
    for entry in list_folder(source, root):
        if entry_kind(source, root, entry) != "dir":
            skipped.append(entry.name)
            continue
        # a category folder (or one below it) that cannot be listed raises, naming it: its images would be
        # missing from the snapshot, and the label with them, with nothing in the data to say so
        found, others = list_files(source, root, root / entry.name)
        skipped.extend(others)
        for relative in found:
            if Path(relative).suffix.lower() in IMAGE_EXTENSIONS:
                files.append((entry.name, relative))
            else:
                skipped.append(relative)

    if skipped:
        log.warning(
            "%s: skipped %d file(s) that are not <label>/<image>.png|.jpg|.jpeg, e.g. %s",
            source,
            len(skipped),
            ", ".join(skipped[:5]),
        )
    if not files:
        raise SourceError(
            source,
            "no PNG/JPEG files in label sub-folders (expected <folder>/<label>/<name>.png)"
            + (f"; skipped {len(skipped)} other file(s)" if skipped else ""),
        )

    return _folder_batches(root, source, files, {"skipped_files": str(len(skipped))}, batch_rows)


def _folder_batches(root: Path, source: str, files: list[tuple[str, str]], metadata: dict[str, str],
                    batch_rows: int) -> Iterator[pa.RecordBatch]:
    rows: dict[str, list] = {name: [] for name in IMAGE_SCHEMA.names}
    for label, relative in files:
        try:
            data = (root / relative).read_bytes()
            width, height, channels, error = inspect_image(data)
        except OSError as e:
            data, (width, height, channels), error = b"", (None, None, None), f"cannot read file: {e.strerror or e}"
        rows["source"].append(source)
        rows["row_id"].append(relative)
        rows["label"].append(label)
        rows["image"].append(data)
        rows["content_hash"].append(hashlib.sha256(data).hexdigest())
        rows["width"].append(width)
        rows["height"].append(height)
        rows["channels"].append(channels)
        rows["decode_error"].append(error)
        if len(rows["row_id"]) >= batch_rows:
            yield image_batch(rows, metadata)
            rows = {name: [] for name in IMAGE_SCHEMA.names}
    if rows["row_id"]:
        yield image_batch(rows, metadata)


def _infer_labels(images_source: str) -> str:
    """The labels file next to an IDX images file, by the MNIST naming convention."""
    if is_url(images_source):
        parts = urllib.parse.urlsplit(images_source)
        head, _, name = parts.path.rpartition("/")
        new_name = _labels_name(images_source, name)
        return urllib.parse.urlunsplit(parts._replace(path=f"{head}/{new_name}"))
    path = Path(images_source)
    return str(path.with_name(_labels_name(images_source, path.name)))


def _labels_name(source: str, name: str) -> str:
    for images_part, labels_part in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")):
        if images_part in name:
            return name.replace(images_part, labels_part)
    raise SourceError(source, "cannot infer the labels file (name has no 'images-idx3'); pass labels=")


@dataclass(frozen=True)
class _IdxLimits:
    max_bytes: int  # the decompressed data of one file
    download: DownloadLimits


def _open_idx(source: str, limits: _IdxLimits) -> IO[bytes]:
    """A seekable binary stream of one IDX file: the local file, or the URL downloaded to a temporary file."""
    if is_url(source):
        return download(source, limits.download)
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(source, "file does not exist")
    if not path.is_file():
        raise SourceError(source, "is not a file")
    try:
        return path.open("rb")
    except OSError as e:
        raise SourceError(source, f"cannot read: {e.strerror or e}") from None


def _read_up_to(stream: IO[bytes], into: memoryview, chunk: int = 1 << 20) -> int:
    """Fill `into` from `stream` as far as it goes, `chunk` bytes at a time (GzipFile.readinto decompresses
    into a temporary bytes object the size of the request); the number of bytes read."""
    filled = 0
    while filled < len(into) and (n := stream.readinto(into[filled : filled + chunk])):
        filled += n
    return filled


def _read_idx(source: str, magic: int, ndim: int, limits: _IdxLimits) -> tuple[tuple[int, ...], np.ndarray]:
    """(dims, flat uint8 data) of one IDX file, validated: magic number, header and exact data length.

    Read as a stream and, when gzipped, decompressed as one: never more than the header's promise (itself
    at most `limits.max_bytes`) plus a bounded look past it, so a small file that inflates to gigabytes (a
    gzip bomb) is refused after reading a little, instead of exhausting memory first."""
    with _open_idx(source, limits) as raw:
        try:
            gzipped = raw.read(2) == b"\x1f\x8b"  # gzip magic: decide by content, not by the name
            raw.seek(0)
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
            return _parse_idx(source, stream, magic, ndim, limits.max_bytes)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # only the gzip layer raises these
            raise SourceError(source, f"not a valid gzip file: {e}") from None
        except OSError as e:
            raise SourceError(source, f"cannot read: {e.strerror or e}") from None


def _parse_idx(
    source: str, stream: IO[bytes], magic: int, ndim: int, max_bytes: int
) -> tuple[tuple[int, ...], np.ndarray]:
    header = bytearray(4 + 4 * ndim)
    header_len = _read_up_to(stream, memoryview(header))
    found = int.from_bytes(header[:4], "big") if header_len >= 4 else None
    if found is not None and found != magic:
        kind = "images" if magic == IDX_IMAGES_MAGIC else "labels"
        raise SourceError(source, f"not an IDX {kind} file: magic number {found}, expected {magic}")
    if header_len < len(header):
        raise SourceError(source, f"truncated: {header_len} bytes, shorter than the {len(header)}-byte IDX header")
    dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and (dims[1] == 0 or dims[2] == 0):
        raise SourceError(source, f"images of size {dims[1]}x{dims[2]}")
    expected = math.prod(dims)
    if expected > max_bytes:
        raise SourceError(source, f"header promises {dims} = {expected} data bytes, more than the limit of "
                                  f"{max_bytes} bytes")
    data = np.empty(expected, dtype=np.uint8)
    body = _read_up_to(stream, memoryview(data))
    if body < expected:
        raise SourceError(source, f"truncated: header promises {dims} = {expected} data bytes, found {body}")
    trailing = _read_up_to(stream, memoryview(bytearray(IDX_TRAILING_PROBE + 1)))
    if trailing > IDX_TRAILING_PROBE:
        raise SourceError(source, f"more than {IDX_TRAILING_PROBE} unexpected bytes after the {dims} data "
                                  "(the file holds more than its header says)")
    if trailing:
        raise SourceError(source, f"{trailing} unexpected bytes after the {dims} data")
    return dims, data


def _collect_idx(images_source: str, labels_source: str, batch_rows: int,
                 limits: _IdxLimits) -> Iterator[pa.RecordBatch]:
    (n, h, w), pixels = _read_idx(images_source, IDX_IMAGES_MAGIC, 3, limits)
    (n_labels,), label_values = _read_idx(labels_source, IDX_LABELS_MAGIC, 1, limits)
    if n != n_labels:
        raise SourceError(images_source, f"{n} images but {n_labels} labels in {labels_source}")
    if n == 0:
        raise SourceError(images_source, "contains no images")
    return _array_batches(pixels.reshape(n, h, w), [str(int(v)) for v in label_values], images_source, batch_rows)
