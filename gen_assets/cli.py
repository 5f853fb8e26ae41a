"""gen-assets: run the graph through Dagster (runs recorded in GEN_ASSETS_HOME/dagster_home) and report."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gen_assets.project.file import ENV_VAR as PROJECT_ENV_VAR, ProjectError
from gen_assets.settings import PROFILES, Paths

INSTANCE_YAML = """\
# Dagster instance of gen_assets: SQLite storage in this folder (the default), no telemetry.
telemetry:
  enabled: false
"""


def prepare_dagster_home(paths: Paths) -> Path:
    """Point DAGSTER_HOME at GEN_ASSETS_HOME/dagster_home so `make ui` sees the same runs."""
    home = paths.ensure().dagster_home
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def champions_in(paths: Paths, modalities: set[str], profile: str) -> set[str]:
    """The modalities of these whose champion was decided under another profile's gate (or the project's):
    `profile` may not loosen their gate."""
    from gen_assets.store import registry
    from gen_assets.store import warehouse as wh

    if not modalities or not paths.warehouse.exists():
        return set()
    with wh.connect(paths.warehouse, read_only=True, artifacts=paths.artifacts_location) as con:
        champions = {m: registry.champion(con, m) for m in modalities}
    return {m for m, c in champions.items() if c is not None and c["gate_profile"] != profile}


def execute(job_name: str, profile: str, modality: str, verbose: bool, asset_selection: list[str] | None = None,
            config: dict[str, dict] | None = None, report: bool = True) -> int:
    """Run a job of the definitions through Dagster (recorded in the instance, tagged with the profile and
    the modality: image, text or all), then print the report.

    The run config is the project file's settings with the profile's laid over them
    (gen_assets.project.effective); config: asset name -> fields laid over both (a person's decision)."""
    import warnings

    import dagster as dg

    from gen_assets.definitions import build_definitions, project_for
    from gen_assets.defs.jobs import run_tags
    from gen_assets.defs.stale_runs import start_runs
    from gen_assets.project.effective import GATE_FIELDS

    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # DataVersion on outputs: used on purpose
    paths = Paths.from_env()
    prepare_dagster_home(paths)
    defs = build_definitions(paths)
    project = project_for(paths)
    job = defs.resolve_job_def(job_name)
    selection = [dg.AssetKey(key) for key in asset_selection] if asset_selection else None
    ops = set(asset_selection) if asset_selection else set(job.graph.node_dict)
    champions = champions_in(paths, {modality for asset, (modality, _) in GATE_FIELDS.items() if asset in ops}, profile)
    run_config = project.run_config(ops, profile, champions, config)
    # the terminal shows progress and results; every event, debug ones too, is in the instance for the UI
    run_config["loggers"] = {"console": {"config": {"log_level": "DEBUG" if verbose else "INFO"}}}
    source = f"the project file {project.file.path}" if project.file.path else "no project file"
    print(f"gen-assets: running {job.name} with the {profile} profile and {source}; home {paths.home}", flush=True)
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False, asset_selection=selection,
            # start_runs fails the runs whose process died and tags this run with its pid
            tags={**start_runs(instance), **run_tags(profile, modality)},
        )
    refused = [ev for ev in result.get_asset_check_evaluations() if not ev.passed]
    for ev in refused:
        kind = "blocked the assets downstream" if ev.blocking else ev.severity.value.lower()
        print(f"check {ev.asset_check_key.to_user_string()} failed ({kind}): {ev.description or ''}".rstrip(),
              file=sys.stderr)
    if not result.success:
        blocked = {ev.asset_check_key.to_user_string().replace(":", "_") for ev in refused if ev.blocking}
        failures = [e for e in result.all_events if e.is_step_failure and e.step_key not in blocked]
        for event in failures:
            err = event.step_failure_data.error
            while err is not None and err.cause is not None:  # the user code's own error, not Dagster's wrapper
                err = err.cause
            failure = event.step_failure_data.user_failure_data  # a dg.Failure: its description says it all
            message = failure.description if failure and failure.description else (
                err.message.strip() if err else "unknown error")
            print(f"step {event.step_key} failed: {message}", file=sys.stderr)
        return 1
    print(f"run {result.run_id} succeeded\n")
    return cmd_report(argparse.Namespace(json=False)) if report else 0


def cmd_run(args: argparse.Namespace) -> int:
    from gen_assets.defs.jobs import JOBS_BY_MODALITY

    return execute(JOBS_BY_MODALITY[args.modality], args.profile, args.modality, args.verbose)


def cmd_retrain(args: argparse.Namespace) -> int:
    """What feedback_sensor requests, on demand: retrain_job for one modality (or both)."""
    from gen_assets.defs.jobs import RETRAIN_ASSETS

    modalities = ["image", "text"] if args.modality == "all" else [args.modality]
    keys = sorted({key for m in modalities for key in RETRAIN_ASSETS[m]})
    return execute("retrain_job", args.profile, args.modality, args.verbose, keys)


def report(paths: Paths) -> dict:
    """`models`: the champion of each modality with its latest metrics and files (the stable interface);
    `registry`: per modality the champion, newer candidates, recent promotion decisions, the metric trend
    and the trend plot, written to artifacts/reports/metric_trend_<modality>.png."""
    from gen_assets.store import warehouse as wh

    from gen_assets.media.plots import trend_png
    from gen_assets.store.registry import TREND_METRICS, latest_models, registry_summary
    from gen_assets.store.files import atomic_write_bytes

    if not paths.warehouse.exists():
        return {"models": [], "registry": {}}
    with wh.connect(paths.warehouse, read_only=True, artifacts=paths.artifacts_location) as con:
        data = {"models": latest_models(con), "registry": registry_summary(con)}
    for modality, entry in data["registry"].items():
        if entry["trend"]:
            png = paths.artifacts / "reports" / f"metric_trend_{modality}.png"
            atomic_write_bytes(png, trend_png(entry["trend"], TREND_METRICS.get(modality, ()), f"{modality} metrics"))
            entry["trend_png"] = str(png)
    return data


def format_report(data: dict) -> str:
    if not data["models"]:
        return "no models yet: run `gen-assets run` (or `make run`) first"
    lines = []
    for m in data["models"]:
        lines.append(f"{m['modality']:<6} {m['version']}  arch={m['arch']}  status={m['status']}  created {m['created_at']}")
        for key, value in m["metrics"].items():
            lines.append(f"    {key:<24} {value:12.4f}")
        for key, value in m["artifacts"].items():
            lines.append(f"    {key:<24} {value}")
        entry = data.get("registry", {}).get(m["modality"], {})
        for c in entry.get("candidates", []):
            key = f"  {c['key_metric']}={c['key_value']:.4g}" if c["key_value"] is not None else ""
            lines.append(f"    candidate {c['version']}  created {c['created_at']}{key}")
        for p in entry.get("promotions", [])[:3]:
            lines.append(f"    {p['acted_at'][:19]} {p['action']:<8} {p['model_version']} by {p['actor']}: {p['reason']}")
        trend = entry.get("trend", [])
        if len(trend) > 1:
            keys = [k for k in trend[-1] if k not in ("model_version", "batch_id", "measured_at")]
            shown = ", ".join(f"{k} " + " > ".join(f"{r[k]:.3g}" for r in trend[-5:] if k in r) for k in keys)
            lines.append(f"    trend (last {min(5, len(trend))} evaluations): {shown}")
        if entry.get("trend_png"):
            lines.append(f"    {'trend plot':<24} {entry['trend_png']}")
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    data = report(Paths.from_env())
    print(json.dumps(data, indent=2) if args.json else format_report(data))
    return 0


def has_warehouse(paths: Paths) -> bool:
    """False, and says so, when nothing has run in this GEN_ASSETS_HOME yet."""
    if paths.warehouse.exists():
        return True
    print(f"no warehouse at {paths.warehouse}: run `gen-assets run` first", file=sys.stderr)
    return False


def actor(args: argparse.Namespace) -> str:
    """Who acts: --by, else GEN_ASSETS_USER, else the login name."""
    import getpass

    return args.by or os.environ.get("GEN_ASSETS_USER") or getpass.getuser()


def decide_champion(modality: str, decision: dict, profile: str) -> int:
    """A person's decision is a run of `<modality>_champion` with it in the config (recorded in the instance
    and in `promotions`), so the UI shows what was generated before it as stale."""
    from gen_assets.store import registry
    from gen_assets.store import warehouse as wh

    status = execute("nightly_job", profile, modality, False, [f"{modality}_champion"],
                     {f"{modality}_champion": decision}, report=False)
    if status == 0:
        paths = Paths.from_env()
        with wh.connect(paths.warehouse, read_only=True, artifacts=paths.artifacts_location) as con:
            last = registry.promotion_history(con, modality, limit=1)[0]
        was = f" (was {last['previous_version']})" if last["previous_version"] else ""
        print(f"{modality} champion: {last['model_version']}{was}, by {last['actor']}: {last['reason']}")
    return status


def cmd_promote(args: argparse.Namespace) -> int:
    """A person makes a model champion, whatever the rule says; recorded with who and when."""
    from gen_assets.store import registry
    from gen_assets.store import warehouse as wh

    paths = Paths.from_env()
    if not has_warehouse(paths):
        return 1
    with wh.connect(paths.warehouse, read_only=True, artifacts=paths.artifacts_location) as con:
        try:
            modality = registry.get_model(con, args.version)["modality"]
        except KeyError as e:
            print(e.args[0], file=sys.stderr)
            return 1
    return decide_champion(modality, {"promote": args.version, "by": actor(args), "reason": args.reason},
                           args.profile)


def cmd_rollback(args: argparse.Namespace) -> int:
    """Give the championship back to the previous champion; the demoted model is not auto-promoted again."""
    paths = Paths.from_env()
    if not has_warehouse(paths):
        return 1
    return decide_champion(args.modality, {"rollback": True, "by": actor(args), "reason": args.reason}, args.profile)


def cmd_experiment(args: argparse.Namespace) -> int:
    """List experiments between models, or stop the running one of a modality (the champion stays)."""
    from gen_assets.store import registry
    from gen_assets.store import warehouse as wh

    paths = Paths.from_env()
    if not has_warehouse(paths):
        return 1
    with wh.connect(paths.warehouse, read_only=True, artifacts=paths.artifacts_location) as con:
        running = registry.running_experiments(con)
        history = registry.experiment_history(con, limit=args.limit if args.action == "list" else 1)
    if args.action == "list":
        if not history:
            print("no experiments yet: set challenger_share above 0 in the champion's gate to start one")
        for e in history:
            figures = e["figures"] or {}
            p = figures.get("p_challenger_beats")
            arms = ", ".join(f"{a['arm']} {a['clicks']}/{a['impressions']}" for a in figures.get("arms", []))
            print(f"{e['experiment_id']}  {e['status']:<9} {e['challenger']} vs {e['champion']} ({e['allocation']})"
                  + (f"  {arms}; P(challenger better) {p:.3f}" if p is not None else "")
                  + (f"  -- {e['reason']}" if e["status"] != "running" and e["reason"] else ""))
        return 0
    if args.modality is None:
        print("experiment stop needs --modality image or --modality text", file=sys.stderr)
        return 2
    if args.modality not in running:
        print(f"no {args.modality} experiment is running", file=sys.stderr)
        return 1
    experiment_id = running[args.modality]["experiment_id"]
    status = execute("nightly_job", args.profile, args.modality, False, [f"{args.modality}_champion"],
                     {f"{args.modality}_champion": {"stop_experiment": True, "by": actor(args), "reason": args.reason}},
                     report=False)
    if status == 0:
        print(f"stopped {experiment_id}: the {args.modality} champion {running[args.modality]['champion']} stays")
    return status


def cmd_prune(args: argparse.Namespace) -> int:
    """The retention rules (gen_assets.store.retention) applied now; --dry-run only lists."""
    from gen_assets.store import warehouse as wh

    from gen_assets.store import retention

    paths = Paths.from_env()
    if not paths.warehouse.exists():
        print(f"no warehouse at {paths.warehouse}: nothing to prune")
        return 0
    with wh.connect(paths.warehouse, artifacts=paths.artifacts_location) as con:
        try:
            plan = retention.prune(con, paths.training, keep_models=args.keep_models, keep_batches=args.keep_batches,
                                   dry_run=args.dry_run)
        except ValueError as e:
            print(e.args[0], file=sys.stderr)
            return 1
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb}: {len(plan.models)} model checkpoints, {len(plan.batches)} batches, "
          f"{len(plan.training_dirs)} training run folders")
    for version, path in plan.models:
        print(f"  model {version}  {path}")
    for batch_id, path, _ in plan.batches:
        print(f"  batch {batch_id}  {path}")
    return 0


def cmd_feedback_import(args: argparse.Namespace) -> int:
    """Validate a rating file and drop it into the landing zone atomically; the sensor picks it up."""
    from gen_assets.feedback.landing import FeedbackFileError, import_file, validate_file

    root = Paths.from_env().ensure().feedback
    status = 0
    for name in args.files:
        try:
            summary = validate_file(name)
            landed = import_file(name, root)
        except (FeedbackFileError, OSError) as e:
            print(f"refused: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: {summary.rows} rows -> {landed}")
        for error in summary.errors:
            print(f"  will be quarantined: {error}")
    return status


def cmd_lineage(args: argparse.Namespace) -> int:
    """Model, training data versions, raw sources and feedback files behind one sample."""
    from gen_assets.store import warehouse as wh

    from gen_assets.store.registry import lineage

    paths = Paths.from_env()
    if not has_warehouse(paths):
        return 1
    with wh.connect(paths.warehouse, read_only=True, artifacts=paths.artifacts_location) as con:
        try:
            info = lineage(con, args.sample_id)
        except KeyError as e:
            print(e.args[0], file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"sample {info['sample_id']} ({info['modality']}, category {info['category']}) in batch {info['batch_id']}")
    for depth, m in enumerate(info["models"]):
        print(f"{'  ' * depth}model {m['version']} ({m.get('arch', '?')}, {m.get('status', '?')}, {m.get('created_at', '?')})")
        for key, value in m.get("inputs", {}).items():
            print(f"{'  ' * depth}  {key:<16} {value}")
    for f in info["feedback_files"]:
        print(f"feedback file {f['file']} ({f['ratings']} ratings, sha256 {f['sha256'][:16]}, ingested {f['ingested_at']})")
    for version in info["unrecorded_feedback_versions"]:
        print(f"feedback version {version}: its files were not recorded (tuned before feedback versions recorded them)")
    return 0


def project_location(args: argparse.Namespace) -> tuple[Path, str]:
    from gen_assets.project.file import locate

    location, origin = locate(Paths.from_env().home)
    return location, ("command line (--project)" if getattr(args, "project", None) else origin)


def cmd_init(args: argparse.Namespace) -> int:
    """Write a commented gen_assets.yaml (never over an existing one without --force)."""
    from gen_assets.project.template import render

    path, _ = project_location(args)
    if path.exists() and not args.force:
        print(f"{path} exists already; edit it, or pass --force to replace it", file=sys.stderr)
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(args.images, args.texts))
    print(f"wrote {path}; `gen-assets config` shows the effective settings, `gen-assets run` uses them")
    return 0


def effective_settings(args: argparse.Namespace) -> dict:
    """Every effective setting with where it came from: default, project file, profile, environment."""
    from gen_assets.definitions import project_for
    from gen_assets.project.effective import DEFAULT, GATE_FIELDS, PROJECT
    from gen_assets.settings import DEFAULT_HOME, timezone_from_env

    paths = Paths.from_env()
    project = project_for(paths)
    location, origin = project_location(args)
    env = lambda name: f"environment ({name})" if os.environ.get(name, "").strip() else DEFAULT  # noqa: E731
    general = {
        "home": (str(paths.home), env("GEN_ASSETS_HOME").replace(DEFAULT, f"{DEFAULT} ({DEFAULT_HOME})")),
        "project_file": (str(location) if project.file.path else f"{location} (absent: defaults apply)", origin),
        "artifacts": (str(paths.artifacts), env("GEN_ASSETS_ARTIFACTS")),
        "timezone": (timezone_from_env(), env("GEN_ASSETS_TIMEZONE") if os.environ.get("GEN_ASSETS_TIMEZONE")
                     else env("TZ")),
        "executor": (os.environ.get("GEN_ASSETS_EXECUTOR", "multiprocess"), env("GEN_ASSETS_EXECUTOR")),
    }
    sections = project.file.sections
    for name, section in (("feedback", sections.feedback), ("schedules", sections.schedules)):
        for key in type(section).model_fields:
            general[f"{name}.{key}"] = (getattr(section, key), PROJECT if key in section.model_fields_set else DEFAULT)
    champions = champions_in(paths, {modality for modality, _ in GATE_FIELDS.values()}, args.profile)
    settings = project.settings(args.profile, champions)
    return {"profile": args.profile,
            "general": {k: {"value": v, "origin": o} for k, (v, o) in general.items()},
            "assets": {asset: {k: {"value": s.value, "origin": s.origin} for k, s in fields.items()}
                       for asset, fields in sorted(settings.items())}}


def cmd_config(args: argparse.Namespace) -> int:
    data = effective_settings(args)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(f"effective settings with the {data['profile']} profile (value, then where it came from)")
    for key, s in data["general"].items():
        print(f"  {key:<32} {s['value']!s:<40} {s['origin']}")
    for asset, fields in data["assets"].items():
        print(asset)
        for key, s in fields.items():
            print(f"  {key:<32} {json.dumps(s['value'], default=str):<40} {s['origin']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The review page: rate the champion's curated samples; a dashboard of models, metrics and runs."""
    from gen_assets.web.config import WebConfig
    from gen_assets.web.server import serve

    return serve(Paths.from_env(), WebConfig.from_env(host=args.host, port=args.port))


def cmd_ui(args: argparse.Namespace) -> int:
    """`dagster dev` on the same instance as `gen-assets run`, so its runs show up in the UI."""
    prepare_dagster_home(Paths.from_env())
    root = Path(__file__).resolve().parent.parent
    workspace = root / "workspace.yaml"
    beside = Path(sys.executable).parent / "dagster"  # the venv's own, also when the venv is not activated
    cmd = [str(beside) if beside.exists() else "dagster", "dev", "--host", args.host, "--port", str(args.port)]
    cmd += ["-w", str(workspace)] if workspace.exists() else ["-m", "gen_assets.definitions"]
    os.execvp(cmd[0], cmd)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    project_help = f"the project file (default: ${PROJECT_ENV_VAR}, else GEN_ASSETS_HOME/gen_assets.yaml)"
    parser = argparse.ArgumentParser(prog="gen-assets", description=__doc__)
    parser.add_argument("--project", metavar="PATH", help=project_help)
    with_project = argparse.ArgumentParser(add_help=False)  # --project after the command as well
    with_project.add_argument("--project", metavar="PATH", default=argparse.SUPPRESS, help=project_help)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[with_project],
                         help="materialize the graph (recorded in the Dagster instance) and print a summary")
    run.add_argument("--modality", choices=["image", "text", "all"], default="all")
    run.add_argument("--profile", choices=sorted(PROFILES), default="demo")
    run.add_argument("--verbose", action="store_true", help="print Dagster's debug events too")
    run.set_defaults(func=cmd_run)
    retrain = sub.add_parser("retrain", parents=[with_project], help="ingest waiting feedback and retrain from it now (what the sensor does)")
    retrain.add_argument("--modality", choices=["image", "text", "all"], default="all")
    retrain.add_argument("--profile", choices=sorted(PROFILES), default="demo")
    retrain.add_argument("--verbose", action="store_true")
    retrain.set_defaults(func=cmd_retrain)
    rep = sub.add_parser("report", help="latest model per modality with its metrics and artifact paths")
    rep.add_argument("--json", action="store_true", help="the stable JSON form for scripts")
    rep.set_defaults(func=cmd_report)
    fb = sub.add_parser("feedback", help="people's ratings")
    fb_sub = fb.add_subparsers(dest="feedback_command", required=True)
    fb_import = fb_sub.add_parser("import", help="validate rating files (CSV/JSONL) and land them in feedback/incoming")
    fb_import.add_argument("files", nargs="+")
    fb_import.set_defaults(func=cmd_feedback_import)
    for name, func, help_text in (
        ("promote", cmd_promote, "make a model version its modality's champion (recorded with who and when)"),
        ("rollback", cmd_rollback, "give the championship back to the previous champion of a modality"),
    ):
        cmd = sub.add_parser(name, parents=[with_project], help=help_text)
        if name == "promote":
            cmd.add_argument("version", help="a model_version of the registry (gen-assets report lists them)")
        else:
            cmd.add_argument("--modality", choices=["image", "text"], required=True)
        cmd.add_argument("--reason", help="why, for the record")
        cmd.add_argument("--by", help="who (default: GEN_ASSETS_USER, else the login name)")
        cmd.add_argument("--profile", choices=sorted(PROFILES), default="demo",
                         help="how the new champion is measured (the profile's champion config)")
        cmd.set_defaults(func=func)
    exp = sub.add_parser("experiment", parents=[with_project],
                         help="experiments between the champion and a challenger on live traffic: list, stop")
    exp.add_argument("action", choices=["list", "stop"])
    exp.add_argument("--modality", choices=["image", "text"], help="whose running experiment to stop")
    exp.add_argument("--limit", type=int, default=10, help="experiments listed, newest first")
    exp.add_argument("--reason", help="why it was stopped, for the record")
    exp.add_argument("--by", help="who (default: GEN_ASSETS_USER, else the login name)")
    exp.add_argument("--profile", choices=sorted(PROFILES), default="demo",
                     help="how the champion is measured (the profile's champion config)")
    exp.set_defaults(func=cmd_experiment)
    prune = sub.add_parser("prune", help="remove old checkpoints and batches (never a champion or anything in use)")
    prune.add_argument("--keep-models", type=int, default=int(os.environ.get("GEN_ASSETS_KEEP_MODELS", 5)),
                       help="newest models kept per modality (default 5, or GEN_ASSETS_KEEP_MODELS)")
    prune.add_argument("--keep-batches", type=int, default=int(os.environ.get("GEN_ASSETS_KEEP_BATCHES", 5)),
                       help="newest batches kept per modality (default 5, or GEN_ASSETS_KEEP_BATCHES)")
    prune.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    prune.set_defaults(func=cmd_prune)
    lin = sub.add_parser("lineage", help="the model, data versions, raw sources and feedback files behind a sample")
    lin.add_argument("sample_id")
    lin.add_argument("--json", action="store_true")
    lin.set_defaults(func=cmd_lineage)
    srv = sub.add_parser("serve", help="the review page: rate curated samples (and a JSON API), and a dashboard")
    srv.add_argument("--host", default=None, help="bind address (default: GEN_ASSETS_WEB_HOST, else 127.0.0.1)")
    srv.add_argument("--port", type=int, default=None, help="port (default: GEN_ASSETS_WEB_PORT, else 8000)")
    srv.set_defaults(func=cmd_serve)
    init = sub.add_parser("init", parents=[with_project], help="write a commented project file (gen_assets.yaml)")
    init.add_argument("--images", metavar="PATH", help="the images' source (default: builtin:digits)")
    init.add_argument("--texts", metavar="PATH", help="the texts' source (default: builtin:product_briefs)")
    init.add_argument("--force", action="store_true", help="replace an existing project file")
    init.set_defaults(func=cmd_init)
    conf = sub.add_parser("config", parents=[with_project],
                          help="the effective settings and where each came from (default, project file, profile, environment)")
    conf.add_argument("--profile", choices=sorted(PROFILES), default="demo", help="the profile laid over the project")
    conf.add_argument("--json", action="store_true")
    conf.set_defaults(func=cmd_config)
    ui = sub.add_parser("ui", parents=[with_project], help="start the Dagster UI (dagster dev) on GEN_ASSETS_HOME's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    args = parser.parse_args(argv)
    before = os.environ.get(PROJECT_ENV_VAR)
    if args.project:  # for this command and what it starts (`gen-assets ui`'s dagster dev)
        os.environ[PROJECT_ENV_VAR] = str(Path(args.project).expanduser().resolve())
    try:
        return args.func(args)
    except ProjectError as e:
        print(f"gen-assets: {e}", file=sys.stderr)
        return 2
    finally:  # main() called in process (tests, scripts) leaves the environment as it found it
        if before is None:
            os.environ.pop(PROJECT_ENV_VAR, None)
        else:
            os.environ[PROJECT_ENV_VAR] = before


if __name__ == "__main__":
    sys.exit(main())
