"""The Dagster UI's global asset graph reads at a glance: one lane per modality (image, text) and the shared
feedback between them, every asset drawn.

Starts `dagster dev` on this checkout's definitions with a fresh DAGSTER_HOME and looks at it in headless
Chromium at 2400x1400. With GEN_ASSETS_SCREENSHOTS=1 it writes the README's picture, docs/asset_graph.png.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from gen_assets_tests.defs.test_definitions import EXPECTED_ASSETS
from gen_assets_tests.web.conftest import INSTANCE_YAML, NEEDS_CHROMIUM, screenshot

pytestmark = NEEDS_CHROMIUM

ROOT = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).parent / "dagster"
# `dagster dev` started from a shell with `&` inherits ignored SIGINT/SIGTERM and then cannot be stopped:
# the wrapper restores the default handlers before it becomes dagster
WRAPPER = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
           "signal.signal(signal.SIGTERM, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def dagster_dev(tmp_path: Path):
    """`dagster dev` on gen_assets.definitions with a fresh instance; yields its URL, stops it by its PID."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "GEN_ASSETS_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = (tmp_path / "dagster_dev.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(DAGSTER), "dev", "-m", "gen_assets.definitions", "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # loading the definitions imports torch; slow on a busy machine
        while True:
            try:
                with urllib.request.urlopen(url + "/server_info", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dagster dev did not start: {(tmp_path / 'dagster_dev.log').read_text()[-3000:]}")
                time.sleep(1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # dagster dev stops its webserver and daemon
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own process group (start_new_session)
            proc.wait()
        log.close()


def shown_as(label: str, name: str) -> bool:
    """The UI shows a long name with its middle elided (tuned_i…_generator)."""
    head, dots, tail = label.partition("…")
    return label == name or bool(dots and name.startswith(head) and name.endswith(tail))


def test_the_global_asset_graph_shows_every_asset_in_its_lane(browser, tmp_path):
    with dagster_dev(tmp_path) as url:
        page = browser.new_page(viewport={"width": 2400, "height": 1400})
        page.set_default_timeout(60_000)
        page.goto(url + "/asset-groups", wait_until="networkidle")
        page.wait_for_selector("button:has([aria-label=zoom_out])")  # the graph is drawn (its groups collapsed)
        skip = page.get_by_role("button", name="Skip")  # the community dialog of a new instance
        if skip.count():
            skip.click()
        page.get_by_role("button", name="Hide navigation").click()
        page.locator("button:has([aria-label=panel_show_right])").click()  # the asset tree: the graph gets the room
        page.mouse.move(1200, 700)
        page.keyboard.press("Alt+e")  # expand all groups: the lanes with their assets
        names = page.locator("[class*=AssetNode_assetName]")
        lanes = [page.locator("foreignObject").get_by_text(lane, exact=True) for lane in ("image", "text")]  # headers
        zoom_out = page.locator("button:has([aria-label=zoom_out])")

        def drawn() -> list[dict]:
            page.wait_for_timeout(1000)
            return [names.nth(i).bounding_box() for i in range(names.count())] + [
                lane.first.bounding_box() for lane in lanes if lane.count()]

        def inside(b: dict) -> bool:  # in the window, below the page header and the search bar
            return 0 <= b["x"] and b["x"] + b["width"] <= 2400 and 115 <= b["y"] and b["y"] + b["height"] <= 1400

        # Zoom out until every asset and lane header is drawn and the whole is small enough for the window, then
        # drag the background so that it sits in the middle, and look again: a drag is recomputed from the boxes
        # drawn after the last one, and when two drags at one zoom level do not bring every box inside, zoom out
        # one step more. A zoom step shrinks the graph by about a fourteenth of its first size.
        steps, drags = [], 0
        for _ in range(20):
            boxes = drawn()
            if len(boxes) == len(EXPECTED_ASSETS) + len(lanes):  # fewer: some lie outside the window, not drawn
                left, top = min(b["x"] for b in boxes), min(b["y"] for b in boxes)
                right, bottom = max(b["x"] + b["width"] for b in boxes), max(b["y"] + b["height"] for b in boxes)
                dx, dy = 1200 - (left + right) / 2, 757 - (top + bottom) / 2  # to the middle, below the search bar
                if right - left < 2300 and bottom - top < 1200:
                    if all(map(inside, boxes)) and (drags == 2 or abs(dx) <= 20 and abs(dy) <= 20):
                        break
                    if drags < 2:
                        # from the graph's background at the bottom left, right of the navigation rail (x < 68)
                        steps.append(f"drag by ({dx:.0f}, {dy:.0f}), boxes in ({left:.0f}, {top:.0f})-"
                                     f"({right:.0f}, {bottom:.0f})")
                        page.mouse.move(120, 1380)
                        page.mouse.down()
                        page.mouse.move(120 + dx, 1380 + dy, steps=10)
                        page.mouse.up()
                        drags += 1
                        continue
            steps.append(f"zoom out, {len(boxes)} boxes drawn")
            zoom_out.click()
            drags = 0
        boxes = drawn()
        assert all(0 <= b["x"] and b["x"] + b["width"] <= 2400 and 115 <= b["y"] and b["y"] + b["height"] <= 1400
                   for b in boxes), (steps, [b for b in boxes if not inside(b)], boxes)
        labels = names.all_inner_texts()
        assert len(labels) == len(EXPECTED_ASSETS)
        assert all(any(shown_as(label, name) for label in labels) for name in EXPECTED_ASSETS), labels
        assert [lane.count() for lane in lanes] == [1, 1]
        screenshot(page, "asset_graph.png")
        page.close()
