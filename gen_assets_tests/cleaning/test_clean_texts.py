"""clean_texts: masking, markup, whitespace, every bad row in quarantine with its reason, deterministic
splits, and a failure half-way leaving the previous clean table and quarantine rows intact."""

from __future__ import annotations

import hashlib

import duckdb
import pyarrow as pa
import pytest

import gen_assets.cleaning.texts as cleaning
from gen_assets.cleaning.texts import (
    categories,
    clean_texts,
    duplicate_count,
    load_texts,
    null_count,
    quarantine_rate,
    split_fractions,
)
from gen_assets.sources.texts import TEXT_SCHEMA, TEXT_SNAPSHOT_HASH_COLUMNS, collect_texts
from gen_assets.store.snapshots import write_snapshot


def snapshot(tmp_path, specs: list[tuple], name: str = "snapshots"):
    """(row_id, category, text[, decode_error]) -> a landed snapshot, as collect_texts would give it."""
    rows = []
    for row_id, category, text, *error in specs:
        raw = (text or "").encode("utf-8")
        rows.append(
            {
                "source": "test",
                "row_id": row_id,
                "category": category,
                "title": None,
                "section": None,
                "text": text,
                "raw_bytes": len(raw),
                "content_hash": hashlib.sha256(raw).hexdigest(),
                "decode_error": error[0] if error else None,
            }
        )
    table = pa.Table.from_pylist(rows, schema=TEXT_SCHEMA)
    return write_snapshot(table, tmp_path / name, hash_columns=TEXT_SNAPSHOT_HASH_COLUMNS, source="test")


def cleaned(con, tmp_path, texts: list[str], **kwargs) -> list[str]:
    """The cleaned form of each text (all must survive cleaning), in order."""
    snap = snapshot(tmp_path, [(f"r{i:03d}", "c", t) for i, t in enumerate(texts)])
    stats = clean_texts(con, snap.path, snapshot_version=snap.version, min_chars=1, **kwargs)
    assert stats.rows_clean == len(texts), con.execute("SELECT row_id, reason FROM quarantine").fetchall()
    return [t for _, t in load_texts(con)]


@pytest.fixture
def con():
    c = duckdb.connect()
    yield c
    c.close()


# ---- the text transformations -------------------------------------------------------------------------


def test_personal_data_is_masked(con, tmp_path):
    out = cleaned(
        con,
        tmp_path,
        [
            "Write to john_doe@example.com or jane.doe+tag@mail.co.uk today.",
            "See https://example.com/path?q=1&b=2. Also www.shakespeare.org/plays, then http://host/@user ok",
            "Call +44 20 7946 0958, (555) 123-4567, 555-123-4567, 555.123.4567, 020 7946 0958 or +1 (555) 123-4567.",
        ],
    )
    assert out == [
        "Write to <EMAIL> or <EMAIL> today.",
        "See <URL>. Also <URL>, then <URL> ok",
        "Call <PHONE>, <PHONE>, <PHONE>, <PHONE>, <PHONE> or <PHONE>.",
    ]


def test_numbers_that_are_not_phone_numbers_survive(con, tmp_path):
    text = (
        "Act 3, Scene 2 was first played in 1599; see 3.2.145, lines 1-20, the years 1599-1600, "
        "2024-01-15, 10 000 000 ducats, 1,000,000 and 192.168.1.1."
    )
    assert cleaned(con, tmp_path, [text]) == [text]


def test_markup_is_stripped_as_a_reader_sees_the_page(con, tmp_path):
    scene = (
        "### SCENE II. The sea-coast.\n\n"
        "_Enter VIOLA, a Captain, and Sailors_\n\n"
        "**VIOLA**  \nWhat country, friends, is this?\n\n"
        "**Captain**  \nThis is Illyria, lady.\n\n"
        "*Exeunt.*\n\n"
        "__\\[Awaking]_  \n"
        "Keep snake_case, 2*3 and \\*stars\\*; drop [a link](http://x.org) \\-- done"
    )
    assert cleaned(con, tmp_path, [scene]) == [
        "SCENE II. The sea-coast.\n"
        "Enter VIOLA, a Captain, and Sailors\n"
        "VIOLA\nWhat country, friends, is this?\n"
        "Captain\nThis is Illyria, lady.\n"
        "Exeunt.\n"
        "[Awaking]\n"
        "Keep snake_case, 2*3 and *stars*; drop a link -- done"
    ]


def test_whitespace_and_unicode_are_normalized(con, tmp_path):
    out = cleaned(
        con,
        tmp_path,
        ["\ufeff  tabs\t\tand   spaces \r\n\r\n\n  many\u00a0blanks  \n\n\n end  ", "Cafe\u0301 au lait"],
    )
    assert out == ["tabs and spaces\nmany blanks\nend", "Caf\u00e9 au lait"]


# ---- quarantine -----------------------------------------------------------------------------------------


@pytest.fixture
def crafted(tmp_path):
    """Clean rows and one of each kind of bad row."""
    return snapshot(
        tmp_path,
        [
            ("r01", " Comedy ", "What country, friends, is this? This is Illyria, lady."),
            ("r02", "tragedy", "To be, or not to be, that is the question."),
            ("r03", "comedy", None, "not UTF-8: byte 0xe9 at offset 3"),
            ("r04", "comedy", None, "too long: 52428800 bytes > limit 1048576 bytes (text not kept)"),
            ("r05", None, "A perfectly good text without a category."),
            ("r06", "   ", "A perfectly good text with a blank category."),
            ("r07", "comedy", "**Too** short"),  # 9 characters once the markup is gone
            ("r08", "comedy", "x" * 121),
            ("r09", "tragedy", "To be, or not to be, that is the question."),  # exact copy of r02
            ("r10", "tragedy", "**TO BE** or not to be -- that is the question!"),  # near copy of r02
            ("r11", "history", "Now is the winter of our discontent made glorious summer."),
            ("r12", "comedy", ""),  # an empty file
        ],
    )


def test_every_bad_row_is_quarantined_with_its_reason(con, crafted):
    stats = clean_texts(con, crafted.path, snapshot_version=crafted.version, min_chars=20, max_chars=120)
    assert (stats.rows_in, stats.rows_clean, stats.rows_quarantined) == (12, 3, 9)
    assert stats.by_reason == {
        "duplicate": 1,
        "missing_category": 2,
        "near_duplicate": 1,
        "too_long": 2,
        "too_short": 2,
        "undecodable": 1,
    }
    reasons = dict(
        con.execute(
            "SELECT row_id, reason FROM quarantine WHERE asset = 'clean_texts' AND snapshot_version = ?",
            [crafted.version],
        ).fetchall()
    )
    assert reasons == {
        "r03": "undecodable: not UTF-8: byte 0xe9 at offset 3",
        "r04": "too long: 52428800 bytes > limit 1048576 bytes (text not kept)",
        "r05": "missing category",
        "r06": "missing category",
        "r07": "too short: 9 chars < min_chars 20",
        "r08": "too long: 121 chars > max_chars 120",
        "r09": "duplicate of row r02",
        "r10": "near-duplicate of row r02 (same letters and digits)",
        "r12": "too short: 0 chars < min_chars 20",
    }
    rows = con.execute("SELECT row_id, category, n_chars, source FROM clean_texts ORDER BY row_id").fetchall()
    assert rows == [
        # " Comedy " trimmed and lower-cased
        ("r01", "comedy", len("What country, friends, is this? This is Illyria, lady."), "test"),
        ("r02", "tragedy", len("To be, or not to be, that is the question."), "test"),
        ("r11", "history", len("Now is the winter of our discontent made glorious summer."), "test"),
    ]
    assert categories(con) == ["comedy", "history", "tragedy"]
    assert quarantine_rate(con, "clean_texts", crafted.version) == pytest.approx(9 / 12)
    assert duplicate_count(con) == 0 and null_count(con) == 0
    (hash_r01,) = con.execute("SELECT content_hash FROM clean_texts WHERE row_id = 'r01'").fetchone()
    assert hash_r01 == hashlib.sha256(b"What country, friends, is this? This is Illyria, lady.").hexdigest()


def test_bad_files_of_a_folder_end_in_quarantine(con, tmp_path):
    root = tmp_path / "corpus"
    (root / "comedy").mkdir(parents=True)
    (root / "comedy" / "good.txt").write_text("A merry tale of two lovers, told twice over.", encoding="utf-8")
    (root / "comedy" / "empty.txt").write_bytes(b"")
    (root / "comedy" / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    (root / "comedy" / "huge.txt").write_bytes(b"y" * 5000)
    (root / "loose.txt").write_text("A document directly under the root folder.", encoding="utf-8")
    table = collect_texts(str(root), max_bytes=4096)
    snap = write_snapshot(table, tmp_path / "snaps", hash_columns=TEXT_SNAPSHOT_HASH_COLUMNS, source=str(root))
    stats = clean_texts(con, snap.path, snapshot_version=snap.version)
    assert stats.rows_clean == 1 and load_texts(con) == [("comedy", "A merry tale of two lovers, told twice over.")]
    assert dict(con.execute("SELECT row_id, reason FROM quarantine").fetchall()) == {
        "comedy/empty.txt": "too short: 0 chars < min_chars 20",
        "comedy/huge.txt": "too long: 5000 bytes > limit 4096 bytes (text not kept)",
        "comedy/latin1.txt": "undecodable: not UTF-8: byte 0xe9 at offset 3",
        "loose.txt": "missing category",
    }


def test_a_bad_copy_never_shadows_a_good_one(con, tmp_path):
    text = "The same words in two rows of the snapshot."
    snap = snapshot(tmp_path, [("a1", None, text), ("b2", "prose", text)])
    clean_texts(con, snap.path, snapshot_version=snap.version)
    assert con.execute("SELECT row_id FROM clean_texts").fetchall() == [("b2",)]
    assert con.execute("SELECT row_id, reason FROM quarantine").fetchall() == [("a1", "missing category")]


# ---- splits, readers, checks ----------------------------------------------------------------------------


def test_split_follows_the_hash_of_the_cleaned_text(con, tmp_path):
    texts = [f"Document number {i} has its own words: {'ab' * (i % 7)} {i * 7919}." for i in range(400)]
    snap = snapshot(tmp_path, [(f"r{i:04d}", "c", t) for i, t in enumerate(texts)])
    stats = clean_texts(con, snap.path, snapshot_version=snap.version, val_fraction=0.2, test_fraction=0.1)
    assert sum(stats.split_counts.values()) == 400
    for row_id, text, split in con.execute("SELECT row_id, text, split FROM clean_texts").fetchall():
        bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 10000
        assert split == ("test" if bucket < 1000 else "val" if bucket < 3000 else "train"), row_id
    shares = split_fractions(con, "clean_texts")
    assert abs(shares["test"] - 0.1) < 0.05 and abs(shares["val"] - 0.2) < 0.06
    # the same text keeps its split in another snapshot, whatever its row id
    other = snapshot(tmp_path, [("zz", "c", texts[17]), ("yy", "c", "Something else entirely, long enough.")], "other")
    clean_texts(
        con, other.path, snapshot_version=other.version, table="other_texts", val_fraction=0.2, test_fraction=0.1
    )
    split_17 = con.execute("SELECT split FROM clean_texts WHERE row_id = 'r0017'").fetchone()
    assert con.execute("SELECT split FROM other_texts WHERE row_id = 'zz'").fetchone() == split_17


def test_load_texts_by_split_in_row_id_order(con, tmp_path):
    specs = [(f"r{i:03d}", f"cat{i % 3}", f"Text number {i}, distinct from the rest.") for i in range(60)]
    snap = snapshot(tmp_path, specs)
    stats = clean_texts(con, snap.path, snapshot_version=snap.version, val_fraction=0.3, test_fraction=0.3)
    everything = load_texts(con)
    assert everything == [(f"cat{i % 3}", f"Text number {i}, distinct from the rest.") for i in range(60)]
    by_split = {s: load_texts(con, split=s) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in by_split.items()} == stats.split_counts
    assert sorted(sum(by_split.values(), [])) == sorted(everything)
    with pytest.raises(ValueError, match="split must be one of"):
        load_texts(con, split="holdout")


def test_checks_see_duplicates_and_nulls_in_a_broken_table(con):
    con.execute(
        "CREATE TABLE broken AS SELECT * FROM (VALUES "
        "('a', 's', 'x', NULL, NULL, 'Hello, world!', 'h1', 13, 'train'), "
        "('b', 's', 'x', NULL, NULL, 'hello world', 'h2', 11, 'train'), "
        "('c', 's', NULL, NULL, NULL, 'Other text', 'h3', 10, 'val'), "
        "('d', 's', '  ', NULL, NULL, 'More text', 'h4', 9, NULL)) "
        "AS t(row_id, source, category, title, section, text, content_hash, n_chars, split)"
    )
    assert duplicate_count(con, "broken") == 1  # "hello world" is "Hello, world!" up to case and punctuation
    assert null_count(con, "broken") == 2  # a NULL category; a blank category with a NULL split


def test_version_changes_with_the_content_only(con, tmp_path):
    specs = [("r1", "a", "First document, long enough to keep."), ("r2", "b", "Second document, long enough too.")]
    one = snapshot(tmp_path, specs, "one")
    v1 = clean_texts(con, one.path, snapshot_version=one.version).version
    assert clean_texts(con, one.path, snapshot_version=one.version).version == v1
    two = snapshot(tmp_path, [*specs[:1], ("r2", "b", "Second document, changed by one word.")], "two")
    assert clean_texts(con, two.path, snapshot_version=two.version).version != v1


# ---- transactions and arguments -------------------------------------------------------------------------


def test_cleaning_twice_replaces_the_quarantine_rows_instead_of_appending(con, crafted):
    for _ in range(2):
        clean_texts(con, crafted.path, snapshot_version=crafted.version, max_chars=120)
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 9


def test_a_failure_half_way_leaves_the_previous_state_intact(con, tmp_path, crafted, monkeypatch):
    clean_texts(con, crafted.path, snapshot_version=crafted.version, max_chars=120)
    before_table = con.execute("SELECT * FROM clean_texts ORDER BY row_id").fetchall()
    before_quarantine = con.execute("SELECT * FROM quarantine ORDER BY row_id").fetchall()

    # A new snapshot whose SQL runs to the end (table replaced, quarantine rewritten) before the failure.
    specs = [("n1", "poem", "An entirely new document for the table."), ("n2", None, "no category")]
    other = snapshot(tmp_path, specs, "new")

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(cleaning, "_table_version", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        clean_texts(con, other.path, snapshot_version=other.version)
    assert con.execute("SELECT * FROM clean_texts ORDER BY row_id").fetchall() == before_table
    assert con.execute("SELECT * FROM quarantine ORDER BY row_id").fetchall() == before_quarantine
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '_clean_texts%'").fetchone() == (0,)
    assert con.execute("SELECT getvariable('snapshot_path')").fetchone() == (None,)  # the run's variables are reset
    monkeypatch.undo()
    assert clean_texts(con, other.path, snapshot_version=other.version).rows_clean == 1  # and it still works


def test_bad_arguments_are_refused_before_anything_runs(con, tmp_path, crafted):
    with pytest.raises(ValueError, match="invalid table name"):
        clean_texts(con, crafted.path, snapshot_version="v", table="t; DROP TABLE quarantine")
    with pytest.raises(ValueError, match=r"min_chars \(50\) is larger than max_chars \(10\)"):
        clean_texts(con, crafted.path, snapshot_version="v", min_chars=50, max_chars=10)
    with pytest.raises(ValueError, match="val_fraction"):
        clean_texts(con, crafted.path, snapshot_version="v", val_fraction=1.5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        clean_texts(con, str(tmp_path / "missing.parquet"), snapshot_version="v")
    not_texts = tmp_path / "images.parquet"
    con.execute(f"COPY (SELECT 1 AS row_id) TO '{not_texts}' (FORMAT parquet)")
    with pytest.raises(ValueError, match="lacks column"):
        clean_texts(con, str(not_texts), snapshot_version="v")
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'clean_texts'").fetchone() == (0,)
