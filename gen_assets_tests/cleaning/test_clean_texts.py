"""clean_texts: masking, markup, whitespace, every bad row in quarantine with its reason, deterministic
splits, and a failure half-way leaving the previous clean table and quarantine rows intact."""

from __future__ import annotations

import hashlib
import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gen_assets.cleaning.texts as cleaning
from gen_assets.cleaning.texts import (
    CLEAN_COLUMNS,
    Brief,
    categories,
    clean_texts,
    distinct_briefs,
    duplicate_count,
    load_briefs,
    load_texts,
    null_count,
    quarantine_rate,
    split_fractions,
)
from gen_assets.sources.texts import TEXT_SCHEMA, TEXT_SNAPSHOT_HASH_COLUMNS, collect_texts
from gen_assets.store.snapshots import write_snapshot


def snapshot(tmp_path, specs: list[tuple], name: str = "snapshots"):
    """(row_id, category, text[, decode_error]) -> a landed snapshot, as collect_texts would give it."""
    return briefs_snapshot(tmp_path, [(row_id, category, None, *rest) for row_id, category, *rest in specs], name)


def briefs_snapshot(tmp_path, specs: list[tuple], name: str = "snapshots"):
    """(row_id, category, prompt, text[, decode_error]) -> a landed snapshot, as collect_texts would give it."""
    rows = []
    for row_id, category, prompt, text, *error in specs:
        raw = (text or "").encode("utf-8")
        rows.append(
            {
                "source": "test",
                "row_id": row_id,
                "category": category,
                "title": None,
                "section": None,
                "prompt": prompt,
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
        "('a', 's', 'x', NULL, NULL, NULL, 'Hello, world!', 'h1', 13, 'train'), "
        "('b', 's', 'x', NULL, NULL, NULL, 'hello world', 'h2', 11, 'train'), "
        "('c', 's', NULL, NULL, NULL, NULL, 'Other text', 'h3', 10, 'val'), "
        "('d', 's', '  ', NULL, NULL, NULL, 'More text', 'h4', 9, NULL)) "
        "AS t(row_id, source, category, title, section, prompt, text, content_hash, n_chars, split)"
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
    no_macros = "SELECT count(*) FROM duckdb_functions() WHERE function_name LIKE '_clean_texts%'"
    assert con.execute(no_macros).fetchone() == (0,)  # the temporary macros went with the transaction
    monkeypatch.undo()
    assert clean_texts(con, other.path, snapshot_version=other.version).rows_clean == 1  # and it still works
    assert con.execute(no_macros).fetchone() == (0,)  # and are dropped after a run that commits


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


# ---- prompts: briefs with and without reference copy ---------------------------------------------------


def _bucket(value: str) -> int:
    return int(hashlib.sha256(value.encode()).hexdigest()[:8], 16) % 10000


def _split_of(value: str, test: int = 1000, val: int = 1000) -> str:
    bucket = _bucket(value)
    return "test" if bucket < test else "val" if bucket < test + val else "train"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """The bundled product briefs, collected, landed and cleaned with the defaults."""
    tmp = tmp_path_factory.mktemp("catalog")
    snap = write_snapshot(collect_texts("builtin:product_briefs"), tmp, hash_columns=TEXT_SNAPSHOT_HASH_COLUMNS,
                          source="builtin:product_briefs")
    con = duckdb.connect()
    stats = clean_texts(con, snap.path, snapshot_version=snap.version, min_split_rows=1)
    yield con, stats
    con.close()


def test_the_bundled_catalog_cleans_without_quarantine_into_three_splits(catalog):
    con, stats = catalog
    assert (stats.rows_in, stats.rows_clean, stats.rows_quarantined) == (96, 96, 0)
    assert all(stats.split_counts[s] > 0 for s in ("train", "val", "test")), stats.split_counts
    assert [r[0] for r in con.execute("DESCRIBE clean_texts").fetchall()] == list(CLEAN_COLUMNS)
    briefs = load_briefs(con)
    assert len(briefs) == 96 and len(distinct_briefs(briefs)) == 36
    assert categories(con) == ["audio", "home_office", "kitchen", "outdoor", "pets", "skincare"]
    assert sum(b.text is None for b in briefs) == 6 and len(load_texts(con)) == 90
    assert con.execute("SELECT count(*) FROM clean_texts WHERE text IS NULL AND n_chars = 0").fetchone() == (6,)
    # every row of a brief in one split, the split of its prompt
    splits = dict(con.execute("SELECT row_id, split FROM clean_texts").fetchall())
    for category, prompt in distinct_briefs(briefs):
        assert {splits[b.row_id] for b in briefs if b.prompt == prompt} == {_split_of(prompt)}
    per_split = {s: len(distinct_briefs(load_briefs(con, split=s))) for s in ("train", "val", "test")}
    assert sum(per_split.values()) == 36 and all(per_split.values())
    assert duplicate_count(con) == 0 and null_count(con) == 0


def test_a_prompt_is_cleaned_like_the_text(con, tmp_path):
    snap = briefs_snapshot(tmp_path, [
        ("r1", "c", "### **Write** a line  for\r\n\r\n\n the kettle; ask john_doe@example.com  ",
         "Copy one, long enough."),
        ("r2", "c", "Cafe\u0301 brief, see https://example.com/x or call 555-123-4567.", "Copy two, long enough."),
        ("r3", "c", " \t\n ", "Copy three with a blank brief."),
        ("r4", "c", "", "Copy four with an empty brief."),
    ])
    clean_texts(con, snap.path, snapshot_version=snap.version)
    assert con.execute("SELECT row_id, prompt FROM clean_texts ORDER BY row_id").fetchall() == [
        ("r1", "Write a line for\nthe kettle; ask <EMAIL>"),
        ("r2", "Caf\u00e9 brief, see <URL> or call <PHONE>."),
        ("r3", None),  # a blank prompt is no prompt
        ("r4", None),
    ]


def test_a_brief_without_reference_is_clean_and_a_row_with_neither_is_not(con, tmp_path):
    snap = briefs_snapshot(tmp_path, [
        ("r1", "c", "Write a line for the red kettle.", "A red kettle that sings at the boil."),
        ("r2", "c", "Write a line for the blue kettle.", None),  # a brief alone
        ("r3", "c", "Hi", None),  # the length bounds are on the text, not on the prompt
        ("r4", "c", "Write a line for the green kettle.", " \t\n\ufeff "),  # blank once cleaned: no text
        ("r5", "c", None, None),  # neither
        ("r6", "c", "   ", None),  # neither, once the prompt is cleaned
        ("r7", "c", "Write a line for the white kettle.", "Short."),  # a text: bounds apply
        ("r8", None, "Write a line for the black kettle.", None),
        ("r9", "c", "Write a line for the grey kettle.", None, "line 9: field 'text' is int, not a string"),
    ])
    stats = clean_texts(con, snap.path, snapshot_version=snap.version)
    assert stats.rows_clean == 4
    rows = con.execute("SELECT row_id, prompt, text, n_chars FROM clean_texts ORDER BY row_id").fetchall()
    assert rows == [
        ("r1", "Write a line for the red kettle.", "A red kettle that sings at the boil.", 36),
        ("r2", "Write a line for the blue kettle.", None, 0),
        ("r3", "Hi", None, 0),
        ("r4", "Write a line for the green kettle.", None, 0),
    ]
    assert dict(con.execute("SELECT row_id, reason FROM quarantine").fetchall()) == {
        "r5": "undecodable: no text",
        "r6": "undecodable: no text",
        "r7": "too short: 6 chars < min_chars 20",
        "r8": "missing category",
        "r9": "undecodable: line 9: field 'text' is int, not a string",
    }
    assert null_count(con) == 0 and duplicate_count(con) == 0
    assert load_texts(con) == [("c", "A red kettle that sings at the boil.")]  # rows with a text only


def test_jsonl_and_csv_briefs_through_collection_and_cleaning(con, tmp_path):
    jsonl = tmp_path / "briefs.jsonl"
    records = [
        {"category": "kettles", "prompt": "Write a line for the red kettle.", "text": "A red kettle that sings."},
        {"category": "kettles", "prompt": "Write a line for the blue kettle."},
        {"category": "kettles", "text": "Copy for no brief in particular."},
        {"category": "kettles"},
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    csv_file = tmp_path / "briefs.csv"
    csv_file.write_text(
        "category,prompt,text\n"
        "kettles,Write a line for the red kettle.,A red kettle that sings.\n"
        "kettles,Write a line for the blue kettle.,\n"
        "kettles,,Copy for no brief in particular.\n"
        "kettles,,\n",
        encoding="utf-8",
    )
    expected = {jsonl: "undecodable: line 4: no field 'text'", csv_file: "too short: 0 chars < min_chars 20"}
    for source, neither in expected.items():
        snap = write_snapshot(collect_texts(str(source)), tmp_path / source.suffix[1:],
                              hash_columns=TEXT_SNAPSHOT_HASH_COLUMNS, source=str(source))
        stats = clean_texts(con, snap.path, snapshot_version=snap.version)
        assert stats.rows_clean == 3, source
        assert [(b.prompt, b.text) for b in load_briefs(con)] == [
            ("Write a line for the red kettle.", "A red kettle that sings."),
            ("Write a line for the blue kettle.", None),
            (None, "Copy for no brief in particular."),
        ]
        reasons = con.execute("SELECT row_id, reason FROM quarantine WHERE snapshot_version = ?",
                              [snap.version]).fetchall()
        assert reasons == [("00000004", neither)]  # the row, by its line / record number


def test_the_split_follows_the_prompt_and_stays_on_the_text_without_one(con, tmp_path):
    prompts = [f"Write a line for product number {i}, in brief {i * 31}." for i in range(60)]
    specs = []
    for i, prompt in enumerate(prompts):
        specs += [(f"p{i:03d}/{n}", "c", prompt, f"Reference line {n} for product {i}, its own words.") for n in (1, 2)]
        specs.append((f"p{i:03d}/3", "c", prompt, None) if i % 5 == 0 else
                     (f"p{i:03d}/3", "c", prompt, f"Reference line 3 for product {i}, its own words."))
    texts = [f"A document without a brief, number {i} of them." for i in range(60)]
    specs += [(f"t{i:03d}", "c", None, t) for i, t in enumerate(texts)]
    snap = briefs_snapshot(tmp_path, specs)
    stats = clean_texts(con, snap.path, snapshot_version=snap.version, val_fraction=0.2, test_fraction=0.2)
    assert stats.rows_clean == len(specs)
    splits = dict(con.execute("SELECT row_id, split FROM clean_texts").fetchall())
    for i, prompt in enumerate(prompts):  # all rows of one brief share the split of the prompt
        assert {splits[f"p{i:03d}/{n}"] for n in (1, 2, 3)} == {_split_of(prompt, 2000, 2000)}
    for i, text in enumerate(texts):  # a row without a prompt: today's rule on the cleaned text
        assert splits[f"t{i:03d}"] == _split_of(text, 2000, 2000)
    assert len({splits[f"p{i:03d}/1"] for i in range(60)}) == 3
    briefs_by_split = {s: distinct_briefs(load_briefs(con, split=s)) for s in ("train", "val", "test")}
    seen = [p for entries in briefs_by_split.values() for _, p in entries if p is not None]
    assert sorted(seen) == sorted(prompts)  # no brief in two splits


def test_duplicates_are_keyed_on_prompt_and_text_together(con, tmp_path):
    line = "One line of copy that fits many products."
    snap = briefs_snapshot(tmp_path, [
        ("r1", "c", "Write a line for the red kettle.", line),
        ("r2", "c", "Write a line for the blue kettle.", line),  # same copy, another brief: kept
        ("r3", "c", "Write a line for the red kettle.", None),  # the brief alone: kept
        ("r4", "c", "Write a line for the red kettle.", "ONE line of copy -- that fits many products!"),
        ("r5", "c", "Write a line for the blue kettle.", None),
        ("r6", "c", "Write a line for the blue kettle.", None),  # the same brief alone twice
        ("r7", "c", "write a line for the BLUE kettle", None),
        ("r8", "c", None, line),  # the copy without a brief: kept
        ("r9", "c", "Write a line for the red kettle.", line),
    ])
    clean_texts(con, snap.path, snapshot_version=snap.version)
    assert [r[0] for r in con.execute("SELECT row_id FROM clean_texts ORDER BY row_id").fetchall()] == [
        "r1", "r2", "r3", "r5", "r8"]
    assert dict(con.execute("SELECT row_id, reason FROM quarantine").fetchall()) == {
        "r4": "near-duplicate of row r1 (same letters and digits)",
        "r6": "duplicate of row r5",
        "r7": "near-duplicate of row r5 (same letters and digits)",
        "r9": "duplicate of row r1",
    }
    assert duplicate_count(con) == 0


def test_checks_see_duplicates_and_missing_text_and_prompt_in_a_broken_table(con):
    con.execute(
        "CREATE TABLE broken AS SELECT * FROM (VALUES "
        "('a', 's', 'x', NULL, NULL, 'Brief one.', 'Same copy.', 'h1', 10, 'train'), "
        "('b', 's', 'x', NULL, NULL, 'Brief two.', 'Same copy.', 'h1', 10, 'train'), "  # another brief: fine
        "('c', 's', 'x', NULL, NULL, 'brief one', 'same copy', 'h1', 9, 'train'), "  # a near copy of a
        "('d', 's', 'x', NULL, NULL, 'Brief three.', NULL, 'h2', 0, 'val'), "  # a brief alone: fine
        "('e', 's', 'x', NULL, NULL, 'brief three', NULL, 'h2', 0, 'val'), "  # a near copy of d
        "('f', 's', 'x', NULL, NULL, NULL, NULL, 'h3', 0, 'val'), "  # neither
        "('g', 's', 'x', NULL, NULL, ' ', '  ', 'h3', 0, 'val')) "  # neither, blank
        "AS t(row_id, source, category, title, section, prompt, text, content_hash, n_chars, split)"
    )
    assert duplicate_count(con, "broken") == 2
    assert null_count(con, "broken") == 2


def test_load_briefs_and_distinct_briefs(con, tmp_path):
    snap = briefs_snapshot(tmp_path, [
        ("b/2", "pets", "Write a line for the dog bed.", "A round bed for anxious dogs to settle in."),
        ("a/1", "kitchen", "Write a line for the kettle.", "A glass kettle that boils in four minutes."),
        ("a/2", "kitchen", "Write a line for the kettle.", "Watch the water roll in clear glass."),
        ("c/1", "pets", "Write a line for the cat fountain.", None),
        ("b/1", "pets", "Write a line for the dog bed.", "Soft fur that goes in the washing machine."),
    ])
    clean_texts(con, snap.path, snapshot_version=snap.version, val_fraction=0.0, test_fraction=0.0)
    briefs = load_briefs(con)
    assert briefs == [
        Brief("kitchen", "Write a line for the kettle.", "A glass kettle that boils in four minutes.", "a/1"),
        Brief("kitchen", "Write a line for the kettle.", "Watch the water roll in clear glass.", "a/2"),
        Brief("pets", "Write a line for the dog bed.", "Soft fur that goes in the washing machine.", "b/1"),
        Brief("pets", "Write a line for the dog bed.", "A round bed for anxious dogs to settle in.", "b/2"),
        Brief("pets", "Write a line for the cat fountain.", None, "c/1"),
    ]
    with pytest.raises(AttributeError):
        briefs[0].text = "changed"  # frozen
    assert distinct_briefs(briefs) == [
        ("kitchen", "Write a line for the kettle."),
        ("pets", "Write a line for the dog bed."),
        ("pets", "Write a line for the cat fountain."),
    ]
    assert load_briefs(con, split="train") == briefs and load_briefs(con, split="test") == []
    assert load_texts(con) == [(b.category, b.text) for b in briefs if b.text is not None]
    with pytest.raises(ValueError, match="split must be one of"):
        load_briefs(con, split="holdout")
    # a corpus without prompts: one entry per category
    plain = snapshot(tmp_path, [("r1", "a", "First document, long enough."), ("r2", "b", "Second one, long enough."),
                                ("r3", "a", "Third document, long enough.")], "plain")
    clean_texts(con, plain.path, snapshot_version=plain.version, table="plain_texts")
    assert distinct_briefs(load_briefs(con, table="plain_texts")) == [("a", None), ("b", None)]


def test_version_follows_the_prompt_and_is_unchanged_without_prompts(con, tmp_path):
    specs = [("r1", "a", "First document, long enough to keep."), ("r2", "b", "Second document, long enough too.")]
    plain = snapshot(tmp_path, specs, "plain")
    version = clean_texts(con, plain.path, snapshot_version=plain.version, val_fraction=0.0, test_fraction=0.0).version
    # the formula before prompts: row_id, category, split, sha256(text), one line per row
    lines = [f"{row_id}\x1f{category}\x1ftrain\x1f{hashlib.sha256(text.encode()).hexdigest()}"
             for row_id, category, text in specs]
    assert version == hashlib.sha256("\x1e".join(lines).encode()).hexdigest()

    def briefed(prompt: str, name: str) -> str:
        snap = briefs_snapshot(tmp_path, [("r1", "a", prompt, specs[0][2]), ("r2", "a", prompt, None)], name)
        return clean_texts(con, snap.path, snapshot_version=snap.version).version

    assert briefed("Write for the red kettle.", "red") == briefed("Write for the red kettle.", "red2")
    assert briefed("Write for the red kettle.", "red") != briefed("Write for the blue kettle.", "blue")


def test_a_snapshot_from_before_prompts_is_cleaned_as_prompt_less(con, tmp_path):
    specs = [("r1", "a", "First document, long enough to keep."), ("r2", "b", "Second document, long enough too.")]
    new = snapshot(tmp_path, specs, "new")
    old_table = pq.read_table(new.path).drop_columns(["prompt"])
    old = write_snapshot(old_table, tmp_path / "old", hash_columns=["source", "row_id", "category", "content_hash"],
                         source="test")
    assert "prompt" not in pq.read_schema(old.path).names
    v_old = clean_texts(con, old.path, snapshot_version=old.version).version
    rows_old = load_briefs(con)
    assert clean_texts(con, new.path, snapshot_version=new.version).version == v_old
    assert load_briefs(con) == rows_old == [Brief("a", None, specs[0][2], "r1"), Brief("b", None, specs[1][2], "r2")]
