"""store.files: locations (paths and fsspec URLs), atomic writes, reads, DuckDB sources; the artifacts setting;
models and batches at URLs. Only tmp_path and fsspec's in-memory filesystem: never the network."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from fsspec.implementations.memory import MemoryFileSystem
from upath import UPath

from gen_assets import settings
from gen_assets.models.checkpoint import file_sha256, load_model, save_model, save_versioned_model
from gen_assets.models.gpt import GPT, GPTConfig
from gen_assets.store import files
from gen_assets.store import registry
from gen_assets.store import warehouse as wh
from gen_assets.store.batches import batch_table, write_batch
from gen_assets.store.files import (
    atomic_output,
    atomic_write_bytes,
    duckdb_source,
    location,
    open_read,
    read_table,
    remove,
    sha256_of,
)


def listing(folder: Path) -> list[str]:
    """Every file and folder below `folder` (hidden ones included), relative."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def memory_keys(memory_fs) -> list[str]:
    return sorted(memory_fs.store)


def kinds(tmp_path: Path) -> dict[str, str]:
    """One folder of each kind: a plain path, a file:// URL (both under tmp_path), a memory:// URL."""
    return {
        "path": str(tmp_path / "plain"),
        "file": f"file://{tmp_path}/viaurl",
        "memory": "memory://bucket/art",
    }


KINDS = ["path", "file", "memory"]


# ---- location() -----------------------------------------------------------------------------------------


def test_location_gives_a_path_for_paths_and_a_upath_for_urls(tmp_path, monkeypatch):
    plain = location(str(tmp_path / "a" / "b.bin"))
    assert type(plain) is not UPath and isinstance(plain, Path) and plain == tmp_path / "a" / "b.bin"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert location("~/x.bin") == tmp_path / "x.bin"  # "~" expanded
    f = location(f"file://{tmp_path}/c.bin")
    assert isinstance(f, UPath) and f.protocol == "file" and f.path == f"{tmp_path}/c.bin"
    m = location("memory://bucket/d.bin")
    assert isinstance(m, UPath) and m.protocol == "memory" and str(m) == "memory://bucket/d.bin"
    s3 = location("s3://bucket/key/e.parquet")
    assert isinstance(s3, UPath) and s3.protocol == "s3"
    # Path and UPath come back as they are
    assert location(plain) is plain and location(m) is m
    assert [files.protocol(x) for x in (plain, f, m, s3)] == ["", "file", "memory", "s3"]
    assert not files.is_url(str(plain)) and files.is_url(str(f)) and files.is_url(m)


# ---- atomic writes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_atomic_write_bytes_then_open_read(tmp_path, memory_fs, scratch, kind):
    target = f"{kinds(tmp_path)[kind]}/deep/er/blob.bin"  # parent folders created as needed
    data = bytes(range(256)) * 100
    atomic_write_bytes(target, data)
    with open_read(target) as f:
        assert f.read() == data
    atomic_write_bytes(target, b"replaced")  # an existing file is replaced whole
    with open_read(location(target)) as f:
        assert f.read() == b"replaced"
    if kind == "memory":
        assert memory_keys(memory_fs) == ["/bucket/art/deep/er/blob.bin"]
    else:
        folder = tmp_path / ("plain" if kind == "path" else "viaurl")
        assert listing(folder) == ["deep", "deep/er", "deep/er/blob.bin"]  # no temporary file left
        assert (folder / "deep" / "er" / "blob.bin").read_bytes() == b"replaced"
    assert listing(scratch) == []


def test_atomic_output_stages_beside_a_local_target(tmp_path):
    target = tmp_path / "out" / "model.pt"
    with atomic_output(target) as tmp:
        assert Path(tmp).parent == target.parent and Path(tmp).name.startswith(".model.pt.")
        Path(tmp).write_bytes(b"abc")
        assert not target.exists()  # nothing at the target before the body is done
    assert target.read_bytes() == b"abc" and listing(tmp_path / "out") == ["model.pt"]


@pytest.mark.parametrize("kind", KINDS)
def test_failure_inside_atomic_output_leaves_nothing(tmp_path, memory_fs, scratch, kind):
    target = f"{kinds(tmp_path)[kind]}/sub/data.bin"
    staged = []
    with pytest.raises(RuntimeError, match="writer crashed"):
        with atomic_output(target) as tmp:
            staged.append(tmp)
            with open(tmp, "wb") as f:
                f.write(b"half a file")
            raise RuntimeError("writer crashed")
    assert not location(target).exists()
    assert not Path(staged[0]).exists()
    assert listing(scratch) == []
    if kind == "memory":
        assert memory_keys(memory_fs) == []
    else:
        folder = tmp_path / ("plain" if kind == "path" else "viaurl")
        assert [p for p in listing(folder) if p != "sub"] == []  # the folder may exist, empty


@pytest.mark.parametrize("kind", ["path", "file"])
def test_failed_rename_leaves_neither_target_nor_temporary_file(tmp_path, monkeypatch, kind):
    target = f"{kinds(tmp_path)[kind]}/data.bin"

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"payload")
    folder = tmp_path / ("plain" if kind == "path" else "viaurl")
    assert listing(folder) == []


def test_failed_upload_leaves_neither_target_nor_temporary_file(memory_fs, scratch, monkeypatch):
    def broken_put_file(self, lpath, rpath, **kwargs):
        raise ConnectionError("upload interrupted")

    monkeypatch.setattr(MemoryFileSystem, "put_file", broken_put_file)
    with pytest.raises(ConnectionError, match="upload interrupted"):
        atomic_write_bytes("memory://bucket/art/data.bin", b"payload")
    assert memory_keys(memory_fs) == [] and listing(scratch) == []


@pytest.mark.parametrize("kind", KINDS)
def test_open_read_of_a_missing_file_names_the_location(tmp_path, kind):
    missing = f"{kinds(tmp_path)[kind]}/nothing-here.bin"
    with pytest.raises(FileNotFoundError) as err:
        with open_read(missing):
            pass
    shown = str(location(missing))
    assert shown in str(err.value) and "does not exist" in str(err.value)
    with pytest.raises(FileNotFoundError, match=re.escape(shown)):
        sha256_of(missing)


def test_open_read_does_not_blame_its_file_for_the_callers_errors(tmp_path):
    """KNOWN BUG (fails until gen_assets/store/files.py open_read is fixed): open_read's
    `except FileNotFoundError` wraps its `yield`, so a FileNotFoundError raised by the caller's own code
    inside the `with` block (another file that is missing) is re-raised as "<this file> does not exist",
    naming a file that exists and hiding the real one."""
    present = tmp_path / "model.pt"
    present.write_bytes(b"weights")
    with pytest.raises(FileNotFoundError) as err:
        with open_read(present):
            open(tmp_path / "tokenizer.json", "rb")
    assert "tokenizer.json" in str(err.value), f"the caller's error was replaced by: {err.value}"


# ---- read_table, sha256_of, remove ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_read_table_sha256_and_remove(tmp_path, memory_fs, kind):
    table = pa.table({"id": [1, 2, 3], "name": ["a", None, "c"], "blob": [b"\x00", b"", None]})
    target = f"{kinds(tmp_path)[kind]}/t.parquet"
    with atomic_output(target) as tmp:
        pq.write_table(table, tmp)
        expected_sha = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
    assert read_table(target).equals(table)
    assert read_table(target, columns=["name"]).equals(table.select(["name"]))
    assert sha256_of(target) == expected_sha and sha256_of(location(target)) == expected_sha
    assert location(target).exists()
    remove(target)
    assert not location(target).exists()
    remove(target)  # already gone: not an error
    if kind == "memory":
        assert memory_keys(memory_fs) == []


def test_sha256_of_reads_past_one_chunk(tmp_path):
    data = os.urandom((1 << 20) + 12345)
    (tmp_path / "big.bin").write_bytes(data)
    assert sha256_of(tmp_path / "big.bin") == hashlib.sha256(data).hexdigest()


# ---- duckdb_source ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_duckdb_reads_parquet_at_every_kind_of_location(tmp_path, kind):
    table = pa.table({"id": list(range(10)), "word": [f"w{i}" for i in range(10)]})
    target = f"{kinds(tmp_path)[kind]}/t.parquet"
    with atomic_output(target) as tmp:
        pq.write_table(table, tmp)
    con = duckdb.connect()
    try:
        src = duckdb_source(con, target)
        expected = {"path": str(tmp_path / "plain" / "t.parquet"), "file": f"file://{tmp_path}/viaurl/t.parquet",
                    "memory": "memory://bucket/art/t.parquet"}[kind]
        assert src == expected
        assert con.sql(f"SELECT count(*), sum(id), max(word) FROM read_parquet('{src}')").fetchall() == [(10, 45, "w9")]
        # asking again (a second view over the same filesystem) is fine
        again = duckdb_source(con, location(target))
        assert con.sql(f"SELECT count(*) FROM read_parquet('{again}')").fetchall() == [(10,)]
    finally:
        con.close()


class _OfflineConnection:
    """A DuckDB connection stand-in whose httpfs extension is neither loaded nor installable."""

    def __init__(self, installable: bool = False):
        self.installable = installable
        self.installed = False
        self.statements: list[str] = []

    def execute(self, sql: str):
        self.statements.append(sql)
        if sql == "INSTALL httpfs" and self.installable:
            self.installed = True
            return self
        if sql in ("LOAD httpfs", "INSTALL httpfs") and not self.installed:
            raise duckdb.IOException(f"{sql}: extension not found and no network")
        return self

    def list_filesystems(self):  # pragma: no cover - must not be reached for s3://
        raise AssertionError("an s3:// URL must go through httpfs, not fsspec")

    register_filesystem = list_filesystems


def test_duckdb_source_s3_without_httpfs_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("GEN_ASSETS_DUCKDB_FSSPEC", raising=False)
    con = _OfflineConnection()
    with pytest.raises(RuntimeError) as err:
        duckdb_source(con, "s3://bucket/snapshots/abc.parquet")
    message = str(err.value)
    assert "httpfs" in message and "GEN_ASSETS_DUCKDB_FSSPEC" in message
    assert "s3://bucket/snapshots/abc.parquet" in message
    assert con.statements == ["LOAD httpfs", "INSTALL httpfs"]


def test_duckdb_source_s3_installs_httpfs_when_it_can(monkeypatch):
    monkeypatch.delenv("GEN_ASSETS_DUCKDB_FSSPEC", raising=False)
    con = _OfflineConnection(installable=True)
    assert duckdb_source(con, "s3://bucket/snapshots/abc.parquet") == "s3://bucket/snapshots/abc.parquet"
    assert con.statements == ["LOAD httpfs", "INSTALL httpfs", "LOAD httpfs"]


class _FsspecOnlyConnection:
    """A DuckDB connection stand-in that records fsspec registrations and refuses SQL."""

    def __init__(self):
        self.registered: list[str] = []

    def execute(self, sql: str):  # pragma: no cover - must not be reached with GEN_ASSETS_DUCKDB_FSSPEC=1
        raise AssertionError(f"unexpected {sql!r}: GEN_ASSETS_DUCKDB_FSSPEC=1 reads through fsspec")

    def list_filesystems(self):
        return list(self.registered)

    def register_filesystem(self, fs):
        self.registered.append(fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0])


def test_duckdb_source_https_through_fsspec_when_asked(monkeypatch):
    pytest.importorskip("aiohttp")  # fsspec's http filesystem; nothing is fetched
    monkeypatch.setenv("GEN_ASSETS_DUCKDB_FSSPEC", "1")
    con = _FsspecOnlyConnection()
    url = "https://example.invalid/data/t.parquet"
    assert duckdb_source(con, url) == url
    assert duckdb_source(con, url) == url  # registered once per connection
    assert con.registered == ["http"]


# ---- settings: GEN_ASSETS_ARTIFACTS -----------------------------------------------------------------------


def test_artifacts_location_setting(tmp_path, monkeypatch):
    assert settings.artifacts_location(None) is None
    assert settings.artifacts_location("") is None and settings.artifacts_location("   ") is None
    monkeypatch.chdir(tmp_path)
    assert settings.artifacts_location("shared/art") == str(tmp_path / "shared" / "art")
    assert Path(settings.artifacts_location(" shared/art ")).is_absolute()
    assert settings.artifacts_location("memory://b/art") == "memory://b/art"
    assert settings.artifacts_location(f"file://{tmp_path}/x") == f"file://{tmp_path}/x"
    with pytest.raises(ValueError, match="GEN_ASSETS_ARTIFACTS") as err:
        settings.artifacts_location("nosuch://x")
    assert "nosuch" in str(err.value)


def test_paths_with_artifacts_at_a_url_keep_training_under_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    paths = settings.Paths(home, "memory://b/art")
    assert isinstance(paths.snapshots, UPath) and str(paths.snapshots) == "memory://b/art/snapshots"
    assert str(paths.models) == "memory://b/art/models" and str(paths.batches) == "memory://b/art/batches"
    assert paths.training == home / "artifacts" / "training" and isinstance(paths.training, Path)
    assert paths.warehouse == home / "warehouse.duckdb"
    local = settings.Paths(home)
    assert local.snapshots == home / "artifacts" / "snapshots" and not isinstance(local.snapshots, UPath)
    monkeypatch.setenv("GEN_ASSETS_HOME", str(home))
    monkeypatch.setenv("GEN_ASSETS_ARTIFACTS", "memory://b/art")
    assert settings.Paths.from_env() == paths
    monkeypatch.setenv("GEN_ASSETS_ARTIFACTS", "nosuch://x")
    with pytest.raises(ValueError, match="GEN_ASSETS_ARTIFACTS"):
        settings.Paths.from_env()


# ---- models and batches at URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_model_round_trip_at_a_url(tmp_path, memory_fs, kind):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))
    url = f"{kinds(tmp_path)[kind]}/models/gpt.pt"
    sha = save_model(url, "gpt", model, extra={"note": "at a url"})
    assert len(sha) == 64 and file_sha256(url) == sha
    with open_read(url) as f:
        assert hashlib.sha256(f.read()).hexdigest() == sha
    if kind == "memory":
        assert memory_keys(memory_fs) == ["/bucket/art/models/gpt.pt"]
    else:
        assert listing(tmp_path / "viaurl" / "models") == ["gpt.pt"]
    loaded = load_model(url)
    assert isinstance(loaded, GPT) and loaded.config == model.config and loaded.extra == {"note": "at a url"}
    original, again = model.state_dict(), loaded.state_dict()
    assert original.keys() == again.keys()
    for name in original:
        assert torch.equal(original[name], again[name]), name
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(f"{kinds(tmp_path)[kind]}/models/missing.pt")
    # what the training and tuning assets call: the file is named by its content, written in one step
    version, path, sha2 = save_versioned_model(f"{kinds(tmp_path)[kind]}/models/text", "gpt", "gpt", model)
    assert version == f"gpt-{sha2[:12]}" and path == f"{kinds(tmp_path)[kind]}/models/text/{version}.pt"
    assert file_sha256(path) == sha2 and torch.equal(load_model(path).lm_head.weight, model.lm_head.weight)


def test_generated_view_reads_a_batch_at_a_memory_url(tmp_path, memory_fs):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        wh.ensure_schema(con)
        remote = batch_table(batch_id="b1", model_version="m1", modality="text", categories=["comedy"] * 3,
                             contents=["one", "two", "three"], seed=1)
        local = batch_table(batch_id="b2", model_version="m1", modality="text", categories=["tragedy"] * 2,
                            contents=["four", "five"], seed=2)
        remote_path = write_batch(remote, "memory://bucket/art/batches", "b1")
        assert isinstance(remote_path, UPath) and str(remote_path) == "memory://bucket/art/batches/b1.parquet"
        assert memory_keys(memory_fs) == ["/bucket/art/batches/b1.parquet"]
        local_path = write_batch(local, tmp_path / "batches", "b2")
        for bid, path, table in (("b1", remote_path, remote), ("b2", local_path, local)):
            registry.register_batch(con, batch_id=bid, modality="text", model_version="m1", path=str(path),
                                    grid_path=None, n_samples=table.num_rows)
        registry.refresh_generated_view(con)
        assert con.execute("SELECT count(*) FROM generated").fetchone()[0] == 5
        rows = con.execute("SELECT batch_id, text FROM generated WHERE batch_id = 'b1' ORDER BY sample_id").fetchall()
        assert rows == [("b1", "one"), ("b1", "two"), ("b1", "three")]
    finally:
        con.close()


def test_every_warehouse_connection_reads_the_batches_at_the_artifacts_url(tmp_path, memory_fs):
    # DuckDB registers filesystems per connection: the view defined on one connection must be readable on
    # the next one the project opens (the web catalog, the CLI, every Dagster step)
    from gen_assets.defs.resources import Warehouse

    database, artifacts = tmp_path / "w.duckdb", "memory://bucket/art"
    table = batch_table(batch_id="b1", model_version="m1", modality="text", categories=["comedy"] * 3,
                        contents=["one", "two", "three"], seed=1)
    with wh.connect(database, artifacts=artifacts) as con:
        wh.ensure_schema(con)
        path = write_batch(table, f"{artifacts}/batches", "b1")
        registry.register_batch(con, batch_id="b1", modality="text", model_version="m1", path=str(path),
                                grid_path=None, n_samples=3)
        registry.refresh_generated_view(con)
    with duckdb.connect(str(database), read_only=True) as plain, pytest.raises(duckdb.IOException):
        plain.execute("SELECT count(*) FROM generated").fetchone()  # unprepared: the memory:// files are unknown
    with wh.connect(database, read_only=True, artifacts=artifacts) as con:
        assert con.execute("SELECT count(*) FROM generated").fetchone()[0] == 3
    with Warehouse(database=str(database), artifacts_url=artifacts).get_connection() as con:
        assert con.execute("SELECT list(text ORDER BY sample_id) FROM generated").fetchone()[0] == ["one", "two", "three"]
