"""collect_texts: the builtin plays, a folder, CSV / JSONL / Parquet files, a URL, and bad input of each kind."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import threading
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gen_assets.sources.common import SourceError
from gen_assets.sources.texts import TEXT_SCHEMA, TEXT_SNAPSHOT_HASH_COLUMNS, _pack, collect_texts, iter_texts
from gen_assets.store.snapshots import write_snapshot


def rows_by_id(table: pa.Table) -> dict[str, dict]:
    return {r["row_id"]: r for r in table.to_pylist()}


# ---- builtin ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plays() -> pa.Table:
    return collect_texts("builtin:shakespeare")  # ~1 s: read once for the module


def test_builtin_shakespeare_documents_categories_titles_sections(plays):
    assert plays.schema == TEXT_SCHEMA
    rows = plays.to_pylist()
    assert len(rows) > 800
    assert {r["category"] for r in rows} == {"comedy", "history", "problem", "roman", "romance", "tragedy"}
    assert len({r["row_id"] for r in rows}) == len(rows)
    assert {r["source"] for r in rows} == {"builtin:shakespeare"}
    assert all(r["title"] and r["section"] and r["text"] and r["decode_error"] is None for r in rows)
    assert len({r["title"] for r in rows}) == 38
    for r in rows:
        raw = r["text"].encode("utf-8")
        assert r["raw_bytes"] == len(raw) and r["content_hash"] == hashlib.sha256(raw).hexdigest()

    by_id = rows_by_id(plays)
    first = by_id["twelfth-night/001"]
    assert (first["title"], first["section"]) == ("Twelfth Night", "Act 1, Scene 1")
    assert first["text"].startswith("### SCENE I. DUKE ORSINO's palace.\n\n_Enter DUKE ORSINO")
    assert first["category"] == "comedy" and by_id["hamlet/001"]["category"] == "tragedy"
    sections = {(r["title"], r["section"]) for r in rows}
    # heading levels vary between plays: "## SCENE" in Macbeth, "#### ACT" in Love's Labours Lost
    assert ("Macbeth", "Act 1, Scene 1") in sections
    assert any(t == "Love's Labours Lost" and s.startswith("Act 5, Scene 2") for t, s in sections)
    assert ("Henry V", "Act 2, Prologue") in sections  # a chorus inside an act
    assert ("The Taming of the Shrew", "Prologue, Scene 1") in sections  # the induction holds scenes
    assert ("Pericles", "Epilogue") in sections
    assert ("Measure for Measure", "Act 1, Scene 1") in sections  # its file has no title line


def test_builtin_long_scenes_are_cut_into_parts_at_speeches(plays):
    wanted = ("Love's Labours Lost", "Act 5, Scene 2")
    rows = [r for r in plays.to_pylist() if (r["title"], r["section"][:14]) == wanted]
    assert len(rows) == 6  # 47k characters in the source
    assert [r["section"] for r in rows] == [f"Act 5, Scene 2 (part {i} of 6)" for i in range(1, 7)]
    assert rows[0]["text"].startswith("### SCENE II.")
    for r in rows[1:]:
        assert r["text"].startswith(("**", "_"))  # a part starts at a speech or a stage direction
    lengths = [len(r["text"]) for r in plays.to_pylist()]
    assert max(lengths) < 10000 and sorted(lengths)[len(lengths) // 2] > 2000


def test_unknown_builtin_is_an_error():
    with pytest.raises(SourceError, match=r"builtin:sonnets: unknown builtin source; available: builtin:shakespeare"):
        collect_texts("builtin:sonnets")


def test_pack_cuts_at_blank_lines_into_near_equal_exact_slices():
    paragraphs = [f"paragraph {i} " + "word " * (30 + 7 * (i % 5)) for i in range(40)]
    text = "\n\n".join(paragraphs)
    parts = _pack(text, 1000)
    assert "".join(parts) == text
    assert len(parts) == -(-len(text) // 1000)
    assert all(p.startswith("paragraph ") for p in parts)
    assert max(map(len, parts)) - min(map(len, parts)) < 400  # no runt last part
    assert _pack("one block " * 500, 1000) == ["one block " * 500]  # nowhere to cut: kept whole
    assert _pack("short", 1000) == ["short"]


# ---- folder -------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "corpus"
    (root / "comedy").mkdir(parents=True)
    (root / "tragedy" / "greek").mkdir(parents=True)
    (root / ".cache").mkdir()
    (root / "comedy" / "a.txt").write_text("A merry tale of two lovers.\n", encoding="utf-8")
    (root / "comedy" / "empty.txt").write_bytes(b"")
    (root / "comedy" / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me".encode("latin-1"))
    (root / "tragedy" / "greek" / "b.md").write_text("# Oedipus\n\nA sad *tale*.\n", encoding="utf-8")
    (root / "top.txt").write_text("A file with no category folder.", encoding="utf-8")
    (root / ".cache" / "junk.txt").write_text("hidden", encoding="utf-8")
    (root / "comedy" / "notes.csv").write_text("not,a,text,file\n", encoding="utf-8")
    return root


def test_folder_rows_categories_and_bad_files(folder):
    table = collect_texts(str(folder))
    rows = rows_by_id(table)
    assert sorted(rows) == ["comedy/a.txt", "comedy/empty.txt", "comedy/latin1.txt", "top.txt", "tragedy/greek/b.md"]
    assert {r["source"] for r in rows.values()} == {str(folder)}
    assert rows["comedy/a.txt"]["category"] == "comedy" and rows["comedy/a.txt"]["title"] == "a"
    assert rows["tragedy/greek/b.md"]["category"] == "tragedy"  # the first-level sub-folder
    assert rows["tragedy/greek/b.md"]["text"] == "# Oedipus\n\nA sad *tale*.\n"  # raw: cleaning strips markup
    assert rows["top.txt"]["category"] is None  # quarantined by cleaning
    empty = rows["comedy/empty.txt"]
    assert (empty["text"], empty["raw_bytes"], empty["decode_error"]) == ("", 0, None)
    bad = rows["comedy/latin1.txt"]
    assert bad["text"] is None and bad["decode_error"] == "not UTF-8: byte 0xe9 at offset 3"
    assert bad["content_hash"] == hashlib.sha256("Caf\xe9 cr\xe8me".encode("latin-1")).hexdigest()
    assert bad["raw_bytes"] == 10
    assert collect_texts(f"file://{folder}").column("row_id").to_pylist() == table.column("row_id").to_pylist()


def test_folder_long_file_is_cut_into_parts(tmp_path):
    (tmp_path / "essays").mkdir()
    text = "\n\n".join(f"Paragraph {i}. " + "Lorem ipsum dolor sit amet. " * 20 for i in range(30))
    (tmp_path / "essays" / "long.txt").write_text(text, encoding="utf-8")
    # larger than max_bytes as a whole, but cut at paragraphs into parts that are not
    rows = collect_texts(str(tmp_path), doc_chars=2000, max_bytes=4000).to_pylist()
    assert len(text) > 4000 and all(r["decode_error"] is None for r in rows)
    assert [r["row_id"] for r in rows] == [f"essays/long.txt#{i:03d}" for i in range(1, len(rows) + 1)]
    assert len(rows) == -(-len(text) // 2000)
    assert "".join(r["text"] for r in rows) == text
    assert rows[1]["section"] == f"part 2 of {len(rows)}"


def test_fifty_megabyte_single_line_is_one_row_without_its_text(tmp_path):
    (tmp_path / "logs").mkdir()
    size = 50 * 1024 * 1024
    (tmp_path / "logs" / "huge.txt").write_bytes(b"x" * size)
    (tmp_path / "logs" / "small.txt").write_text("a normal document of some length", encoding="utf-8")
    tracemalloc.start()
    try:
        table = collect_texts(str(tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rows = rows_by_id(table)
    huge = rows["logs/huge.txt"]
    assert huge["text"] is None and huge["raw_bytes"] == size
    assert huge["decode_error"] == f"too long: {size} bytes > limit {1 << 20} bytes (text not kept)"
    assert huge["content_hash"] == hashlib.sha256(b"x" * size).hexdigest()
    assert rows["logs/small.txt"]["text"] == "a normal document of some length"
    assert peak < 2 * size  # the file's bytes once; no decoded copy of a text that is refused anyway
    assert table.nbytes < 1 << 20  # the snapshot does not carry the 50 MB


def test_folder_errors(tmp_path, monkeypatch):
    with pytest.raises(SourceError, match=r"nowhere: does not exist"):
        collect_texts(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(SourceError, match=r"empty: no \.txt / \.md files in the folder"):
        collect_texts(str(tmp_path / "empty"))
    (tmp_path / "locked" / "poems").mkdir(parents=True)
    (tmp_path / "locked" / "poems" / "secret.txt").write_text("text", encoding="utf-8")
    real_read_bytes = Path.read_bytes

    def deny(self):
        if self.name == "secret.txt":
            raise PermissionError(13, "Permission denied")
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(SourceError, match=r"cannot read .*secret\.txt: Permission denied"):
        collect_texts(str(tmp_path / "locked"))


def test_a_sub_folder_that_cannot_be_listed_is_an_error_naming_it(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    for relative in ("poems/a.txt", "prose/b.txt", "prose/old/c.txt"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("Some words.", encoding="utf-8")
    real_scandir = os.scandir

    def scandir(path="."):  # a folder without read permission (chmod 000 changes nothing for root)
        if Path(path) == root / "prose" / "old":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SourceError, match=r"corpus: cannot list folder prose/old: Permission denied"):
        collect_texts(str(root))
    monkeypatch.undo()
    (root / "drama").symlink_to(tmp_path / "unmounted")
    with pytest.raises(SourceError, match=r"corpus: drama is a broken symbolic link"):
        collect_texts(str(root))
    (root / "drama").unlink()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "d.md").write_text("Linked words.", encoding="utf-8")
    (root / "drama").symlink_to(tmp_path / "shared")
    rows = rows_by_id(collect_texts(str(root)))
    assert sorted(rows) == ["drama/d.md", "poems/a.txt", "prose/b.txt", "prose/old/c.txt"]
    assert rows["drama/d.md"]["category"] == "drama"


# ---- CSV / JSONL / Parquet ----------------------------------------------------------------------------


def test_csv_rows_bad_cells_and_short_rows(tmp_path):
    f = tmp_path / "poems.csv"
    f.write_bytes(
        b"title,text,category\n"
        b'Ode,"Thou still unravish\'d bride,\nof quietness",ode\n'
        b"Bad,caf\xe9,ode\n"
        b"Short,only two\n"
        b"\n"
        b"Untitled,No category here,\n"
    )
    rows = collect_texts(str(f)).to_pylist()
    assert [r["row_id"] for r in rows] == ["00000001", "00000002", "00000003", "00000004"]
    assert (rows[0]["title"], rows[0]["category"]) == ("Ode", "ode")
    assert rows[0]["text"] == "Thou still unravish'd bride,\nof quietness"  # a quoted field spanning two lines
    assert rows[1]["text"] is None
    assert rows[1]["decode_error"] == "record 2: column 'text' not UTF-8: byte 0xe9 at offset 3"
    assert rows[2]["text"] is None and rows[2]["decode_error"] == "record 3: has 2 fields, the header has 3"
    assert rows[3]["category"] is None and rows[3]["text"] == "No category here"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        # a stray quote opens a field that a later quote closes: the lenient reader glued lines 3-5 into one
        # two-field document ('Oops,x\nthird,y\nfourth q"', 'z') without a word
        (b'text,category\nfirst,a\n"Oops,x\nthird,y\nfourth "q",z\nfifth,w\n',
         r"the record starting at line 3 \(read up to line 5\): ',' expected after '\"'"),
        # a quote that is never closed swallows the rest of the file
        (b'text,category\nfirst,a\n"never closed,x\nthird,y\n', r"the record starting at line 3 .*unexpected end"),
        # text after a closing quote on one line
        (b'text,category\nfirst,a\n"quoted" then more,x\nthird,y\n', r"line 3: ',' expected after '\"'"),
    ],
)
def test_csv_with_a_stray_quote_is_an_error_naming_the_file_and_line_never_a_merged_record(tmp_path, body, where):
    f = tmp_path / "stray.csv"
    f.write_bytes(body)
    with pytest.raises(SourceError, match=rf"stray\.csv: malformed CSV at {where}"):
        collect_texts(str(f))
    stream = iter_texts(str(f), batch_rows=1)
    assert next(stream).column("text").to_pylist() == ["first"]  # the good record before it is read
    with pytest.raises(SourceError, match="malformed CSV"):
        next(stream)  # and the stream fails there, so write_snapshot lands nothing


def test_csv_quote_inside_an_unquoted_field_is_text(tmp_path):
    f = tmp_path / "quotes.csv"
    f.write_bytes(b'text,category\nHe said "hi,a\n"a ""quoted"" word",b\n')
    assert collect_texts(str(f)).column("text").to_pylist() == ['He said "hi', 'a "quoted" word']


def test_csv_without_the_configured_column_is_a_clear_error(tmp_path):
    f = tmp_path / "data.csv"
    f.write_text("body,genre\nhello,x\n", encoding="utf-8")
    with pytest.raises(SourceError) as err:
        collect_texts(str(f))
    message = str(err.value)
    assert str(f) in message and "no column 'text'" in message and "'body', 'genre'" in message
    assert collect_texts(str(f), text_column="body", category_column="genre").column("category").to_pylist() == ["x"]
    with pytest.raises(SourceError, match=r"no column 'category' \(columns present: 'body', 'genre'\)"):
        collect_texts(str(f), text_column="body")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.csv: empty CSV file"):
        collect_texts(str(tmp_path / "empty.csv"))


def test_jsonl_malformed_lines_become_rows_with_the_line_number(tmp_path):
    f = tmp_path / "lines.jsonl"
    lines = [
        json.dumps({"text": "First good line of text.", "category": "prose", "title": "One"}),
        '{"text": "unterminated',
        "",
        "[1, 2, 3]",
        json.dumps({"category": "prose"}),
        json.dumps({"text": 42, "category": "prose"}),
        json.dumps({"text": "Second good line.", "category": 7}),
    ]
    f.write_bytes("\n".join(lines).encode() + b"\n" + b'{"text": "caf\xe9", "category": "prose"}\n')
    rows = rows_by_id(collect_texts(str(f)))
    assert sorted(rows) == ["00000001", "00000002", "00000004", "00000005", "00000006", "00000007", "00000008"]
    assert rows["00000001"]["text"] == "First good line of text." and rows["00000001"]["title"] == "One"
    assert rows["00000002"]["decode_error"].startswith("line 2: invalid JSON: Unterminated string")
    assert rows["00000004"]["decode_error"] == "line 4: expected a JSON object, got list"
    assert rows["00000005"]["decode_error"] == "line 5: no field 'text'"
    assert rows["00000006"]["decode_error"] == "line 6: field 'text' is int, not a string"
    assert rows["00000007"]["category"] == "7" and rows["00000007"]["decode_error"] is None
    assert rows["00000008"]["decode_error"] == "line 8: not UTF-8: byte 0xe9 at offset 13"
    assert all(r["text"] is None for k, r in rows.items() if k not in ("00000001", "00000007"))
    assert rows["00000002"]["content_hash"] == hashlib.sha256(b'{"text": "unterminated').hexdigest()


def test_jsonl_without_the_text_field_anywhere_is_an_error(tmp_path):
    f = tmp_path / "wrong.jsonl"
    f.write_text(json.dumps({"body": "x", "category": "a"}) + "\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"wrong\.jsonl: no column 'text' \(columns present: 'body', 'category'\)"):
        collect_texts(str(f))
    f.write_text("not json\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"no line is a JSON object; first problem: line 1: invalid JSON"):
        collect_texts(str(f))


def test_parquet_with_custom_columns(tmp_path):
    f = tmp_path / "docs.parquet"
    pq.write_table(
        pa.table(
            {
                "body": pa.array([b"Plain words here.", b"bad \xff byte", None], pa.binary()),
                "genre": ["essay", "essay", None],
                "id": [1, 2, 3],
            }
        ),
        f,
    )
    rows = collect_texts(str(f), text_column="body", category_column="genre").to_pylist()
    assert [r["row_id"] for r in rows] == ["00000001", "00000002", "00000003"]
    assert rows[0]["text"] == "Plain words here." and rows[0]["category"] == "essay"
    assert rows[1]["text"] is None and rows[1]["decode_error"] == "not UTF-8: byte 0xff at offset 4"
    assert rows[2]["decode_error"] == "'body' is null"
    with pytest.raises(SourceError, match=r"no column 'text' \(columns present: 'body', 'genre', 'id'\)"):
        collect_texts(str(f))
    with pytest.raises(SourceError, match=r"column 'id' has type int64, expected a string column"):
        collect_texts(str(f), text_column="id", category_column="genre")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match=r"broken\.parquet: not a readable Parquet file"):
        collect_texts(str(tmp_path / "broken.parquet"))


def test_tables_keep_long_records_out_of_the_snapshot(tmp_path):
    f = tmp_path / "big.jsonl"
    f.write_text(json.dumps({"text": "y" * 5000, "category": "c"}) + "\n", encoding="utf-8")
    (row,) = collect_texts(str(f), max_bytes=4096).to_pylist()
    assert row["text"] is None and row["raw_bytes"] == 5000
    assert row["decode_error"] == "too long: 5000 bytes > limit 4096 bytes (text not kept)"


# ---- URL ----------------------------------------------------------------------------------------------


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


def test_url_text_file_and_table_and_404(http_root):
    folder, base = http_root
    text = "\n\n".join(f"Sonnet {i}. " + "Shall I compare thee to a summer's day? " * 10 for i in range(12))
    (folder / "sonnets.txt").write_text(text, encoding="utf-8")
    (folder / "rows.jsonl").write_text(json.dumps({"text": "From the web.", "category": "web"}) + "\n", "utf-8")

    rows = collect_texts(f"{base}/sonnets.txt", doc_chars=1500).to_pylist()
    assert {r["category"] for r in rows} == {"sonnets"} and {r["source"] for r in rows} == {f"{base}/sonnets.txt"}
    assert [r["row_id"] for r in rows] == [f"sonnets.txt#{i:03d}" for i in range(1, len(rows) + 1)]
    assert "".join(r["text"] for r in rows) == text
    assert collect_texts(f"{base}/rows.jsonl").column("text").to_pylist() == ["From the web."]
    with pytest.raises(SourceError, match=r"missing\.txt: HTTP 404"):
        collect_texts(f"{base}/missing.txt")


def test_snapshot_hash_columns_exist():
    assert set(TEXT_SNAPSHOT_HASH_COLUMNS) <= set(TEXT_SCHEMA.names)


# ---- streaming: iter_texts yields record batches -------------------------------------------------------


def _write_stream_sources(root: Path) -> dict[str, Path]:
    """The same eight documents as a folder, a CSV, a JSONL and a Parquet file."""
    docs = [(f"Document number {i}, with a comma and a “quote”.", ["comedy", "tragedy"][i % 2]) for i in range(8)]
    folder = root / "folder"
    for i, (text, category) in enumerate(docs):
        (folder / category).mkdir(parents=True, exist_ok=True)
        (folder / category / f"doc{i}.txt").write_text(text, encoding="utf-8")
    csv_file = root / "docs.csv"
    csv_file.write_text("text,category\n" + "".join(f'"{t}",{c}\n' for t, c in docs), encoding="utf-8")
    jsonl = root / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "category": c}) + "\n" for t, c in docs), encoding="utf-8")
    parquet = root / "docs.parquet"
    pq.write_table(pa.table({"text": [t for t, _ in docs], "category": [c for _, c in docs]}), parquet)
    return {"folder": folder, "csv": csv_file, "jsonl": jsonl, "parquet": parquet}


@pytest.mark.parametrize("kind", ["folder", "csv", "jsonl", "parquet"])
def test_iter_texts_yields_small_batches_that_add_up_to_collect_texts(tmp_path, kind):
    source = str(_write_stream_sources(tmp_path)[kind])
    batches = list(iter_texts(source, batch_rows=3))
    assert [b.num_rows for b in batches] == [3, 3, 2]
    assert all(isinstance(b, pa.RecordBatch) and b.schema.equals(TEXT_SCHEMA) for b in batches)
    streamed = pa.Table.from_batches(batches, schema=TEXT_SCHEMA)
    whole = collect_texts(source)
    assert streamed.equals(whole)
    assert whole.num_rows == 8 and whole.column("decode_error").null_count == 8
    assert sorted(whole.column("category").to_pylist()) == ["comedy"] * 4 + ["tragedy"] * 4


def test_iter_texts_reads_a_folder_file_by_file(tmp_path, monkeypatch):
    folder = _write_stream_sources(tmp_path)["folder"]
    reads: list[str] = []
    real_read_bytes = Path.read_bytes

    def counting(self):
        reads.append(self.name)
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    stream = iter_texts(str(folder), batch_rows=1)
    first = next(stream)
    assert first.num_rows == 1 and len(reads) == 1  # one file read for the first batch, not all eight
    assert sum(b.num_rows for b in stream) == 7 and len(reads) == 8


def test_iter_texts_rejects_a_bad_batch_size(tmp_path):
    with pytest.raises(ValueError, match="batch_rows must be >= 1"):
        iter_texts(str(_write_stream_sources(tmp_path)["csv"]), batch_rows=0)


@pytest.mark.parametrize(
    "name, lines, message",
    [
        # records exported with another field name than the configured text column
        ("wrong-field.jsonl", [json.dumps({"body": f"text {i}", "category": "c"}) for i in range(10)],
         r"no column 'text' \(columns present: 'body', 'category'\)"),
        # a pretty-printed JSON array saved as .jsonl: no line is a JSON object on its own
        ("array.jsonl", ["["] + [f'  {{"text": "text {i}", "category": "c"}},' for i in range(10)] + ["]"],
         r"no line is a JSON object; first problem: line 1: invalid JSON"),
    ],
)
def test_jsonl_that_fails_at_its_end_raises_only_when_fully_read_and_lands_nothing(tmp_path, name, lines, message):
    f = tmp_path / name
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stream = iter_texts(str(f), batch_rows=3)
    first = next(stream)  # the records before the end come out as rows (each with its problem)
    assert first.num_rows == 3 and first.column("decode_error").null_count == 0
    with pytest.raises(SourceError, match=message):
        list(stream)
    snapshots = tmp_path / "snapshots"
    with pytest.raises(SourceError, match=message):
        write_snapshot(iter_texts(str(f), batch_rows=3), snapshots, hash_columns=TEXT_SNAPSHOT_HASH_COLUMNS,
                       source=str(f), schema=TEXT_SCHEMA)
    assert not snapshots.exists() or list(snapshots.iterdir()) == []  # no snapshot, no temporary file


def test_iter_texts_into_write_snapshot_gives_the_version_of_the_whole_table(tmp_path):
    source = str(_write_stream_sources(tmp_path)["jsonl"])
    streamed = write_snapshot(iter_texts(source, batch_rows=3), tmp_path / "a",
                              hash_columns=TEXT_SNAPSHOT_HASH_COLUMNS, source=source, schema=TEXT_SCHEMA)
    whole = write_snapshot(collect_texts(source), tmp_path / "b", hash_columns=TEXT_SNAPSHOT_HASH_COLUMNS,
                           source=source)
    assert (streamed.version, streamed.rows) == (whole.version, whole.rows) == (whole.version, 8)
    assert pq.read_table(streamed.path).equals(pq.read_table(whole.path))


def test_folder_with_an_unreadable_file_after_ten_good_ones_lands_nothing(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    (root / "prose").mkdir(parents=True)
    for i in range(10):
        (root / "prose" / f"a{i:02d}.txt").write_text(f"Readable document {i}.", encoding="utf-8")
    (root / "prose" / "z-locked.txt").write_text("never read", encoding="utf-8")
    real_read_bytes = Path.read_bytes

    def deny(self):
        if self.name == "z-locked.txt":
            raise PermissionError(13, "Permission denied")
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    stream = iter_texts(str(root), batch_rows=3)
    assert [next(stream).num_rows for _ in range(3)] == [3, 3, 3]  # nine good documents out before the failure
    with pytest.raises(SourceError, match=r"cannot read .*z-locked\.txt: Permission denied"):
        next(stream)
    snapshots = tmp_path / "snapshots"
    with pytest.raises(SourceError, match=r"z-locked\.txt: Permission denied"):
        write_snapshot(iter_texts(str(root), batch_rows=3), snapshots, hash_columns=TEXT_SNAPSHOT_HASH_COLUMNS,
                       source=str(root), schema=TEXT_SCHEMA)
    assert not snapshots.exists() or list(snapshots.iterdir()) == []


# ---- prompts: the bundled product briefs and a prompt column in table files -------------------------------


@pytest.fixture(scope="module")
def briefs() -> pa.Table:
    return collect_texts("builtin:product_briefs")


def _letters(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def test_builtin_product_briefs_is_the_default_catalog(briefs):
    assert briefs.schema == TEXT_SCHEMA
    assert collect_texts().equals(briefs)  # the default source
    rows = briefs.to_pylist()
    assert len(rows) == 96 and {r["source"] for r in rows} == {"builtin:product_briefs"}
    assert {r["category"] for r in rows} == {"kitchen", "outdoor", "skincare", "audio", "home_office", "pets"}
    assert len({r["row_id"] for r in rows}) == 96
    assert all(r["row_id"].startswith(f"{r['category']}/") and r["row_id"].count("/") == 2 for r in rows)
    assert all(r["decode_error"] is None and r["section"] is None and r["title"] for r in rows)
    prompts = {r["prompt"] for r in rows}
    assert len(prompts) == 36 and all(p and len(p) >= 20 for p in prompts)
    # one instruction framing for every brief, the product's name in it
    assert all(r["prompt"].startswith("Write one short line of ad copy (under 20 words) for the ") for r in rows)
    assert all(f" the {r['title']}: " in r["prompt"] for r in rows)
    for category in {r["category"] for r in rows}:
        of_category = [r for r in rows if r["category"] == category]
        assert len({r["prompt"] for r in of_category}) == 6 and len({r["title"] for r in of_category}) == 6
        assert sum(r["text"] is not None for r in of_category) == 15
    only_briefs = [r for r in rows if r["text"] is None]
    assert len(only_briefs) == 6 and len({r["category"] for r in only_briefs}) == 6
    assert all(r["raw_bytes"] == 0 for r in only_briefs)
    texts = [r["text"] for r in rows if r["text"] is not None]
    assert len(texts) == 90 and len({_letters(t) for t in texts}) == 90  # no two equal or near-equal
    for text in texts:
        assert len(text) >= 20 and 6 <= len(text.split()) <= 20, text
        assert not text.startswith(('"', "“")) and "#" not in text and text.isascii(), text
    # three reference lines for each product that has any, one row for each that has none
    per_brief = {p: sum(r["prompt"] == p for r in rows) for p in prompts}
    assert sorted(per_brief.values()) == [1] * 6 + [3] * 30
    for r in rows:
        raw = (r["text"] or "").encode("utf-8")
        assert r["raw_bytes"] == len(raw) and r["content_hash"] == hashlib.sha256(raw).hexdigest()


def test_sources_without_prompts_have_null_prompts(plays, folder):
    assert plays.column("prompt").null_count == plays.num_rows
    table = collect_texts(str(folder))
    assert table.column("prompt").null_count == table.num_rows


def test_jsonl_with_a_prompt_field(tmp_path):
    f = tmp_path / "briefs.jsonl"
    lines = [
        {"prompt": "Write a line for the red kettle.", "text": "A red kettle that sings.", "category": "k"},
        {"prompt": "Write a line for the blue kettle.", "category": "k"},  # no text key: a brief alone
        {"prompt": "Write a line for the green kettle.", "text": None, "category": "k"},
        {"prompt": "Write a line for the white kettle.", "text": "", "category": "k"},
        {"prompt": None, "text": "Copy without a brief, on its own.", "category": "k"},
        {"prompt": "", "text": "Copy with an empty brief, on its own.", "category": "k"},
        {"category": "k"},  # neither
        {"prompt": None, "text": None, "category": "k"},  # neither
        {"prompt": 3, "text": "A brief that is not a string.", "category": "k"},
        {"prompt": "Write a line for the black kettle.", "text": 7, "category": "k"},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    rows = collect_texts(str(f)).to_pylist()
    got = [(r["prompt"], r["text"], r["decode_error"]) for r in rows]
    assert got == [
        ("Write a line for the red kettle.", "A red kettle that sings.", None),
        ("Write a line for the blue kettle.", None, None),
        ("Write a line for the green kettle.", None, None),
        ("Write a line for the white kettle.", None, None),
        (None, "Copy without a brief, on its own.", None),
        (None, "Copy with an empty brief, on its own.", None),
        (None, None, "line 7: no field 'text'"),
        (None, None, "line 8: field 'text' is null, not a string"),
        (None, None, "line 9: field 'prompt' is int, not a string"),
        (None, None, "line 10: field 'text' is int, not a string"),
    ]
    assert rows[1]["category"] == "k" and rows[1]["raw_bytes"] == 0
    # the same file read with another prompt field: every prompt null, the brief-only records back to "no text"
    other = collect_texts(str(f), prompt_column="brief").to_pylist()
    assert all(r["prompt"] is None for r in other)
    assert other[1]["decode_error"] == "line 2: no field 'text'"
    assert other[3]["text"] == "" and other[8]["text"] == "A brief that is not a string."


def test_jsonl_of_briefs_alone_needs_no_text_field(tmp_path):
    f = tmp_path / "todo.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"Write a line for product {i}.", "category": "c"}) + "\n"
                         for i in range(3)), encoding="utf-8")
    rows = collect_texts(str(f)).to_pylist()
    assert [(r["text"], r["decode_error"]) for r in rows] == [(None, None)] * 3
    assert [r["prompt"] for r in rows] == [f"Write a line for product {i}." for i in range(3)]
    with pytest.raises(SourceError, match=r"no column 'text' \(columns present: 'prompt', 'category'\)"):
        collect_texts(str(f), prompt_column="brief")


def test_csv_with_a_prompt_column(tmp_path):
    f = tmp_path / "briefs.csv"
    f.write_bytes(
        b"category,prompt,text\n"
        b"k,Write a line for the red kettle.,A red kettle that sings.\n"
        b"k,Write a line for the blue kettle.,\n"
        b"k,,Copy without a brief.\n"
        b"k,,\n"
        b"k,Caf\xe9 brief,Some text.\n"
    )
    rows = collect_texts(str(f)).to_pylist()
    got = [(r["prompt"], r["text"], r["decode_error"]) for r in rows]
    assert got == [
        ("Write a line for the red kettle.", "A red kettle that sings.", None),
        ("Write a line for the blue kettle.", None, None),  # a brief without reference copy
        (None, "Copy without a brief.", None),
        (None, "", None),  # neither: an empty text, as without prompts (cleaning: too short)
        (None, None, "record 5: column 'prompt' not UTF-8: byte 0xe9 at offset 3"),
    ]
    assert rows[1]["raw_bytes"] == 0 and rows[1]["category"] == "k"
    without = tmp_path / "plain.csv"
    without.write_text("category,text\nk,Copy without a brief.\nk,\n", encoding="utf-8")
    assert [(r["prompt"], r["text"]) for r in collect_texts(str(without)).to_pylist()] == [
        (None, "Copy without a brief."), (None, "")]
    only = tmp_path / "only.csv"  # briefs alone: no text column
    only.write_text("category,brief\nk,Write a line for the kettle.\nk,\n", encoding="utf-8")
    rows = collect_texts(str(only), prompt_column="brief").to_pylist()
    assert [(r["prompt"], r["text"], r["decode_error"]) for r in rows] == [
        ("Write a line for the kettle.", None, None),
        (None, None, "record 2: no text (no column 'text') and an empty 'brief'"),
    ]
    with pytest.raises(SourceError, match=r"no column 'text' \(columns present: 'category', 'brief'\)"):
        collect_texts(str(only))


def test_parquet_with_a_prompt_column(tmp_path):
    f = tmp_path / "briefs.parquet"
    pq.write_table(
        pa.table(
            {
                "text": ["A red kettle that sings.", None, "", None, "Copy.", "Fine text here."],
                "brief": pa.array([b"Red kettle brief.", b"Blue kettle brief.", b"White kettle brief.", None,
                                   None, b"bad \xff brief"], pa.binary()),
                "category": ["k"] * 6,
            }
        ),
        f,
    )
    rows = collect_texts(str(f), prompt_column="brief").to_pylist()
    assert [(r["prompt"], r["text"], r["decode_error"]) for r in rows] == [
        ("Red kettle brief.", "A red kettle that sings.", None),
        ("Blue kettle brief.", None, None),
        ("White kettle brief.", None, None),
        (None, None, "'text' is null"),
        (None, "Copy.", None),
        (None, None, "column 'brief' not UTF-8: byte 0xff at offset 4"),
    ]
    assert all(r["prompt"] is None for r in collect_texts(str(f)).to_pylist())  # no "prompt" column: all null
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": ["x"], "prompt": [1], "category": ["k"]}), numbers)
    with pytest.raises(SourceError, match=r"column 'prompt' has type int64, expected a string column"):
        collect_texts(str(numbers))


def test_prompt_and_text_columns_must_differ(tmp_path):
    with pytest.raises(ValueError, match="prompt_column and text_column must differ"):
        collect_texts(str(_write_stream_sources(tmp_path)["csv"]), prompt_column="text")


def test_a_changed_brief_is_a_new_snapshot_version(tmp_path):
    def version(prompt: str, name: str) -> str:
        f = tmp_path / f"{name}.jsonl"
        f.write_text(json.dumps({"prompt": prompt, "text": "The same copy.", "category": "k"}) + "\n", "utf-8")
        table = collect_texts(str(f)).set_column(0, "source", pa.array(["same"], pa.string()))
        return write_snapshot(table, tmp_path / name, hash_columns=TEXT_SNAPSHOT_HASH_COLUMNS, source="same").version

    assert "prompt" in TEXT_SNAPSHOT_HASH_COLUMNS
    assert version("Write for the red kettle.", "a") != version("Write for the blue kettle.", "b")
    assert version("Write for the red kettle.", "c") == version("Write for the red kettle.", "a")
