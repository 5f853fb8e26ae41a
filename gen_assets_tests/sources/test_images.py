"""collect_images: the builtin digits, a labelled folder, IDX files (plain, gzipped, over http) and bad input."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import threading
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from gen_assets.media.png import decode_image, encode_png
from gen_assets.sources.common import SourceError
from gen_assets.sources.images import IMAGE_SCHEMA, IMAGE_SNAPSHOT_HASH_COLUMNS, collect_images, iter_images
from gen_assets.store.snapshots import table_version, write_snapshot


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, *, gz: bool, prefix: str = "train") -> Path:
    """MNIST-format images + labels files; returns the images path."""
    n, h, w = images.shape
    img = (2051).to_bytes(4, "big") + b"".join(x.to_bytes(4, "big") for x in (n, h, w)) + images.tobytes()
    lab = (2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes()
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else (lambda b: b)
    (folder / f"{prefix}-labels-idx1-ubyte{suffix}").write_bytes(pack(lab))
    path = folder / f"{prefix}-images-idx3-ubyte{suffix}"
    path.write_bytes(pack(img))
    return path


@pytest.fixture
def idx_arrays():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 6, 4), dtype=np.uint8), np.array([3, 1, 4, 1, 5], dtype=np.uint8)


def test_builtin_digits_rows_labels_and_pixels():
    from sklearn.datasets import load_digits

    table = collect_images()
    assert table.schema.equals(IMAGE_SCHEMA, check_metadata=False)
    assert table.num_rows == 1797
    rows = table.to_pydict()
    assert sorted(set(rows["label"])) == [str(d) for d in range(10)]
    assert rows["row_id"][:2] == ["0000", "0001"] and len(set(rows["row_id"])) == 1797
    assert set(rows["source"]) == {"builtin:digits"}
    assert set(rows["width"]) == {8} and set(rows["height"]) == {8} and set(rows["channels"]) == {1}
    assert set(rows["decode_error"]) == {None}
    digits = load_digits()
    for i in (0, 1000, 1796):
        assert rows["label"][i] == str(digits.target[i])
        assert rows["content_hash"][i] == hashlib.sha256(rows["image"][i]).hexdigest()
        pixels = decode_image(rows["image"][i])[:, :, 0]
        np.testing.assert_array_equal(pixels, np.round(digits.images[i] * 255 / 16).astype(np.uint8))
    assert set(IMAGE_SNAPSHOT_HASH_COLUMNS) <= set(table.column_names)


def test_unknown_builtin_is_an_error():
    with pytest.raises(SourceError, match="builtin:faces.*unknown builtin"):
        collect_images("builtin:faces")


def _png(value: int, size=(5, 4)) -> bytes:
    return encode_png(np.full(size, value, dtype=np.uint8))


def test_folder_of_png_and_jpeg_keeps_corrupt_files_as_rows(tmp_path, caplog):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog" / "more").mkdir(parents=True)
    (tmp_path / "cat" / "a.png").write_bytes(_png(10))
    (tmp_path / "cat" / "b.PNG").write_bytes(_png(20))
    buf = io.BytesIO()
    Image.fromarray(np.full((7, 9, 3), 128, dtype=np.uint8)).save(buf, format="JPEG")
    (tmp_path / "dog" / "more" / "c.jpg").write_bytes(buf.getvalue())
    (tmp_path / "dog" / "broken.png").write_bytes(_png(30)[:40])  # truncated PNG
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("top-level file")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0\0")

    table = collect_images(f"file://{tmp_path}")
    rows = {r["row_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == ["cat/a.png", "cat/b.PNG", "dog/broken.png", "dog/more/c.jpg"]
    assert rows["cat/a.png"]["label"] == "cat" and rows["dog/more/c.jpg"]["label"] == "dog"
    assert (rows["cat/a.png"]["width"], rows["cat/a.png"]["height"], rows["cat/a.png"]["channels"]) == (4, 5, 1)
    jpeg = rows["dog/more/c.jpg"]
    assert (jpeg["width"], jpeg["height"], jpeg["channels"]) == (9, 7, 3)
    broken = rows["dog/broken.png"]
    assert broken["decode_error"] and broken["width"] is None and broken["channels"] is None
    assert broken["content_hash"] == hashlib.sha256(broken["image"]).hexdigest()
    assert all(rows[k]["decode_error"] is None for k in rows if k != "dog/broken.png")
    assert table.schema.metadata[b"skipped_files"] == b"2"  # notes.txt and README.md, not .DS_Store
    assert "skipped 2 file(s)" in caplog.text


def test_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="nowhere.*no such file or folder"):
        collect_images(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="empty.*no PNG/JPEG files"):
        collect_images(str(empty))
    (empty / "cat").mkdir()
    (empty / "cat" / "a.txt").write_text("x")
    with pytest.raises(SourceError, match="skipped 1 other file"):
        collect_images(str(empty))
    with pytest.raises(SourceError, match="labels= only applies"):
        collect_images(str(empty), labels="x")


def _deny_listing(monkeypatch, *denied: Path) -> None:
    """os.scandir raising PermissionError for `denied`, as for a folder without read permission (the tests
    run as root, for which chmod 000 changes nothing)."""
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) in denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)


def _labelled_folder(root: Path) -> Path:
    for relative in ("cat/a.png", "dog/b.png", "dog/more/c.png"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(_png(10))
    return root


def test_a_category_folder_that_cannot_be_listed_is_an_error_naming_it(tmp_path, monkeypatch):
    root = _labelled_folder(tmp_path / "pets")
    _deny_listing(monkeypatch, root / "dog")
    with pytest.raises(SourceError, match=r"pets: cannot list folder dog: Permission denied"):
        collect_images(str(root))  # not a table with the cat alone


def test_a_sub_folder_of_a_category_that_cannot_be_listed_is_an_error_naming_it(tmp_path, monkeypatch):
    root = _labelled_folder(tmp_path / "pets")
    _deny_listing(monkeypatch, root / "dog" / "more")
    with pytest.raises(SourceError, match=r"pets: cannot list folder dog/more: Permission denied"):
        collect_images(str(root))


def test_the_folder_itself_that_cannot_be_listed_is_an_error(tmp_path, monkeypatch):
    root = _labelled_folder(tmp_path / "pets")
    _deny_listing(monkeypatch, root)
    with pytest.raises(SourceError, match=r"pets: cannot list the folder: Permission denied"):
        collect_images(str(root))


def test_a_broken_symbolic_link_is_an_error_naming_it(tmp_path):
    root = _labelled_folder(tmp_path / "pets")
    (root / "bird").symlink_to(tmp_path / "unmounted" / "bird")  # a category whose target is gone
    with pytest.raises(SourceError, match=r"pets: bird is a broken symbolic link"):
        collect_images(str(root))
    (root / "bird").unlink()
    (root / "dog" / "more" / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(SourceError, match=r"pets: dog/more/gone is a broken symbolic link"):
        collect_images(str(root))


def test_linked_folders_are_followed_and_a_link_loop_is_an_error(tmp_path):
    root = _labelled_folder(tmp_path / "pets")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "d.png").write_bytes(_png(40))
    (root / "cat" / "linked").symlink_to(tmp_path / "elsewhere")
    (root / "fish").symlink_to(tmp_path / "elsewhere")
    os.mkfifo(root / "dog" / "pipe.png")  # neither a file nor a folder: skipped and counted, never opened
    table = collect_images(str(root))
    assert table.column("row_id").to_pylist() == [
        "cat/a.png", "cat/linked/d.png", "dog/b.png", "dog/more/c.png", "fish/d.png"]
    assert table.schema.metadata[b"skipped_files"] == b"1"
    (root / "dog" / "more" / "loop").symlink_to(root / "dog")
    with pytest.raises(SourceError, match=r"pets: dog/more/loop links back to a folder that contains it"):
        collect_images(str(root))


def test_an_image_file_that_cannot_be_read_is_a_row_with_the_reason(tmp_path, monkeypatch):
    root = _labelled_folder(tmp_path / "pets")
    real_read_bytes = Path.read_bytes

    def deny(self):
        if self.name == "b.png":
            raise PermissionError(13, "Permission denied")
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    rows = {r["row_id"]: r for r in collect_images(str(root)).to_pylist()}
    assert sorted(rows) == ["cat/a.png", "dog/b.png", "dog/more/c.png"]
    assert rows["dog/b.png"]["decode_error"] == "cannot read file: Permission denied"
    assert rows["dog/b.png"]["image"] == b"" and rows["cat/a.png"]["decode_error"] is None


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files(tmp_path, idx_arrays, gz):
    images, labels = idx_arrays
    path = write_idx(tmp_path, images, labels, gz=gz)
    table = collect_images(str(path))  # labels file inferred from the name
    rows = table.to_pydict()
    assert rows["label"] == ["3", "1", "4", "1", "5"]
    assert rows["row_id"] == ["0", "1", "2", "3", "4"]
    assert set(rows["source"]) == {str(path)}
    assert set(rows["width"]) == {4} and set(rows["height"]) == {6}
    for i in range(5):
        np.testing.assert_array_equal(decode_image(rows["image"][i])[:, :, 0], images[i])


def test_idx_explicit_labels_and_file_scheme(tmp_path, idx_arrays):
    images, labels = idx_arrays
    path = write_idx(tmp_path, images, labels, gz=True)
    renamed = tmp_path / "my-labels.gz"
    (tmp_path / "train-labels-idx1-ubyte.gz").rename(renamed)
    with pytest.raises(SourceError, match="train-labels-idx1-ubyte.gz.*does not exist"):
        collect_images(str(path))
    table = collect_images(f"file://{path}", labels=f"file://{renamed}")
    assert table.column("label").to_pylist() == ["3", "1", "4", "1", "5"]


def test_idx_wrong_magic_number(tmp_path, idx_arrays):
    images, labels = idx_arrays
    path = write_idx(tmp_path, images, labels, gz=False)
    with pytest.raises(SourceError, match="not an IDX images file: magic number 2049, expected 2051"):
        collect_images(str(tmp_path / "train-labels-idx1-ubyte"), labels=str(tmp_path / "train-labels-idx1-ubyte"))
    with pytest.raises(SourceError, match="not an IDX labels file: magic number 2051, expected 2049"):
        collect_images(str(path), labels=str(path))
    png = tmp_path / "x-images-idx3-ubyte"
    png.write_bytes(_png(5))
    with pytest.raises(SourceError, match="magic number"):
        collect_images(str(png), labels=str(tmp_path / "train-labels-idx1-ubyte"))


def test_idx_count_mismatch(tmp_path, idx_arrays):
    images, labels = idx_arrays
    path = write_idx(tmp_path, images, labels[:4], gz=True)
    with pytest.raises(SourceError, match="5 images but 4 labels"):
        collect_images(str(path))


def test_idx_truncated_trailing_and_bad_gzip(tmp_path, idx_arrays):
    images, labels = idx_arrays
    path = write_idx(tmp_path, images, labels, gz=False)
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    promise = r"train-images-idx3-ubyte: truncated: header promises \(5, 6, 4\) = 120 data bytes, found 113"
    with pytest.raises(SourceError, match=promise):
        collect_images(str(path))
    path.write_bytes(data[:10])
    with pytest.raises(SourceError, match="shorter than the 16-byte IDX header"):
        collect_images(str(path))
    path.write_bytes(data + b"xx")
    with pytest.raises(SourceError, match="2 unexpected bytes"):
        collect_images(str(path))
    path.write_bytes(gzip.compress(data)[:-12])
    with pytest.raises(SourceError, match="not a valid gzip file"):
        collect_images(str(path))


def _gzip_with_zeros(data: bytes, zeros_mib: int) -> bytes:
    """gzip of `data` followed by `zeros_mib` MiB of zero bytes, compressed a MiB at a time (never held)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    parts = [compressor.compress(data)]
    block = bytes(1 << 20)
    parts += [compressor.compress(block) for _ in range(zeros_mib)]
    return b"".join(parts) + compressor.flush()


@pytest.mark.parametrize("header", [True, False], ids=["valid-data-then-zeros", "zeros-only"])
def test_idx_gzip_bomb_is_refused_after_decompressing_little(tmp_path, idx_arrays, header):
    images, labels = idx_arrays
    path = write_idx(tmp_path, images, labels, gz=True)
    data = gzip.decompress(path.read_bytes()) if header else b""
    path.write_bytes(_gzip_with_zeros(data, zeros_mib=64))
    assert path.stat().st_size < 1 << 20  # 64 MiB of zeros inside well under a megabyte
    expected = (r"more than 1048576 unexpected bytes after the \(5, 6, 4\) data" if header
                else "not an IDX images file: magic number 0")
    tracemalloc.start()
    try:
        with pytest.raises(SourceError, match=rf"train-images-idx3-ubyte\.gz: {expected}"):
            collect_images(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # not the 64 MiB it inflates to


def test_idx_header_promising_more_than_the_limit_is_refused_before_reading_the_data(tmp_path, idx_arrays):
    images, labels = idx_arrays
    path = write_idx(tmp_path, images, labels, gz=True)
    with pytest.raises(SourceError, match=r"header promises \(5, 6, 4\) = 120 data bytes, more than the limit of 100"):
        collect_images(str(path), idx_max_bytes=100)
    assert collect_images(str(path), idx_max_bytes=120).num_rows == 5  # exactly at the limit is fine
    # 4,294,967,295 images of 28x28 promised by a 16-byte header: refused, nothing allocated for them
    header = b"".join(x.to_bytes(4, "big") for x in (2051, 2**32 - 1, 28, 28))
    path.write_bytes(gzip.compress(header))
    with pytest.raises(SourceError, match=r"= 3367254359280 data bytes, more than the limit of 1073741824 bytes"):
        collect_images(str(path))


def test_idx_name_without_convention_needs_labels(tmp_path):
    f = tmp_path / "pixels.bin"
    f.write_bytes(b"\0" * 32)
    with pytest.raises(SourceError, match="cannot infer the labels file"):
        collect_images(str(f))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def http_root(tmp_path):
    """A local web server on 127.0.0.1 serving tmp_path (never the internet)."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_idx_over_http(http_root, idx_arrays):
    folder, base = http_root
    images, labels = idx_arrays
    write_idx(folder, images, labels, gz=True, prefix="t10k")
    url = f"{base}/t10k-images-idx3-ubyte.gz"
    table = collect_images(url)
    assert table.column("label").to_pylist() == ["3", "1", "4", "1", "5"]
    assert set(table.column("source").to_pylist()) == {url}
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(SourceError, match=r"t10k-labels-idx1-ubyte.gz: HTTP 404"):
        collect_images(url)
    with pytest.raises(SourceError, match=r"missing-images-idx3-ubyte.gz: HTTP 404"):
        collect_images(f"{base}/missing-images-idx3-ubyte.gz")


# ---- streaming: iter_images yields record batches --------------------------------------------------------


def test_iter_images_folder_in_small_batches_with_the_skipped_count_on_each(tmp_path):
    for label, values in (("cat", (10, 20, 30)), ("dog", (40, 50))):
        (tmp_path / label).mkdir()
        for v in values:
            Image.fromarray(np.full((3, 2), v, dtype=np.uint8)).save(tmp_path / label / f"{v}.png")
    (tmp_path / "dog" / "labels.csv").write_text("not an image")
    (tmp_path / "LICENSE").write_text("top-level file")

    batches = list(iter_images(str(tmp_path), batch_rows=2))
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert all(b.schema.metadata[b"skipped_files"] == b"2" for b in batches)
    assert all(b.schema.equals(IMAGE_SCHEMA, check_metadata=False) for b in batches)
    streamed = pa.Table.from_batches(batches)
    whole = collect_images(str(tmp_path))
    assert streamed.equals(whole)
    assert whole.column("row_id").to_pylist() == ["cat/10.png", "cat/20.png", "cat/30.png", "dog/40.png", "dog/50.png"]
    assert set(whole.column("width").to_pylist()) == {2} and set(whole.column("height").to_pylist()) == {3}


def test_iter_images_builtin_digits_in_batches_of_500_gives_the_same_version(tmp_path):
    batches = list(iter_images("builtin:digits", batch_rows=500))
    assert [b.num_rows for b in batches] == [500, 500, 500, 297]
    whole = collect_images()
    assert pa.Table.from_batches(batches).equals(whole)
    snap = write_snapshot(iter_images("builtin:digits", batch_rows=500), tmp_path,
                          hash_columns=IMAGE_SNAPSHOT_HASH_COLUMNS, source="builtin:digits")
    assert snap.rows == 1797 and snap.version == table_version(whole, IMAGE_SNAPSHOT_HASH_COLUMNS)[:16]
