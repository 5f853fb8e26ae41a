"""Latency of the content API under load: `GET /api/content` and `POST /api/events` at a fixed request rate.

    python benchmarks/serving_load.py [--rate 200] [--seconds 30] [--events-share 1.0] [--modality text]
                                      [--cache-dir DIR] [--json FILE]

The server is the product's (`python -m gen_assets.web`, one uvicorn process) over a copy of the demo
profile's home (built once under --cache-dir by `gen-assets run --profile demo`, as
benchmarks/preference_suite.py does). The load is open-loop: requests are started on a fixed schedule,
--rate per second, whatever the answers' speed, by a pool of client threads with kept-alive connections
(as a page's backend would call it); each content request is followed, for --events-share of them, by
its impression (and a click for 5%) in one `POST /api/events`. Latency is measured from the request's
scheduled start to its answer, so a server that falls behind shows it. Client and server share the
machine's cores. Goal (issue 16): p99 of /api/content < 20 ms at 200 requests/s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from preference_suite import product_home  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(home: Path, port: int) -> subprocess.Popen:
    import requests

    env = {**os.environ, "GEN_ASSETS_HOME": str(home), "GEN_ASSETS_WEB_SECRET": "serving-load"}
    proc = subprocess.Popen([sys.executable, "-m", "gen_assets.web", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/status", timeout=1)
            return proc
        except requests.RequestException:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the server did not start")
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    import requests

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="content requests per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--events-share", type=float, default=1.0, help="share of serves whose events are posted")
    parser.add_argument("--modality", choices=["image", "text"], default="text")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "benchmarks" / "preference_suite")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    cached = product_home(args.cache_dir, args.modality)
    home = args.cache_dir / f"serving_load_{args.modality}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(cached, home, ignore=shutil.ignore_patterns("*.wal"))
    port = free_port()
    server = start(home, port)
    base = f"http://127.0.0.1:{port}"
    local = threading.local()
    categories = sorted({s["category"] for s in requests.get(f"{base}/api/samples", params={
        "modality": args.modality, "per_page": 100}).json()["samples"]})
    content_ms, events_ms, errors = [], [], []
    lock = threading.Lock()
    rng = np.random.default_rng(0)
    n = int(args.rate * args.seconds)
    plan = [(i / args.rate, categories[int(rng.integers(len(categories)))], f"user-{int(rng.integers(5000))}",
             bool(rng.random() < args.events_share), bool(rng.random() < 0.05)) for i in range(n)]

    def one(t0: float, scheduled: float, category: str, user: str, post: bool, click: bool) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        start_at = t0 + scheduled
        try:
            r = session.get(f"{base}/api/content", params={"category": category, "user_id": user}, timeout=10)
            done = time.perf_counter()
            if r.status_code != 200:
                raise RuntimeError(f"content {r.status_code}: {r.text[:200]}")
            if post:
                events = [{"serve_id": r.json()["serve_id"], "event": "impression"}]
                if click:
                    events.append({"serve_id": events[0]["serve_id"], "event": "click"})
                sent = time.perf_counter()
                e = session.post(f"{base}/api/events", json={"events": events}, timeout=10)
                if e.status_code != 202:
                    raise RuntimeError(f"events {e.status_code}: {e.text[:200]}")
                with lock:
                    events_ms.append(1000 * (time.perf_counter() - sent))
            with lock:
                content_ms.append(1000 * (done - start_at))
        except Exception as exc:  # noqa: BLE001 -- counted and reported
            with lock:
                errors.append(str(exc))

    try:
        for _ in range(50):  # warm-up: connections, the first snapshot
            requests.get(f"{base}/api/content", params={"category": categories[0]})
        with ThreadPoolExecutor(args.threads) as pool:
            t0 = time.perf_counter()
            for scheduled, *rest in plan:
                delay = t0 + scheduled - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(one, t0, scheduled, *rest)
        wall = time.perf_counter() - t0
    finally:
        server.kill()
        server.wait()
    landed = sum(1 for p in (home / "feedback" / "events" / "incoming").glob("*.jsonl"))
    c, e = np.array(content_ms), np.array(events_ms)
    result = {"rate": args.rate, "seconds": args.seconds, "requests": n, "answered": len(c), "errors": len(errors),
              "achieved_rate": len(c) / wall, "event_files": landed,
              "content_ms": {q: float(np.percentile(c, q)) for q in (50, 95, 99)} if len(c) else {},
              "events_ms": {q: float(np.percentile(e, q)) for q in (50, 95, 99)} if len(e) else {}}
    print(f"\n== {args.modality} content API at {args.rate:.0f} requests/s for {args.seconds:.0f} s "
          f"(+ events for {100 * args.events_share:.0f}% of serves), client and server on {os.cpu_count()} cores ==")
    print(f"{'endpoint':<18}{'answered':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name, arr, q in (("GET /api/content", c, result["content_ms"]), ("POST /api/events", e, result["events_ms"])):
        if len(arr):
            print(f"{name:<18}{len(arr):>10}{q[50]:>9.1f}{q[95]:>9.1f}{q[99]:>9.1f}")
    print(f"achieved {result['achieved_rate']:.0f} requests/s, {len(errors)} errors, {landed} event files landed")
    if errors:
        print("first error:", errors[0])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
