import os
import sys

import pytest


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the test process as soon as pytest is done, with pytest's exit status.

    DuckDB's Python bindings (nanobind) print pages of "leaked instance" warnings when the interpreter
    finalizes with DuckDB objects still referenced from module state; they are harmless, but they
    bury pytest's summary line, which is what people and CI read.
    """
    status = getattr(config, "_gen_assets_exitstatus", None)
    if status is None or os.environ.get("GEN_ASSETS_TESTS_NORMAL_EXIT"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(status))


def pytest_sessionfinish(session, exitstatus):
    session.config._gen_assets_exitstatus = exitstatus
