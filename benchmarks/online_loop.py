"""The business loop, simulated: customers see served content, click or not, and the graph learns from it.

    python benchmarks/online_loop.py [--days 3] [--requests-per-day 20000] [--users 2000] [--experiments 200]
                                     [--seed 0] [--cache-dir DIR] [--json FILE]

Part 1, the live loop (everything real but the customers). The product's demo image home (`gen-assets run
--modality image --profile demo`, kept under --cache-dir) is copied to a fresh home whose project file
makes a candidate that passes the offline gate a challenger (`gate.image.challenger_share: 0.5`). The
review server runs on a loopback port (uvicorn). Each simulated day:
  1. --requests-per-day requests, spread over the hours by a daily rhythm, each from one of --users users
     for a random category: `GET /api/content?category=&user_id=` (the real bandit, the real serve ids);
  2. the user sees the image (an impression) and clicks with a hidden propensity, sent back through
     `POST /api/events` (in batches of up to 90 events, as a page's backend forwards its beacons);
  3. after each day the real graph runs: `gen-assets retrain --modality image` (events ingested by the
     `events` asset; the reward model fitted on clicks, inverse-propensity weighted; the generator tuned
     toward it; the champion's gate; an experiment started or decided; a new batch generated and curated).
Users: segments with different tastes (what they click more: bold strokes, digits that sit high, compact
digits; see SEGMENTS), each user's own multiplier (lognormal noise), and an hour-of-day rhythm in traffic
and in clicks. A user's click propensity for an image: base x rhythm(hour) x the user's multiplier x
exp(gain x (percentile of the image's property among the real images - 0.5)), the percentile of the
user's segment's property (as benchmarks/preference_suite.py's rater).
Measured per day: the click-through rate of what was served (real clicks / impressions), the expected
click-through of random serving among the same curated samples (same requests, same users), and of an
oracle that serves each request the curated sample the user is most likely to click; regret = oracle's
expected clicks minus the served ones'.

Part 2, experiments between models (--experiments replications, in process, the server's own allocation
code: gen_assets.web.serving.Serving over snapshots of the counts, and the `experiments` asset's rule with
its defaults, gen_assets.rules.bandit.summarise_experiment). A champion with click rate 4% against a
challenger that is better (+25%) or worse (-20%); --experiment-days days of 4000 requests; the
experiment is looked at once a day (as a daily graph run does) and stops at a decision. Bandit
allocation (Thompson sampling between the two models, each keeping 10%) against a fixed 50/50 split of
the same length: how often each promotes the better model / the worse one, after how many days, and
the regret (clicks lost against always serving the better model).

Goals (issue 16): the bandit's regret <= 50% of the fixed split's; the better model promoted in >= 95% of
the experiments and the worse one in <= 5%; click-through on day 3 >= +30% over day 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

from preference_suite import IMAGE_TASTES, Rater, product_home  # noqa: E402

from gen_assets import cli  # noqa: E402
from gen_assets.cleaning.images import categories as image_categories, load_images  # noqa: E402
from gen_assets.media.png import decode_image  # noqa: E402
from gen_assets.rules.bandit import summarise_experiment  # noqa: E402
from gen_assets.settings import Paths  # noqa: E402
from gen_assets.training.image_data import images_to_tensor  # noqa: E402
from gen_assets.web.catalog import Snapshot  # noqa: E402
from gen_assets.web.serving import ServeTokens, Serving, ServingSettings  # noqa: E402

SEGMENTS = {"bold strokes (ink)": 0.5, "sits high": 0.25, "compact (small spread)": 0.25}  # taste: share of users
BASE_CTR, GAIN = 0.04, 2.0
PROJECT = "gate:\n  image:\n    challenger_share: 0.5\n"


def traffic_by_hour() -> tuple[np.ndarray, np.ndarray]:
    """(share of the day's requests per hour, click multiplier per hour): a peak in the evening, a trough at night."""
    hours = np.arange(24)
    traffic = 1.0 + 0.8 * np.sin(2 * np.pi * (hours - 14) / 24)
    clicks = 1.0 + 0.25 * np.sin(2 * np.pi * (hours - 15) / 24)
    return traffic / traffic.sum(), clicks


class Population:
    """Users with a hidden taste each (a segment), a personal multiplier and the day's rhythm."""

    def __init__(self, n_users: int, real_x: torch.Tensor, real_y: torch.Tensor, seed: int):
        rng = np.random.default_rng(seed)
        names = list(SEGMENTS)
        self.segment = rng.choice(len(names), size=n_users, p=list(SEGMENTS.values()))
        self.multiplier = rng.lognormal(0.0, 0.3, size=n_users)
        self.tastes = [IMAGE_TASTES[n] for n in names]
        self.raters = [Rater(t(real_x, real_y), 0.0, seed) for t in self.tastes]
        self.traffic, self.rhythm = traffic_by_hour()
        self.rng = rng

    def percentiles(self, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """(segments, N): each image's percentile of each segment's property among the real images."""
        return np.stack([r.percentile(t(x, y)) for r, t in zip(self.raters, self.tastes)])

    def propensity(self, user: int, hour: int, pct: np.ndarray) -> np.ndarray:
        """Click probability of `user` at `hour` for images with percentiles pct (segments, N)."""
        p = BASE_CTR * self.rhythm[hour] * self.multiplier[user] * np.exp(GAIN * (pct[self.segment[user]] - 0.5))
        return np.clip(p, 0.0, 0.5)


# ---- part 1: the live loop ------------------------------------------------------------------------------


def start_server(paths: Paths):
    import uvicorn

    from gen_assets.web.app import create_app
    from gen_assets.web.config import WebConfig

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app = create_app(paths, WebConfig(secret=b"online-loop" * 3, busy_retry_seconds=5.0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def curated_pool(paths: Paths, population: Population, categories: list[str]) -> dict:
    """What may be served now: per (category, model version) the curated samples and their percentiles."""
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        rows = con.execute("SELECT sample_id, category, model_version, content FROM curated "
                           "WHERE modality = 'image' AND NOT exploratory").fetchall()
    x = images_to_tensor(np.stack([decode_image(bytes(c), 1) for *_, c in rows]))
    y = torch.tensor([categories.index(str(c)) for _, c, *_ in rows])
    pct = population.percentiles(x, y)
    return {"ids": [r[0] for r in rows], "category": [str(r[1]) for r in rows], "version": [r[2] for r in rows],
            "index": {r[0]: i for i, r in enumerate(rows)}, "pct": pct}


def live_day(base: str, pool: dict, population: Population, categories: list[str], requests: int, day: int,
             session) -> dict:
    rng = population.rng
    served_p, random_p, oracle_p, clicks, errors, latencies, arms, pending = [], [], [], 0, 0, [], {}, []
    arm_clicks: dict[str, int] = {}
    cat_members = {c: np.array([i for i, pc in enumerate(pool["category"]) if pc == c]) for c in categories}
    hours = rng.choice(24, size=requests, p=population.traffic)
    for r in range(requests):
        user, hour = int(rng.integers(len(population.segment))), int(hours[r])
        category = categories[int(rng.integers(len(categories)))]
        t0 = time.perf_counter()
        answer = session.get(f"{base}/api/content", params={"category": category, "user_id": f"user-{user}"})
        latencies.append(time.perf_counter() - t0)
        if answer.status_code != 200:
            errors += 1
            continue
        body = answer.json()
        i = pool["index"][body["sample_id"]]
        members = cat_members[category]
        arm_members = members[[pool["version"][j] == body["model_version"] for j in members]]
        p_all = population.propensity(user, hour, pool["pct"][:, arm_members])
        p = float(population.propensity(user, hour, pool["pct"][:, [i]])[0])
        served_p.append(p)
        random_p.append(float(p_all.mean()))
        oracle_p.append(float(p_all.max()))
        clicked = rng.random() < p
        clicks += clicked
        arms[body["arm"]] = arms.get(body["arm"], 0) + 1
        arm_clicks[body["arm"]] = arm_clicks.get(body["arm"], 0) + clicked
        pending.append({"serve_id": body["serve_id"], "event": "impression", "ts": f"2026-12-0{day}T{hour:02d}:00:00Z"})
        if clicked:
            pending.append({"serve_id": body["serve_id"], "event": "click", "ts": f"2026-12-0{day}T{hour:02d}:00:30Z"})
        if len(pending) >= 90 or r == requests - 1:  # the page's backend sends its beacons in small batches
            errors += session.post(f"{base}/api/events", json={"events": pending}).status_code != 202
            pending = []
    n = len(served_p)
    lat = np.array(latencies) * 1000
    return {"day": day, "requests": requests, "served": n, "errors": errors, "clicks": clicks,
            "ctr": clicks / max(n, 1), "expected_ctr": float(np.mean(served_p)), "random_ctr": float(np.mean(random_p)),
            "oracle_ctr": float(np.mean(oracle_p)), "regret": float(np.sum(oracle_p) - np.sum(served_p)),
            "regret_random": float(np.sum(oracle_p) - np.sum(random_p)), "arms": arms,
            "arm_ctr": {a: arm_clicks.get(a, 0) / n_a for a, n_a in arms.items()},
            "content_p50_ms": float(np.percentile(lat, 50)), "content_p99_ms": float(np.percentile(lat, 99))}


def live_loop(args, log) -> dict:
    import requests as http

    cached = product_home(args.cache_dir, "image")
    work = args.cache_dir / "online_loop_home"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(cached, work, ignore=shutil.ignore_patterns("*.wal"))
    (work / "gen_assets.yaml").write_text(PROJECT)
    os.environ["GEN_ASSETS_HOME"] = str(work)
    paths = Paths(work)
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        train = load_images(con, split="train")
        categories = [str(c) for c in image_categories(con)]  # the product's order: the generators' class indices
    index = {c: i for i, c in enumerate(categories)}
    population = Population(args.users, images_to_tensor(train.images),
                            torch.tensor([index[str(c)] for c in train.labels]), args.seed)
    server, thread, base = start_server(paths)
    days, graph = [], []
    try:
        with http.Session() as session:
            for day in range(1, args.days + 1):
                pool = curated_pool(paths, population, categories)
                t0 = time.perf_counter()
                days.append(live_day(base, pool, population, categories, args.requests_per_day, day, session))
                d = days[-1]
                log(f"day {day}: {d['served']} served in {time.perf_counter() - t0:.0f} s, CTR {100 * d['ctr']:.2f}% "
                    f"(expected {100 * d['expected_ctr']:.2f}%, random {100 * d['random_ctr']:.2f}%, oracle "
                    f"{100 * d['oracle_ctr']:.2f}%), arms {d['arms']}, p99 {d['content_p99_ms']:.1f} ms")
                # the graph runs after every day: after the last, to show the experiment's decision
                t0 = time.perf_counter()
                status = cli.main(["retrain", "--modality", "image", "--profile", "demo"])
                graph.append({"after_day": day, "status": status, "seconds": time.perf_counter() - t0,
                              **decisions(paths)})
                log(f"  graph run after day {day}: exit {status} in {graph[-1]['seconds']:.0f} s; "
                    f"{graph[-1]['last_decision']}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return {"days": days, "graph": graph}


def decisions(paths: Paths) -> dict:
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        last = con.execute("SELECT action, model_version, reason FROM promotions WHERE modality = 'image' "
                           "ORDER BY acted_at DESC LIMIT 1").fetchone()
        exps = con.execute("SELECT experiment_id, status, figures FROM experiments ORDER BY started_at").fetchall()
    return {"last_decision": f"{last[0]} {last[1]}: {last[2][:160]}" if last else "none",
            "experiments": [{"experiment_id": e, "status": s, "figures": json.loads(f) if f else {}} for e, s, f in exps]}


# ---- part 2: experiments, bandit against a fixed split ---------------------------------------------------


def experiment_run(allocation: str, rates: tuple[float, float], days: int, per_day: int, seed: int,
                   daily_looks: bool = True) -> dict:
    """One experiment of `days` days; the server's allocation code and the experiments asset's rule, looked at
    once a day (`daily_looks`) or once at the end (a classic fixed-horizon A/B test)."""
    from gen_assets.defs.assets.experiments import ExperimentsConfig

    rng = np.random.default_rng(seed)
    serving = Serving(ServeTokens(b"k" * 32), Path("/nonexistent"), ServingSettings(refresh_seconds=0.0))
    experiment = {"experiment_id": f"e{seed}", "champion": "a", "challenger": "b", "allocation": allocation,
                  "challenger_share": 0.5}
    counts = {"champion": [0, 0], "challenger": [0, 0]}
    rule = ExperimentsConfig().rule()
    best = max(rates)
    regret, decided, decision = 0.0, None, "continue"
    batch = 100  # the server recomputes its shares at most every refresh_seconds: here every 100 requests
    for day in range(1, days + 1):
        for start in range(0, per_day, batch):
            snap = Snapshot(arm_counts={(experiment["experiment_id"], a): tuple(c) for a, c in counts.items()},
                            signature=(day, start))
            shares = serving.experiment_shares(snap, experiment)
            n_b = int(rng.binomial(batch, shares[1]))
            for arm, n, rate in (("champion", batch - n_b, rates[0]), ("challenger", n_b, rates[1])):
                counts[arm][0] += n
                counts[arm][1] += int(rng.binomial(n, rate))
                regret += n * (best - rate)
        if not daily_looks and day < days:
            continue
        summary = summarise_experiment(tuple(counts["champion"]), tuple(counts["challenger"]), rule, seed=seed)
        if summary.decision != "continue":
            decided, decision = day, summary.decision
            break
    # after a decision all traffic goes to the kept model until the end of the same horizon
    if decided is not None and decided < days:
        kept = rates[1] if decision == "promote" else rates[0]
        regret += (days - decided) * per_day * (best - kept)
    return {"allocation": allocation, "decision": decision, "day": decided, "regret": regret,
            "challenger_share": counts["challenger"][0] / max(1, counts["champion"][0] + counts["challenger"][0])}


def experiments_part(args, log) -> list[dict]:
    rows = []
    for label, rates in (("challenger better (+25%)", (0.04, 0.05)), ("challenger worse (-20%)", (0.04, 0.032))):
        for allocation, daily in (("bandit", True), ("fixed", False), ("fixed", True)):
            runs = [experiment_run(allocation, rates, args.experiment_days, args.experiment_requests,
                                   args.seed * 100000 + i, daily_looks=daily) for i in range(args.experiments)]
            better = rates[1] > rates[0]
            promoted = np.mean([r["decision"] == "promote" for r in runs])
            days = [r["day"] for r in runs if r["day"] is not None]
            rows.append({"case": label, "allocation": allocation, "looks": "daily" if daily else "at the end",
                         "runs": len(runs),
                         "right": float(promoted if better else np.mean([r["decision"] != "promote" for r in runs])),
                         "promoted": float(promoted), "decided": len(days) / len(runs),
                         "median_days": float(np.median(days)) if days else None,
                         "regret": float(np.mean([r["regret"] for r in runs])),
                         "challenger_share": float(np.mean([r["challenger_share"] for r in runs]))})
            r = rows[-1]
            log(f"{label:<26} {allocation:<7} {rows[-1]['looks']:<11} promoted {100 * r['promoted']:5.1f}%  decided {100 * r['decided']:5.1f}%  "
                f"median day {r['median_days']}  regret {r['regret']:.0f} clicks")
    return rows


def print_tables(result: dict) -> None:
    if result.get("live"):
        days = result["live"]["days"]
        print("\n== the live loop: served through /api/content, events through /api/events, the graph between days ==")
        print(f"{'day':>4}{'served':>8}{'CTR':>8}{'random':>8}{'oracle':>8}{'vs random':>11}{'regret':>9}"
              f"{'regret (random)':>17}{'p50 ms':>8}{'p99 ms':>8}  arms (their CTR)")
        for d in days:
            print(f"{d['day']:>4}{d['served']:>8}{100 * d['ctr']:>7.2f}%{100 * d['random_ctr']:>7.2f}%"
                  f"{100 * d['oracle_ctr']:>7.2f}%{100 * (d['expected_ctr'] / d['random_ctr'] - 1):>+10.0f}%"
                  f"{d['regret']:>9.0f}{d['regret_random']:>17.0f}{d['content_p50_ms']:>8.1f}{d['content_p99_ms']:>8.1f}"
                  "  " + ", ".join(f"{a} {n} ({100 * d.get('arm_ctr', {}).get(a, 0):.2f}%)" for a, n in d["arms"].items()))
        first, last = days[0], days[-1]
        print(f"click-through day {last['day']} vs day 1: {100 * (last['ctr'] / first['ctr'] - 1):+.0f}% (real clicks), "
              f"{100 * (last['expected_ctr'] / first['expected_ctr'] - 1):+.0f}% (expected)")
        for g in result["live"]["graph"]:
            why = " (the blocking check: the reward model does not predict yet, nothing downstream ran)" \
                if g["status"] else ""
            print(f"graph after day {g['after_day']}: exit {g['status']}{why}, {g['seconds']:.0f} s; "
                  f"last decision: {g['last_decision']}")
        for e in result["live"]["graph"][-1]["experiments"] if result["live"]["graph"] else []:
            f = e["figures"]
            arms = ", ".join(f"{a['arm']} {a['clicks']}/{a['impressions']}" for a in f.get("arms", []))
            print(f"experiment {e['experiment_id']}: {e['status']}; {arms}; "
                  f"P(challenger better) {f.get('p_challenger_beats', float('nan')):.3f}")
    if result.get("experiments"):
        rows = result["experiments"]
        print("\n== experiments between models: bandit allocation against a fixed 50/50 split of the same length ==")
        print(f"{'case':<27}{'split':<8}{'looks':<12}{'runs':>5}{'right call':>12}{'promoted':>10}{'decided':>9}{'median day':>12}"
              f"{'regret':>9}{'challenger share':>18}")
        for r in rows:
            day = "-" if r["median_days"] is None else f"{r['median_days']:.0f}"
            print(f"{r['case']:<27}{r['allocation']:<8}{r['looks']:<12}{r['runs']:>5}{100 * r['right']:>11.1f}%{100 * r['promoted']:>9.1f}%"
                  f"{100 * r['decided']:>8.1f}%{day:>12}{r['regret']:>9.0f}{100 * r['challenger_share']:>17.0f}%")
        for case in dict.fromkeys(r["case"] for r in rows):
            b = next(r for r in rows if r["case"] == case and r["allocation"] == "bandit")
            f = next(r for r in rows if r["case"] == case and r["looks"] == "at the end")
            d = next(r for r in rows if r["case"] == case and r["allocation"] == "fixed" and r["looks"] == "daily")
            print(f"{case}: bandit regret {100 * b['regret'] / max(f['regret'], 1e-9):.0f}% of the fixed 50/50 A/B "
                  f"test's, {100 * b['regret'] / max(d['regret'], 1e-9):.0f}% of a 50/50 split looked at daily")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--requests-per-day", type=int, default=20000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--experiments", type=int, default=200, help="simulated experiments per case and allocation")
    parser.add_argument("--experiment-days", type=int, default=7)
    parser.add_argument("--experiment-requests", type=int, default=4000, help="requests per day in an experiment")
    parser.add_argument("--part", choices=["live", "experiments", "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "benchmarks" / "preference_suite")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--from-json", type=Path, default=None, help="print the tables of an earlier --json file")
    args = parser.parse_args(argv)
    if args.from_json:
        print_tables(json.loads(args.from_json.read_text()))
        return 0
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    log = lambda m: print(m, flush=True)  # noqa: E731
    result: dict = {}
    t0 = time.perf_counter()
    if args.part in ("experiments", "all"):
        result["experiments"] = experiments_part(args, log)
    if args.part in ("live", "all"):
        result["live"] = live_loop(args, log)
    result["seconds"] = time.perf_counter() - t0
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    print_tables(result)
    print(f"({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
