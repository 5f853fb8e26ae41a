"""Fixtures of the review page's tests.

A small home is built once per session with the store's own functions (no training, about a second):
an image batch of 8x8 digits and a text batch, both curated, a champion
and a tuned candidate per modality, metric history for the trend plots, and one recorded Dagster run.
Each test that writes gets its own copy of it (`home`), so tests never see each other's ratings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from gen_assets.media.png import encode_png
from gen_assets.settings import Paths
from gen_assets.store import batches, registry, samples
from gen_assets.store import warehouse as wh
from gen_assets.web.app import create_app
from gen_assets.web.config import WebConfig

IMAGE_CHAMPION, IMAGE_TUNED = "dcgan-3f9a1c2b7d4e", "dcgan-8b2e4f6a1c9d"
TEXT_CHAMPION = "gpt-5c1d9e7a3b2f"
IMAGE_BATCH, TEXT_BATCH = "image-b7e1c04a2f", "text-4d2a9c81e3"
PER_CATEGORY, CURATED_PER_CATEGORY = 3, 2
TEXTS = {
    "comedy": ["If music be the food of love, play on;\nGive me excess of it, that, surfeiting,\nThe appetite may sicken, and so die.",
               "All the world's a stage,\nAnd all the men and women merely players;\nThey have their exits and their entrances.",
               "The course of true love never did run smooth."],
    "history": ["Once more unto the breach, dear friends, once more;\nOr close the wall up with our English dead.",
                "Now is the winter of our discontent\nMade glorious summer by this sun of York.",
                "Uneasy lies the head that wears a crown."],
    "tragedy": ["To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\nThe slings and arrows of outrageous fortune.",
                "Out, out, brief candle!\nLife's but a walking shadow, a poor player\nThat struts and frets his hour upon the stage.",
                "O Romeo, Romeo! wherefore art thou Romeo?"],
}
INSTANCE_YAML = "telemetry:\n  enabled: false\n"

# The browser tests use Debian's Chromium through the playwright package, never a browser playwright downloads.
CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"
NEEDS_CHROMIUM = [
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="the playwright package is not installed (pip install playwright; no browser download needed)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"no Chromium at {CHROMIUM} (install it with: apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"], headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page, name: str, full_page: bool = False) -> None:
    """The README's pictures, only when asked for (GEN_ASSETS_SCREENSHOTS=1): a normal test run leaves the
    repository alone."""
    if os.environ.get("GEN_ASSETS_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / name), full_page=full_page)


# 5x7 glyphs of the digits: generated-looking 8x8 samples without loading a data set
GLYPHS = {
    "0": [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
    "1": ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
    "2": [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
    "3": ["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."],
    "4": ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
    "5": ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
    "6": ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."],
    "7": ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
    "8": [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
    "9": [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."],
}


def _digit_pngs() -> tuple[list[str], list[bytes]]:
    """PER_CATEGORY 8x8 images per digit: the glyph shifted by a pixel and with uneven ink."""
    rng = np.random.default_rng(0)
    categories, pngs = [], []
    for label, glyph in GLYPHS.items():
        mask = np.array([[c == "#" for c in row] for row in glyph], dtype=float)
        for _ in range(PER_CATEGORY):
            image = np.zeros((8, 8))
            dy, dx = rng.integers(0, 2), rng.integers(0, 4)
            image[dy:dy + 7, dx:dx + 5] = mask * rng.uniform(150, 255, size=(7, 5))
            categories.append(label)
            pngs.append(encode_png(image.astype(np.uint8)))
    return categories, pngs


def _add_batch(con, paths: Paths, modality: str, batch_id: str, version: str, categories, contents) -> list[str]:
    table = batches.batch_table(batch_id=batch_id, model_version=version, modality=modality, categories=categories,
                                contents=contents, seed=0)
    path = batches.write_batch(table, paths.batches / modality, batch_id)
    registry.register_batch(con, batch_id=batch_id, modality=modality, model_version=version, path=str(path), grid_path=None,
                            n_samples=table.num_rows)
    return table.column("sample_id").to_pylist()


def _curate(con, modality: str, batch_id: str, ids: list[str], categories: list[str]) -> None:
    """The first CURATED_PER_CATEGORY samples of each category, rewards falling with rank."""
    rows, seen = [], {}
    for sample_id, category in zip(ids, categories):
        rank = seen[category] = seen.get(category, 0) + 1
        if rank <= CURATED_PER_CATEGORY:
            rows.append({"sample_id": sample_id, "category": category, "reward": 0.9 - 0.1 * rank, "rank": rank})
    samples.replace_curated(con, modality, batch_id, pd.DataFrame(rows))


def _register(con, version: str, modality: str, arch: str, **inputs) -> None:
    registry.register_model(con, model_version=version, modality=modality, arch=arch, config={}, checkpoint_path=f"/m/{version}.pt",
                            input_versions={"clean": "c0", **inputs}, checkpoint_sha="0" * 64)


def build_home(home: Path) -> Paths:
    paths = Paths(home).ensure()
    with duckdb.connect(str(paths.warehouse)) as con:
        wh.ensure_schema(con)
        _register(con, IMAGE_CHAMPION, "image", "dcgan")
        registry.promote(con, IMAGE_CHAMPION, actor="ana", reason="first champion")
        _register(con, TEXT_CHAMPION, "text", "gpt")
        registry.promote(con, TEXT_CHAMPION, actor="dagster:run-1", reason="val_loss 1.89 <= 2.0")
        for i, (fid, acc) in enumerate([(14.2, 0.962), (12.8, 0.978), (11.1, 0.992)]):
            registry.record_metrics(con, model_version=IMAGE_CHAMPION, modality="image", batch_id=f"image-eval{i}",
                                    metrics={"fid": fid, "fid_real_floor": 10.0, "class_accuracy": acc})
            registry.record_metrics(con, model_version=TEXT_CHAMPION, modality="text", batch_id=f"text-eval{i}",
                                    metrics={"val_loss": 2.1 - 0.1 * i, "bleu": 0.11 + 0.02 * i, "novelty": 1.0})
        image_categories, pngs = _digit_pngs()
        ids = _add_batch(con, paths, "image", IMAGE_BATCH, IMAGE_CHAMPION, image_categories, pngs)
        _curate(con, "image", IMAGE_BATCH, ids, image_categories)
        text_categories = [c for c, texts in TEXTS.items() for _ in texts]
        ids = _add_batch(con, paths, "text", TEXT_BATCH, TEXT_CHAMPION, text_categories,
                         [t for texts in TEXTS.values() for t in texts])
        _curate(con, "text", TEXT_BATCH, ids, text_categories)
        # a retrain: the champion tuned on feedback, registered as a candidate
        _register(con, IMAGE_TUNED, "image", "dcgan", base_model=IMAGE_CHAMPION, feedback="fb-5e2a")
        registry.record_key_metric(con, IMAGE_CHAMPION, "fid", 11.1)
        registry.record_key_metric(con, IMAGE_TUNED, "fid", 10.7)
    _record_dagster_run(paths)
    return paths


def _record_dagster_run(paths: Paths) -> None:
    import dagster as dg

    @dg.op
    def tune():
        return None

    @dg.job(name="retrain_job")
    def retrain_job():
        tune()

    (paths.dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
    with dg.DagsterInstance.from_config(str(paths.dagster_home)) as instance:
        assert retrain_job.execute_in_process(instance=instance, tags={"gen_assets/trigger": "feedback"}).success


@pytest.fixture(scope="session")
def built_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("web") / "home"
    build_home(home)
    return home


@pytest.fixture
def home(built_home, tmp_path) -> Path:
    """A private copy of the built home (its batch files stay shared: they are only read)."""
    return Path(shutil.copytree(built_home, tmp_path / "home"))


def test_config(**overrides) -> WebConfig:
    settings = {"busy_retry_seconds": 0.3, "busy_backoff_seconds": 0.2, "page_size": 8, "secret": b"s" * 32,
                "dagster_url": "http://dagster.test:3000", "allowed_hosts": ("testserver", "127.0.0.1", "localhost"),
                **overrides}
    return WebConfig(**settings)


test_config.__test__ = False  # a helper, not a test


@pytest.fixture
def make_client(home):
    """make_client(**config) -> a Starlette TestClient of the app over the test's home."""
    from starlette.testclient import TestClient

    clients = []

    def make(home_dir: Path | None = None, **config):
        client = TestClient(create_app(Paths(home_dir or home), test_config(**config)), follow_redirects=False)
        clients.append(client.__enter__())  # one event loop for all its requests
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


def incoming_rows(home: Path) -> list[dict]:
    """Every rating waiting in the landing zone, as the JSON objects of its files."""
    rows = []
    for path in sorted((home / "feedback" / "incoming").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


HOLD = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS retrain_in_progress AS SELECT 1 AS x")  # a commit: the file changes
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin (or ends: then stdin closes too)
"""


@contextmanager
def holding_warehouse(path: Path):
    """Another process holds the warehouse for writing, like a retrain does, until the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def live_server(app):
    """The app under a real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
