"""`gen-assets serve`: the review page under uvicorn, one process, bound to 127.0.0.1 unless told otherwise.

One process on purpose: ratings land as files (safe from any number of processes), but the snapshot of
the warehouse and the count of waiting ratings are kept in memory, and one process with its thread pool
serves many raters (the tests: 50 concurrent clients).
"""

from __future__ import annotations

import argparse
import sys

from gen_assets.settings import Paths
from gen_assets.web.config import WebConfig


def serve(paths: Paths, config: WebConfig) -> int:
    import uvicorn

    from gen_assets.web.app import create_app

    paths.ensure()
    if not config.loopback and config.token is None:
        print(f"gen-assets serve: listening on {config.host} without GEN_ASSETS_WEB_TOKEN: anyone who can reach "
              "this address can rate; set a token to require one for writes", file=sys.stderr)
    print(f"gen-assets serve: http://{config.host}:{config.port}/gallery  (home {paths.home})", flush=True)
    uvicorn.run(create_app(paths, config), host=config.host, port=config.port, workers=1, log_level="info",
                timeout_keep_alive=5, limit_concurrency=512, server_header=False)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", default=None,
                        help="bind address (default: GEN_ASSETS_WEB_HOST, else 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default: GEN_ASSETS_WEB_PORT, else 8000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m gen_assets.web", description=__doc__))
    args = parser.parse_args(argv)
    return serve(Paths.from_env(), WebConfig.from_env(host=args.host, port=args.port))
