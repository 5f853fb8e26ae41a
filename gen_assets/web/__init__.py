"""The review page: people see the champion's curated content, rate it, and follow the models.

`create_app` (app.py) builds the Starlette app; `gen-assets serve` (server.py) runs it under uvicorn.
Reads go through catalog.py (read-only snapshots of the warehouse, served while a run holds the file),
ratings through ratings.py (files in the feedback landing zone, at most once per idempotency key),
sessions, CSRF and the write token through security.py. Nothing here writes to the warehouse.
"""

from gen_assets.web.app import create_app
from gen_assets.web.config import WebConfig

__all__ = ["create_app", "WebConfig"]
