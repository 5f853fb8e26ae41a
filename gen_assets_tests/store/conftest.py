"""Fixtures of the artifact-location tests (test_files.py, test_snapshots.py)."""

import tempfile
from pathlib import Path

import fsspec
import pytest


def _clear_memory() -> None:
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")


@pytest.fixture(autouse=True)
def memory_fs():
    """fsspec's in-memory filesystem is process-wide: empty before and after every test."""
    _clear_memory()
    yield fsspec.filesystem("memory")
    _clear_memory()


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """The system temporary folder (where a URL's staging file goes), redirected so that a leftover
    staging file shows in a listing."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder
