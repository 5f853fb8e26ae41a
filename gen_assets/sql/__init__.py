"""The cleaning SQL, one file per table, readable on its own; `load_sql("clean_images")` returns its text.

The .sql files are package data (pyproject: `[tool.setuptools.package-data] "gen_assets.sql" = ["*.sql"]`),
so they are read through importlib.resources and work from a wheel as well as from a checkout.
"""

from __future__ import annotations

import re
from importlib import resources


def load_sql(name: str) -> str:
    """Text of gen_assets/sql/<name>.sql; a name that is not a plain file stem is refused."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"invalid SQL file name {name!r}: letters, digits and _ only, without .sql")
    path = resources.files(__name__).joinpath(f"{name}.sql")
    if not path.is_file():
        raise FileNotFoundError(f"no SQL file {name}.sql in {__name__}")
    return path.read_text(encoding="utf-8")
