"""The module fixtures of the end-to-end tests: a home after one `gen-assets run --profile smoke`."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gen_assets import cli


@contextmanager
def smoke_run(home: Path, modality: str, **env: str) -> Iterator[pytest.MonkeyPatch]:
    """Run the smoke graph of `modality` into `home` and keep GEN_ASSETS_HOME (and `env`) set while in use;
    everything is restored afterwards. DAGSTER_HOME points beside the home: the CLI points it into the home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GEN_ASSETS_HOME", str(home))
    mp.setenv("DAGSTER_HOME", str(home.parent / "unused"))
    for name, value in env.items():
        mp.setenv(name, value)
    try:
        assert cli.main(["run", "--modality", modality, "--profile", "smoke"]) == 0
        yield mp
    finally:
        mp.undo()
