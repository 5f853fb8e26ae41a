"""How the cost of the DuckDB cleaning grows with the size of a snapshot (images and texts).

    python benchmarks/scale.py [--image-rows 250000,500000,1000000] [--text-rows 1000000,2500000,5000000,10000000]
                               [--only image|text] [--threads N] [--json]

For each size it writes a synthetic snapshot (Parquet, the columns and row groups of a real one) and then
runs the pipeline's cleaning on it, exactly as the pipeline does, into a DuckDB warehouse FILE:

- images: `gen_assets.cleaning.images.clean_images` on the snapshot of benchmarks/cleaning_duckdb_vs_pandas.py
  (`make_snapshot`: tiny fake PNG bytes, ~5% duplicates, ~1% undecodable, ~1% blank labels, ...).
- texts: `gen_assets.cleaning.texts.clean_texts` on short documents (20-80 words from a Zipf-distributed
  vocabulary, some punctuation and line breaks, ~5% **bold** / _emphasis_ markup, ~4% with an e-mail
  address, ~4% with a URL, ~2% with a phone number, ~3% exact duplicates, ~0.5% near-duplicates (upper-cased
  copies), ~1% too short, ~0.5% missing categories, ~0.2% undecodable). Built with numpy and pyarrow in
  chunks, so generating 10M rows takes seconds and little memory.

Generation and cleaning each run in a fresh process (multiprocessing, spawn), one size at a time, so the
peak resident memory reported (getrusage ru_maxrss of the cleaning process) belongs to that one cleaning
run alone; "base" is the same process's RSS just before the call (Python, DuckDB and gen_assets imported).
Reported per size: wall seconds of the cleaning call, rows/s, CPU seconds (all threads), peak RSS, and the
cost per row relative to the smallest size: a cleaning whose cost is linear in the rows keeps it near 1.00x.
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


# ---- the worker processes ---------------------------------------------------------------------------------


def _generate(modality: str, path: str, rows: int) -> float:
    start = time.perf_counter()
    if modality == "image":
        from cleaning_duckdb_vs_pandas import make_snapshot

        make_snapshot(Path(path), rows)
    else:
        make_text_snapshot(Path(path), rows)
    return time.perf_counter() - start


def _clean(modality: str, path: str, database: str, threads: int | None) -> dict:
    import duckdb

    from gen_assets.cleaning.images import clean_images
    from gen_assets.cleaning.texts import clean_texts

    clean = clean_images if modality == "image" else clean_texts
    con = duckdb.connect(database)
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    stats = clean(con, path, snapshot_version="scale")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "threads": int(con.execute("SELECT current_setting('threads')").fetchone()[0]),
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


def measure(modality: str, rows: int, tmp: Path, threads: int | None) -> dict:
    snapshot, database = tmp / f"{modality}-{rows}.parquet", tmp / f"{modality}-{rows}.duckdb"
    generate_s = _in_fresh_process(_generate, modality, str(snapshot), rows)
    result = _in_fresh_process(_clean, modality, str(snapshot), str(database), threads)
    result.update(modality=modality, rows=rows, generate_seconds=generate_s,
                  snapshot_mib=snapshot.stat().st_size / 2**20, rows_per_second=rows / result["seconds"])
    snapshot.unlink()
    database.unlink()
    return result


def _sizes(text: str) -> list[int]:
    sizes = sorted({int(s.replace("_", "")) for s in text.split(",") if s.strip()})
    if not sizes or sizes[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected positive row counts separated by commas, got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-rows", type=_sizes, default=_sizes(DEFAULT_IMAGE_ROWS), help="comma-separated sizes")
    parser.add_argument("--text-rows", type=_sizes, default=_sizes(DEFAULT_TEXT_ROWS), help="comma-separated sizes")
    parser.add_argument("--only", choices=["image", "text"], default=None, help="one modality only")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: DuckDB's, all cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    plan = [(m, args.image_rows if m == "image" else args.text_rows) for m in ("image", "text")
            if args.only in (None, m)]
    results: dict[str, list[dict]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for modality, sizes in plan:
            runs = results[modality] = []
            for rows in sizes:
                runs.append(measure(modality, rows, Path(tmp), args.threads))
                smallest = runs[0]
                runs[-1]["cost_per_row_vs_smallest"] = (
                    (runs[-1]["seconds"] / rows) / (smallest["seconds"] / smallest["rows"])
                )
                if not args.json:
                    print(f"  {modality} {rows:,} rows: {runs[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    total_s = time.perf_counter() - start

    if args.json:
        print(json.dumps({"results": results, "total_seconds": total_s}, indent=2))
        return 0
    threads = next(r["threads"] for runs in results.values() for r in runs)
    print(f"DuckDB cleaning into a warehouse file, {threads} threads; each size in a fresh process")
    print(f"{'modality':<9} {'rows':>11} {'snap MiB':>9} {'gen s':>7} {'clean s':>8} {'rows/s':>10} {'cpu s':>7} "
          f"{'base MiB':>9} {'peak MiB':>9} {'cost/row':>9} {'clean':>11} {'quarantined':>12}")
    for modality, runs in results.items():
        for r in runs:
            print(f"{modality:<9} {r['rows']:>11,} {r['snapshot_mib']:>9.0f} {r['generate_seconds']:>7.1f} "
                  f"{r['seconds']:>8.2f} {r['rows_per_second']:>10,.0f} {r['cpu_seconds']:>7.1f} "
                  f"{r['base_rss_mib']:>9.0f} {r['peak_rss_mib']:>9.0f} {r['cost_per_row_vs_smallest']:>8.2f}x "
                  f"{r['rows_clean']:>11,} {r['rows_in'] - r['rows_clean']:>12,}")
    print("cost/row: seconds per row relative to the smallest size of the same modality (linear cost: ~1.00x)")
    for modality, runs in results.items():
        reasons = runs[-1]["by_reason"]
        print(f"{modality} quarantine at {runs[-1]['rows']:,} rows: " + ", ".join(f"{k} {v:,}" for k, v in reasons.items()))
    print(f"total {total_s:.0f} s (generation included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
