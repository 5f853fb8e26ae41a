"""How the cost of raw collection and DuckDB cleaning grows with the size of a corpus (images and texts).

    python benchmarks/scale.py [--image-rows 250000,500000,1000000] [--text-rows 1000000,2500000,5000000,10000000]
                               [--only image|text] [--threads N] [--memory-limit 1GB] [--json]

For each size it writes a corpus in a format users bring, collects it with the pipeline's streaming
collection (`iter_texts` / `iter_images` into `write_snapshot`, as the raw_* assets do), and cleans the
collected snapshot with the pipeline's cleaning into a DuckDB warehouse FILE. `--memory-limit` sets
DuckDB's memory_limit for the cleaning (GEN_ASSETS_DUCKDB_MEMORY_LIMIT in the pipeline): beyond it the
cleaning spills to disk, so a corpus larger than memory is cleaned.

The corpora:
- texts: a JSONL file (`{"category", "title", "section", "text"}` per line) written from the synthetic
  rows below; undecodable rows become `"text": null` lines.
- images: a folder `<label>/<row>.png` of real 8x8 grayscale PNGs (random pixels), ~5% exact duplicates,
  ~1% truncated files that do not decode, labels from ten names.

The synthetic text rows:

- short documents (20-80 words from a Zipf-distributed
  vocabulary, some punctuation and line breaks, ~5% **bold** / _emphasis_ markup, ~4% with an e-mail
  address, ~4% with a URL, ~2% with a phone number, ~3% exact duplicates, ~0.5% near-duplicates (upper-cased
  copies), ~1% too short, ~0.5% missing categories, ~0.2% undecodable). Built with numpy and pyarrow in
  chunks, so generating 10M rows takes seconds and little memory.

Generation, collection and cleaning each run in a fresh process (multiprocessing, spawn), one size at a
time, so each peak resident memory reported (getrusage ru_maxrss) belongs to that one step alone.
Reported per size: seconds and rows/s of collection and of cleaning, their peak RSS, and the cleaning's
cost per row relative to the smallest size: a cost linear in the rows keeps it near 1.00x. Streaming
shows as a collection peak that stays flat as the corpus grows, and, with --memory-limit, a cleaning
peak that stays near the limit.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Only light modules at the top: the parent process stays small, and every heavy import (numpy, pyarrow,
# DuckDB, gen_assets) happens in the worker processes, whose memory is what is measured.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # cleaning_duckdb_vs_pandas.make_snapshot

DEFAULT_IMAGE_ROWS = "250000,500000,1000000"
DEFAULT_TEXT_ROWS = "1000000,2500000,5000000,10000000"
TEXT_CHUNK_ROWS = 262_144  # two snapshot row groups (131,072 rows) per chunk written
TEXT_CATEGORIES = ["comedy", "history", "tragedy", "romance", "poems", "letters"]


# ---- synthetic text snapshot ------------------------------------------------------------------------------


def _vocabulary(rng) -> list[str]:
    """Plain words (some with trailing punctuation or a line break) and the tokens cleaning rewrites."""
    letters = list("abcdefghijklmnopqrstuvwxyz")
    words = {"".join(rng.choice(letters, size=int(n))) for n in rng.integers(2, 10, size=6000)}
    words = sorted(words)[:5000]
    plain = words + [w + "," for w in words[:400]] + [w + "." for w in words[:400]] + [w + ".\n" for w in words[:100]]
    return plain


def _special_tokens(rng, words: list[str]) -> dict[str, list[str]]:
    pick = lambda n: [words[i] for i in rng.integers(0, len(words), size=n)]  # noqa: E731
    return {
        "email": [f"{a}.{b}@{c}.com" for a, b, c in zip(pick(500), pick(500), pick(500))],
        "url": [f"https://www.{a}.org/{b}/{c}?id={i}" for i, (a, b, c) in enumerate(zip(pick(500), pick(500), pick(500)))],
        "phone": [f"555-{int(a):03d}-{int(b):04d}" for a, b in zip(rng.integers(100, 999, 500), rng.integers(0, 9999, 500))],
        "markup": [f"**{w.upper()}**" for w in pick(250)] + [f"_{w}_" for w in pick(250)],
    }


def make_text_snapshot(path: Path, rows: int, seed: int = 0) -> None:
    """A synthetic text snapshot of `rows` rows (columns and types of gen_assets.sources.texts.TEXT_SCHEMA),
    written in row groups of 131,072 rows like gen_assets.store.snapshots.atomic_write_parquet."""
    import duckdb
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from gen_assets.sources.texts import TEXT_SCHEMA

    rng = np.random.default_rng(seed)
    plain = _vocabulary(rng)
    specials = _special_tokens(rng, plain)
    kinds = ["email", "url", "phone", "markup"]
    rates = [0.04, 0.04, 0.02, 0.05]
    starts = np.cumsum([len(plain)] + [len(specials[k]) for k in kinds])  # where each kind's tokens begin
    vocab = pa.array(plain + [t for k in kinds for t in specials[k]], pa.string())
    zipf = 1.0 / np.arange(1, len(plain) + 1)
    zipf /= zipf.sum()
    categories = pa.array(TEXT_CATEGORIES + [f" {c.title()} " for c in TEXT_CATEGORIES] + [None, "  "])
    category_p = np.array([0.99 * 0.95 / 6] * 6 + [0.99 * 0.05 / 6] * 6 + [0.005, 0.005])
    hasher = duckdb.connect()

    tmp = path.with_name(path.name + ".tmp")
    with pq.ParquetWriter(tmp, TEXT_SCHEMA, compression="zstd") as writer:
        for first in range(0, rows, TEXT_CHUNK_ROWS):
            n = min(TEXT_CHUNK_ROWS, rows - first)
            n_words = rng.integers(20, 81, size=n)
            short = rng.random(n) < 0.01
            n_words[short] = rng.integers(1, 3, size=int(short.sum()))  # "too short" (< 20 chars)
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(n_words, out=offsets[1:])
            idx = rng.choice(len(plain), size=int(offsets[-1]), p=zipf)
            for k, kind in enumerate(kinds):  # one token of the kind, at a random position, in a share of rows
                chosen = np.flatnonzero((rng.random(n) < rates[k]) & ~short)
                pos = offsets[chosen] + (rng.random(len(chosen)) * n_words[chosen]).astype(np.int64)
                idx[pos] = starts[k] + rng.integers(0, len(specials[kind]), size=len(chosen))
            words = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), vocab.take(pa.array(idx)))
            text = pc.binary_join(words, " ")

            take = np.arange(n)
            copy = rng.random(n)
            dup = np.flatnonzero(copy < 0.04)  # copies of an earlier row of the chunk
            take[dup] = (rng.random(len(dup)) * dup).astype(np.int64)
            text = text.take(pa.array(take))
            near = (copy < 0.005) & (take != np.arange(n))  # the copy in capitals: a near-duplicate
            text = pc.if_else(pa.array(near), pc.utf8_upper(text), text)
            undecodable = pa.array(rng.random(n) < 0.002)
            text = pc.if_else(undecodable, pa.scalar(None, pa.string()), text).cast(pa.large_string())

            hasher.register("chunk", pa.table({"text": text}))
            content_hash = hasher.sql("SELECT sha256(coalesce(text, '')) AS h FROM chunk").to_arrow_table()["h"]
            row_id = pc.utf8_lpad(pa.array(np.arange(first, first + n)).cast(pa.string()), 9, "0")
            category = categories.take(pa.array(rng.choice(len(categories), size=n, p=category_p)))
            table = pa.table(
                {
                    "source": pa.array(["synthetic"] * n, pa.string()),
                    "row_id": row_id,
                    "category": category,
                    "title": pc.binary_join_element_wise("doc ", pc.cast(pa.array(np.arange(first, first + n) // 50), pa.string()), ""),
                    "section": pa.nulls(n, pa.string()),
                    "text": text,
                    "raw_bytes": pc.fill_null(pc.binary_length(text), 0).cast(pa.int64()),
                    "content_hash": content_hash,
                    "decode_error": pc.if_else(undecodable, "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff", None),
                },
                schema=TEXT_SCHEMA,
            )
            writer.write_table(table, row_group_size=131_072)
    tmp.replace(path)
    hasher.close()


def make_text_corpus(path: Path, rows: int, seed: int = 0) -> None:
    """The synthetic text rows as a JSONL file, as a user would bring them."""
    import duckdb

    snapshot = path.with_suffix(".rows.parquet")
    make_text_snapshot(snapshot, rows, seed)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    con.execute(f"COPY (SELECT category, title, section, text FROM read_parquet('{snapshot}')) "
                f"TO '{path}' (FORMAT json)")
    con.close()
    snapshot.unlink()


# ---- synthetic image folder -------------------------------------------------------------------------------

IMAGE_LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def make_image_folder(root: Path, rows: int, seed: int = 0) -> None:
    """`rows` 8x8 grayscale PNG files under root/<label>/, with duplicates and truncated files."""
    import numpy as np

    from gen_assets.media.png import encode_png

    rng = np.random.default_rng(seed)
    for label in IMAGE_LABELS:
        (root / label).mkdir(parents=True, exist_ok=True)
    chunk = 65_536
    for first in range(0, rows, chunk):
        n = min(chunk, rows - first)
        pixels = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
        dup = np.flatnonzero(rng.random(n) < 0.05)  # exact copies of an earlier image of the chunk
        pixels[dup] = pixels[(rng.random(len(dup)) * dup).astype(np.int64)]
        labels = rng.integers(0, len(IMAGE_LABELS), size=n)
        truncated = rng.random(n) < 0.01
        for i in range(n):
            data = encode_png(pixels[i])
            if truncated[i]:
                data = data[: len(data) // 2]
            (root / IMAGE_LABELS[labels[i]] / f"{first + i:08d}.png").write_bytes(data)


def _tree_mib(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


# ---- the worker processes ---------------------------------------------------------------------------------


def _generate(modality: str, path: str, rows: int) -> float:
    start = time.perf_counter()
    if modality == "image":
        make_image_folder(Path(path), rows)
    else:
        make_text_corpus(Path(path), rows)
    return time.perf_counter() - start


def _collect(modality: str, source: str, directory: str) -> dict:
    """The raw_* asset's work: stream the source's batches into a snapshot."""
    from gen_assets.sources.images import IMAGE_SNAPSHOT_HASH_COLUMNS, iter_images
    from gen_assets.sources.texts import TEXT_SCHEMA, TEXT_SNAPSHOT_HASH_COLUMNS, iter_texts
    from gen_assets.store.snapshots import write_snapshot

    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if modality == "image":
        snapshot = write_snapshot(iter_images(source), directory, hash_columns=IMAGE_SNAPSHOT_HASH_COLUMNS,
                                  source=source)
    else:
        snapshot = write_snapshot(iter_texts(source), directory, hash_columns=TEXT_SNAPSHOT_HASH_COLUMNS,
                                  source=source, schema=TEXT_SCHEMA)
    return {
        "seconds": time.perf_counter() - start,
        "base_rss_mib": base_kib / 1024,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "path": snapshot.path,
        "rows": snapshot.rows,
    }


def _clean(modality: str, path: str, database: str, threads: int | None, memory_limit: str | None) -> dict:
    import duckdb

    from gen_assets.cleaning.images import clean_images
    from gen_assets.cleaning.texts import clean_texts

    clean = clean_images if modality == "image" else clean_texts
    con = duckdb.connect(database)
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute("SET memory_limit = ?", [memory_limit])
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    stats = clean(con, path, snapshot_version="scale")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "threads": int(con.execute("SELECT current_setting('threads')").fetchone()[0]),
        "memory_limit": con.execute("SELECT current_setting('memory_limit')").fetchone()[0],
        "seconds": wall,
        "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "base_rss_mib": base_kib / 1024,  # ru_maxrss is in KiB on Linux
        "peak_rss_mib": after.ru_maxrss / 1024,
        "rows_in": stats.rows_in,
        "rows_clean": stats.rows_clean,
        "by_reason": stats.by_reason,
    }
    con.close()
    return result


def _in_fresh_process(fn, *args):
    """fn(*args) in a new interpreter, so its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def measure(modality: str, rows: int, tmp: Path, threads: int | None, memory_limit: str | None) -> dict:
    import shutil

    source = tmp / (f"images-{rows}" if modality == "image" else f"texts-{rows}.jsonl")
    snapshots, database = tmp / f"snapshots-{modality}-{rows}", tmp / f"{modality}-{rows}.duckdb"
    generate_s = _in_fresh_process(_generate, modality, str(source), rows)
    source_mib = _tree_mib(source)
    collected = _in_fresh_process(_collect, modality, str(source), str(snapshots))
    shutil.rmtree(source) if source.is_dir() else source.unlink()
    result = _in_fresh_process(_clean, modality, collected["path"], str(database), threads, memory_limit)
    result.update(modality=modality, rows=rows, generate_seconds=generate_s, source_mib=source_mib,
                  snapshot_mib=Path(collected["path"]).stat().st_size / 2**20, rows_per_second=rows / result["seconds"],
                  collect=collected, collect_rows_per_second=rows / collected["seconds"])
    shutil.rmtree(snapshots)
    database.unlink()
    shutil.rmtree(database.with_name(database.name + ".tmp"), ignore_errors=True)  # DuckDB's spill folder
    return result


def _sizes(text: str) -> list[int]:
    sizes = sorted({int(s.replace("_", "")) for s in text.split(",") if s.strip()})
    if not sizes or sizes[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected positive row counts separated by commas, got {text!r}")
    return sizes


def print_table(results: dict[str, list[dict]], total_s: float, memory_limit: str | None) -> None:
    threads = next(r["threads"] for runs in results.values() for r in runs)
    limit = next(r["memory_limit"] for runs in results.values() for r in runs)
    print(f"Streaming collection, then DuckDB cleaning into a warehouse file ({threads} threads, memory_limit "
          f"{limit}{'' if memory_limit else ', the default'}); each step in a fresh process")
    print(f"{'modality':<9} {'rows':>11} {'source MiB':>10} | {'collect s':>9} {'rows/s':>9} {'peak MiB':>8} | "
          f"{'clean s':>8} {'rows/s':>9} {'cpu s':>7} {'peak MiB':>8} {'cost/row':>8} | {'clean':>11} {'quarantined':>11}")
    for modality, runs in results.items():
        for r in runs:
            c = r["collect"]
            print(f"{modality:<9} {r['rows']:>11,} {r['source_mib']:>10,.0f} | {c['seconds']:>9.1f} "
                  f"{r['collect_rows_per_second']:>9,.0f} {c['peak_rss_mib']:>8,.0f} | "
                  f"{r['seconds']:>8.1f} {r['rows_per_second']:>9,.0f} {r['cpu_seconds']:>7.1f} "
                  f"{r['peak_rss_mib']:>8,.0f} {r['cost_per_row_vs_smallest']:>7.2f}x | "
                  f"{r['rows_clean']:>11,} {r['rows_in'] - r['rows_clean']:>11,}")
    print("cost/row: seconds per row relative to the smallest size of the same modality (linear cost: ~1.00x)")
    for modality, runs in results.items():
        reasons = runs[-1]["by_reason"]
        print(f"{modality} quarantine at {runs[-1]['rows']:,} rows: " + ", ".join(f"{k} {v:,}" for k, v in reasons.items()))
    print(f"total {total_s:.0f} s (generation included)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-rows", type=_sizes, default=_sizes(DEFAULT_IMAGE_ROWS), help="comma-separated sizes")
    parser.add_argument("--text-rows", type=_sizes, default=_sizes(DEFAULT_TEXT_ROWS), help="comma-separated sizes")
    parser.add_argument("--only", choices=["image", "text"], default=None, help="one modality only")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: DuckDB's, all cores)")
    parser.add_argument("--memory-limit", default=None,
                        help="DuckDB memory_limit for the cleaning, e.g. 1GB (default: DuckDB's, 80%% of RAM)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--table", metavar="JSON", help="print the table of an earlier --json run, and stop")
    args = parser.parse_args(argv)
    if args.table:
        earlier = json.loads(Path(args.table).read_text())
        print_table(earlier["results"], earlier["total_seconds"], earlier.get("memory_limit"))
        return 0

    plan = [(m, args.image_rows if m == "image" else args.text_rows) for m in ("image", "text")
            if args.only in (None, m)]
    results: dict[str, list[dict]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for modality, sizes in plan:
            runs = results[modality] = []
            for rows in sizes:
                runs.append(measure(modality, rows, Path(tmp), args.threads, args.memory_limit))
                smallest = runs[0]
                runs[-1]["cost_per_row_vs_smallest"] = (
                    (runs[-1]["seconds"] / rows) / (smallest["seconds"] / smallest["rows"])
                )
                if not args.json:
                    print(f"  {modality} {rows:,} rows: collected in {runs[-1]['collect']['seconds']:.1f} s, "
                          f"cleaned in {runs[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    total_s = time.perf_counter() - start

    if args.json:
        print(json.dumps({"results": results, "total_seconds": total_s, "memory_limit": args.memory_limit}, indent=2))
        return 0
    print_table(results, total_s, args.memory_limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
