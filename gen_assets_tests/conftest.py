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


@pytest.fixture(scope="session", autouse=True)
def tiny_text_base(tmp_path_factory):
    """The smoke profile's text generator on a tiny random Llama (gen_assets_tests/tiny_lm.py) instead of the
    pretrained default: the tests download nothing and the smoke graph stays fast. Every test that runs the
    smoke profile in this process (cli.main) sees it; the profile is restored at the end of the session."""
    from gen_assets.settings import PROFILES
    from gen_assets_tests.tiny_lm import save_tiny_llama

    folder = save_tiny_llama(tmp_path_factory.mktemp("tiny-base") / "tiny-llama")
    smoke = PROFILES["smoke"]["text_generator"]
    before = dict(smoke)
    smoke["base_model"] = str(folder)
    yield folder
    smoke.clear()
    smoke.update(before)
