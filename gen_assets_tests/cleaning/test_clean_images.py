"""clean_images: every bad row ends in quarantine with its reason, good rows survive, the split is
deterministic, and a failure half-way leaves the previous clean table and quarantine rows intact."""

from __future__ import annotations

import hashlib
import io
import json

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import gen_assets.cleaning.images as cleaning
from gen_assets.cleaning.images import (
    categories,
    clean_images,
    duplicate_count,
    load_images,
    null_count,
    quarantine_rate,
    split_fractions,
)
from gen_assets.media.png import encode_png
from gen_assets.sources.images import (
    IMAGE_SCHEMA,
    IMAGE_SNAPSHOT_HASH_COLUMNS,
    collect_images,
    image_table,
    inspect_image,
)
from gen_assets.store.snapshots import write_snapshot


def make_rows(specs: list[tuple[str, str | None, bytes]]) -> dict[str, list]:
    """(row_id, label, image bytes) -> snapshot columns, sizes and decode errors found as the collector does."""
    rows: dict[str, list] = {name: [] for name in IMAGE_SCHEMA.names}
    for row_id, label, data in specs:
        width, height, channels, error = inspect_image(data)
        rows["source"].append("test")
        rows["row_id"].append(row_id)
        rows["label"].append(label)
        rows["image"].append(data)
        rows["content_hash"].append(hashlib.sha256(data).hexdigest())
        rows["width"].append(width)
        rows["height"].append(height)
        rows["channels"].append(channels)
        rows["decode_error"].append(error)
    return rows


def png(seed: int, shape=(8, 8)) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8))


def snapshot(tmp_path, rows: dict[str, list]):
    table = image_table(rows)
    return write_snapshot(table, tmp_path / "snapshots", hash_columns=IMAGE_SNAPSHOT_HASH_COLUMNS, source="test")


def python_table_version(rows: list[tuple[str, str, str]]) -> str:
    """The documented version rule, computed without SQL: per (split, label), the row count and the sums of
    the two 64-bit halves of each hash's first 128 bits; sha256 over the sorted lines."""
    groups: dict[tuple[str, str], list[int]] = {}
    for content_hash, split, label in rows:
        g = groups.setdefault((split, label), [0, 0, 0])
        g[0] += 1
        g[1] += int(content_hash[:16], 16)
        g[2] += int(content_hash[16:32], 16)
    lines = sorted(f"{split}:{label}:{n}:{hi}:{lo}" for (split, label), (n, hi, lo) in groups.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@pytest.fixture
def con():
    c = duckdb.connect()
    yield c
    c.close()


@pytest.fixture
def crafted(tmp_path):
    """Four good rows and one of each kind of bad row."""
    rows = make_rows(
        [
            ("r01", " Cat ", png(1)),
            ("r02", "dog", png(2)),
            ("r03", "DOG", png(3)),
            ("r04", "   ", png(4)),  # blank label, and an earlier copy of r09's image
            ("r05", "cat", b"definitely not a PNG"),
            ("r06", "cat", png(6, (9, 8))),  # 9 rows x 8 cols: height 9
            ("r07", "dog", png(2)),  # duplicate of r02
            ("r08", None, png(8)),
            ("r09", "bird", png(4)),  # same image as r04, whose label is blank: r09 is kept
            ("r10", "cat", png(10)),
        ]
    )
    rows["content_hash"][9] = "0" * 64  # r10: hash that is not the sha256 of its bytes
    return snapshot(tmp_path, rows)


def quarantine_rows(con, asset="clean_images"):
    query = "SELECT row_id, reason FROM quarantine WHERE asset = ? ORDER BY row_id"
    return dict(con.execute(query, [asset]).fetchall())


def test_bad_rows_are_quarantined_with_their_reason(con, crafted):
    stats = clean_images(con, crafted.path, snapshot_version=crafted.version, resize="none")

    clean = dict(con.execute("SELECT row_id, label FROM clean_images ORDER BY row_id").fetchall())
    assert clean == {"r01": "cat", "r02": "dog", "r03": "dog", "r09": "bird"}
    reasons = quarantine_rows(con)
    assert sorted(reasons) == ["r04", "r05", "r06", "r07", "r08", "r10"]
    assert reasons["r04"] == "missing label" and reasons["r08"] == "missing label"
    assert reasons["r05"].startswith("undecodable: UnidentifiedImageError")
    assert reasons["r06"] == "wrong size: 8x9, expected 8x8"
    assert reasons["r07"] == "duplicate of row r02"
    assert reasons["r10"] == "content_hash does not match the image bytes"
    snap_version, source = con.execute("SELECT DISTINCT snapshot_version, source FROM quarantine").fetchone()
    assert (snap_version, source) == (crafted.version, "test")

    assert (stats.rows_in, stats.rows_clean, stats.rows_quarantined) == (10, 4, 6)
    assert stats.by_reason == {
        "undecodable": 1,
        "hash_mismatch": 1,
        "missing_label": 2,
        "wrong_size": 1,
        "duplicate": 1,
    }
    assert stats.image_size == (8, 8)
    assert sum(stats.split_counts.values()) == 4 and set(stats.split_counts) == {"train", "val", "test"}
    types = con.execute("SELECT typeof(image), typeof(width) FROM clean_images LIMIT 1").fetchone()
    assert types == ("BLOB", "INTEGER")
    assert duplicate_count(con, "clean_images") == 0 and null_count(con, "clean_images") == 0
    assert quarantine_rate(con, "clean_images", crafted.version) == pytest.approx(0.6)
    assert categories(con) == ["bird", "cat", "dog"]


def test_configured_image_size(con, tmp_path):
    snap = snapshot(tmp_path, make_rows([("a", "x", png(1)), ("b", "x", png(2)), ("c", "x", png(3, (9, 9)))]))
    stats = clean_images(con, snap.path, snapshot_version=snap.version, image_size=9, resize="none")
    assert stats.image_size == (9, 9) and stats.rows_clean == 1
    assert quarantine_rows(con) == {"a": "wrong size: 8x8, expected 9x9", "b": "wrong size: 8x8, expected 9x9"}
    # Without it, the most common size wins.
    stats = clean_images(con, snap.path, snapshot_version=snap.version, resize="none")
    assert stats.image_size == (8, 8) and quarantine_rows(con) == {"c": "wrong size: 9x9, expected 8x8"}


def test_rerun_replaces_this_snapshots_quarantine_and_keeps_other_snapshots(con, tmp_path, crafted):
    clean_images(con, crafted.path, snapshot_version=crafted.version, resize="none")
    clean_images(con, crafted.path, snapshot_version=crafted.version, resize="none")
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 6  # not 12
    other = snapshot(tmp_path, make_rows([("z1", "", png(50)), ("z2", "a", png(51))]))
    clean_images(con, other.path, snapshot_version=other.version)
    counts = dict(con.execute("SELECT snapshot_version, count(*) FROM quarantine GROUP BY ALL").fetchall())
    assert counts == {crafted.version: 6, other.version: 1}
    assert quarantine_rate(con, "clean_images", other.version) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="built from snapshot"):
        quarantine_rate(con, "clean_images", crafted.version)


def test_digits_split_is_deterministic_and_within_tolerance(con, tmp_path):
    snap = write_snapshot(collect_images(), tmp_path, hash_columns=IMAGE_SNAPSHOT_HASH_COLUMNS, source="builtin:digits")
    first = clean_images(con, snap.path, snapshot_version=snap.version, val_fraction=0.15, test_fraction=0.1)
    splits = dict(con.execute("SELECT row_id, split FROM clean_images").fetchall())
    hashes = dict(con.execute("SELECT row_id, content_hash FROM clean_images").fetchall())
    # Independent of the SQL: the documented rule, computed in Python.
    for row_id, h in hashes.items():
        bucket = int(h[:8], 16) % 10000
        assert splits[row_id] == ("test" if bucket < 1000 else "val" if bucket < 2500 else "train")
    fractions = split_fractions(con, "clean_images")
    assert fractions["train"] == pytest.approx(0.75, abs=0.03)
    assert fractions["val"] == pytest.approx(0.15, abs=0.03)
    assert fractions["test"] == pytest.approx(0.10, abs=0.03)

    second = clean_images(
        duckdb.connect(), snap.path, snapshot_version=snap.version, val_fraction=0.15, test_fraction=0.1
    )
    assert second == first
    assert first.rows_clean == first.rows_in - first.by_reason["duplicate"]
    rows = con.execute("SELECT content_hash, split, label FROM clean_images").fetchall()
    assert first.version == python_table_version(rows)
    other = clean_images(duckdb.connect(), snap.path, snapshot_version=snap.version, val_fraction=0.1)
    assert other.version != first.version  # moving rows between splits changes the version
    assert first.image_size == (8, 8)
    assert (first.channels, first.resized) == (1, 0), "grey 8x8 digits: nothing converted, nothing resized"

    val = load_images(con, split="val")
    assert val.images.shape == (first.split_counts["val"], 8, 8, 1) and val.images.dtype == np.uint8
    assert val.row_ids == sorted(val.row_ids)
    assert load_images(con, split="test", channels=3).images.shape[1:] == (8, 8, 3)
    everything = load_images(con)
    assert len(everything) == first.rows_clean and everything.images.max() == 255
    assert categories(con) == [str(d) for d in range(10)]


def test_failure_midway_leaves_previous_state_intact(con, tmp_path, crafted, monkeypatch):
    clean_images(con, crafted.path, snapshot_version=crafted.version)
    before_clean = con.execute("SELECT * FROM clean_images ORDER BY row_id").fetchall()
    before_quarantine = con.execute("SELECT * FROM quarantine ORDER BY row_id").fetchall()
    comment_query = "SELECT comment FROM duckdb_tables() WHERE table_name = 'clean_images'"
    before_comment = con.execute(comment_query).fetchone()

    # Fail after the clean table was replaced and the quarantine rows deleted and re-inserted.
    real_sql = cleaning.load_sql("clean_images")
    monkeypatch.setattr(cleaning, "load_sql", lambda name: real_sql + "\nSELECT error('simulated failure');\n")
    other = snapshot(tmp_path, make_rows([("n1", "new", png(99))]))
    for version in (crafted.version, other.version):
        with pytest.raises(duckdb.Error, match="simulated failure"):
            clean_images(con, other.path, snapshot_version=version)

    assert con.execute("SELECT * FROM clean_images ORDER BY row_id").fetchall() == before_clean
    assert con.execute("SELECT * FROM quarantine ORDER BY row_id").fetchall() == before_quarantine
    assert con.execute(comment_query).fetchone() == before_comment
    leftovers = con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    assert leftovers == []
    assert con.execute("SELECT getvariable('snapshot_path')").fetchone() == (None,)
    # The connection is usable afterwards: no transaction left open.
    monkeypatch.setattr(cleaning, "load_sql", lambda name: real_sql)
    assert clean_images(con, other.path, snapshot_version=other.version).rows_clean == 1


def test_other_table_name_keeps_its_own_quarantine(con, crafted):
    clean_images(con, crafted.path, snapshot_version=crafted.version, resize="none")
    clean_images(con, crafted.path, snapshot_version=crafted.version, table="clean_images_b", resize="none")
    assert con.execute("SELECT asset, count(*) FROM quarantine GROUP BY ALL ORDER BY 1").fetchall() == [
        ("clean_images", 6),
        ("clean_images_b", 6),
    ]
    comment = con.execute("SELECT comment FROM duckdb_tables() WHERE table_name = 'clean_images_b'").fetchone()[0]
    assert json.loads(comment) == {"snapshot_version": crafted.version, "rows_in": 10}


def test_all_rows_bad_gives_an_empty_clean_table(con, tmp_path):
    snap = snapshot(tmp_path, make_rows([("a", "x", b"junk"), ("b", "y", b"")]))
    stats = clean_images(con, snap.path, snapshot_version=snap.version)
    assert (stats.rows_clean, stats.rows_quarantined, stats.by_reason["undecodable"]) == (0, 2, 2)
    assert stats.image_size is None
    assert stats.version == hashlib.sha256(b"").hexdigest()
    assert load_images(con).images.shape == (0, 0, 0, 1)
    assert split_fractions(con, "clean_images") == {"train": 0.0, "val": 0.0, "test": 0.0}


def test_bad_arguments(con, tmp_path, crafted):
    with pytest.raises(ValueError, match="invalid table name"):
        clean_images(con, crafted.path, snapshot_version="v", table="x; DROP TABLE quarantine")
    with pytest.raises(ValueError, match="val_fraction"):
        clean_images(con, crafted.path, snapshot_version="v", val_fraction=1.2)
    with pytest.raises(ValueError, match="leave rows for train"):
        clean_images(con, crafted.path, snapshot_version="v", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="image_size"):
        clean_images(con, crafted.path, snapshot_version="v", image_size=0)
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        clean_images(con, str(tmp_path / "nope.parquet"), snapshot_version="v")
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("hello")
    with pytest.raises(ValueError, match="text.parquet cannot be read as Parquet"):
        clean_images(con, str(not_parquet), snapshot_version="v")
    partial = image_table(make_rows([("a", "x", png(1))])).drop_columns(["decode_error", "width"])
    pq.write_table(partial, tmp_path / "cols.parquet")
    with pytest.raises(ValueError, match="lacks column\\(s\\) width, decode_error"):
        clean_images(con, str(tmp_path / "cols.parquet"), snapshot_version="v")
    with pytest.raises(ValueError, match="split must be"):
        load_images(con, split="holdout")


def test_check_helpers_see_bad_tables(con):
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES "
        "('1', 's', '10', 'x'::BLOB, 'h1', 8, 8, 1, 'train'), "
        "('2', 's', '2', 'x'::BLOB, 'h1', 8, 8, 1, 'train'), "
        "('3', 's', ' ', 'y'::BLOB, 'h2', 8, 8, 1, 'val'), "
        "('4', 's', 'a10', 'z'::BLOB, 'h3', NULL, 8, 1, 'test'), "
        "('5', 's', 'a2', 'w'::BLOB, 'h4', 8, 8, 1, 'train')"
        ") AS v(row_id, source, label, image, content_hash, width, height, channels, split)"
    )
    assert duplicate_count(con, "t") == 1
    assert null_count(con, "t") == 2
    assert split_fractions(con, "t") == {"train": 0.6, "val": 0.2, "test": 0.2}
    assert categories(con, "t") == ["2", "10", " ", "a2", "a10"]  # numbers first, then text
    with pytest.raises(ValueError, match="no table"):
        quarantine_rate(con, "missing_table", "v")


# ---- users' own images: size and channels inferred, other sizes resized by the policy -----------------------


def pil_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def colour_folder(root, sizes_by_category: dict[str, list[tuple[int, int]]]):
    """<root>/<category>/<i>.png: RGB images of random colour noise, of the given (width, height)."""
    rng = np.random.default_rng(0)
    for category, sizes in sizes_by_category.items():
        (root / category).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            (root / category / f"{i}.png").write_bytes(pil_png(Image.fromarray(pixels, "RGB")))
    return root


def folder_snapshot(tmp_path, root):
    table = collect_images(str(root))
    return write_snapshot(table, tmp_path / "snapshots", hash_columns=IMAGE_SNAPSHOT_HASH_COLUMNS, source=str(root))


def test_a_folder_of_colour_images_stays_colour(con, tmp_path):
    root = colour_folder(tmp_path / "imgs", {c: [(16, 16)] * 6 for c in ("cat", "dog", "bird")})
    snap = folder_snapshot(tmp_path, root)
    stats = clean_images(con, snap.path, snapshot_version=snap.version)
    assert (stats.channels, stats.image_size, stats.rows_clean, stats.resized) == (3, (16, 16), 18, 0)
    assert categories(con) == ["bird", "cat", "dog"]
    images = load_images(con, channels=stats.channels).images
    assert images.shape == (18, 16, 16, 3)
    assert (images[..., 0] != images[..., 1]).any(), "the colour survives loading"


def test_grey_images_stay_one_channel_whatever_their_file_mode(con, tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, size=(6, 8, 8), dtype=np.uint8)
    specs = [("l", "a", pil_png(Image.fromarray(grey[0], "L"))),
             ("rgb_of_grey", "a", pil_png(Image.fromarray(np.repeat(grey[1][..., None], 3, axis=2), "RGB"))),
             ("la", "b", pil_png(Image.fromarray(grey[2], "L").convert("LA")))]
    snap = snapshot(tmp_path, make_rows(specs))
    assert clean_images(con, snap.path, snapshot_version=snap.version).channels == 1

    # one palette image with a colour in its palette makes the data colour
    palette = Image.fromarray(grey[3], "L").convert("P")
    palette.putpalette([255, 0, 0] + [v for i in range(1, 256) for v in (i, i, i)])
    snap = snapshot(tmp_path, make_rows([*specs, ("p", "b", pil_png(palette))]))
    assert clean_images(con, snap.path, snapshot_version=snap.version).channels == 3
    # a configured value wins over the inference
    assert clean_images(con, snap.path, snapshot_version=snap.version, channels=1).channels == 1


def stripes(width: int, height: int) -> Image.Image:
    """Red left quarter, green middle half, blue right quarter."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 4, 0] = 255
    pixels[:, width // 4 : 3 * width // 4, 1] = 255
    pixels[:, 3 * width // 4 :, 2] = 255
    return Image.fromarray(pixels, "RGB")


@pytest.mark.parametrize("policy", ["crop", "fit", "pad", "none"])
def test_images_of_another_size_follow_the_resize_policy(con, tmp_path, policy):
    rng = np.random.default_rng(2)
    usual = [(f"u{i}", "x", pil_png(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB")))
             for i in range(3)]
    wide = pil_png(stripes(32, 16))
    snap = snapshot(tmp_path, make_rows([*usual, ("wide", "x", wide)]))
    stats = clean_images(con, snap.path, snapshot_version=snap.version, resize=policy)
    assert stats.image_size == (16, 16)
    if policy == "none":
        assert stats.rows_clean == 3 and quarantine_rows(con) == {"wide": "wrong size: 32x16, expected 16x16"}
        return
    assert stats.rows_clean == 4 and stats.resized == 1 and quarantine_rows(con) == {}
    row = con.execute("SELECT image, content_hash, width, height, channels FROM clean_images WHERE row_id = 'wide'"
                      ).fetchone()
    data, content_hash, width, height, channels = row
    assert (width, height, channels) == (16, 16, 3) and content_hash == hashlib.sha256(data).hexdigest()
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    middle, left = pixels[8, 8], pixels[8, 0]
    if policy == "crop":  # the middle square of 32x16: all green
        assert (pixels[..., 1] > 200).all() and (pixels[..., [0, 2]] < 50).all()
    elif policy == "fit":  # squeezed: red at the left edge, green in the middle
        assert left[0] > 200 and middle[1] > 200
    else:  # "pad": scaled to 16x8, black bands above and below
        assert (pixels[:3] == 0).all() and (pixels[-3:] == 0).all() and left[0] > 200 and middle[1] > 200
    # the split follows the raw image, whatever the policy
    raw_bucket = int(hashlib.sha256(wide).hexdigest()[:8], 16) % 10000
    split = con.execute("SELECT split FROM clean_images WHERE row_id = 'wide'").fetchone()[0]
    assert split == ("test" if raw_bucket < 1000 else "val" if raw_bucket < 2000 else "train")


def test_inferred_size_is_square_and_a_configured_size_resizes_everything(con, tmp_path):
    wide = [(f"w{i}", "x", png(i, (16, 32, 3))) for i in range(2)]  # 32 wide, 16 high
    snap = snapshot(tmp_path, make_rows([*wide, ("s", "x", png(3, (8, 8)))]))
    stats = clean_images(con, snap.path, snapshot_version=snap.version)
    assert stats.image_size == (16, 16) and stats.resized == 3  # the most common size's shorter side
    # two raw images that crop to the same pixels are duplicates once cropped: the first by row_id stays
    mirrored = [(f"m{i}", "x", pil_png(stripes(32, 16).rotate(180 * i))) for i in range(2)]
    snap = snapshot(tmp_path, make_rows(mirrored))
    stats = clean_images(con, snap.path, snapshot_version=snap.version)
    assert (stats.rows_clean, stats.by_reason["duplicate"]) == (1, 1)
    assert quarantine_rows(con) == {"m1": "duplicate of row m0"} and duplicate_count(con) == 0

    snap = snapshot(tmp_path, make_rows([*wide, ("s", "x", png(3, (8, 8)))]))
    stats = clean_images(con, snap.path, snapshot_version=snap.version, image_size=12, resize="fit")
    assert stats.image_size == (12, 12) and stats.resized == 3
    assert load_images(con, channels=3).images.shape == (3, 12, 12, 3)
    with pytest.raises(ValueError, match="resize must be one of"):
        clean_images(con, snap.path, snapshot_version=snap.version, resize="stretch")
    with pytest.raises(ValueError, match="channels must be"):
        clean_images(con, snap.path, snapshot_version=snap.version, channels=2)
