"""Reading and validating gen_assets.yaml.

The file has fixed sections (images, texts, gate, feedback, schedules, assets); unknown sections or
keys, and values of the wrong type, are errors that name the file, the key and what is allowed. The keys
under images / texts / gate / assets are the fields of the assets' Config classes, so they are checked
against those classes (handed in by the caller: this module imports no dagster).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gen_assets.feedback.pending import DEFAULT_MAX_AGE_SECONDS, DEFAULT_MIN_NEW_EVENTS, DEFAULT_MIN_NEW_RATINGS

FILE_NAME = "gen_assets.yaml"
ENV_VAR = "GEN_ASSETS_PROJECT"

# which assets' Config fields a section's keys are; a key goes to the first asset that has the field
SECTION_ASSETS: dict[str, tuple[str, ...]] = {
    "images": ("raw_images", "clean_images"),
    "texts": ("raw_texts", "clean_texts"),
    "gate.image": ("image_champion",),
    "gate.text": ("text_champion",),
}
# a person's one-off decision (gen-assets promote / rollback), never a project setting
NOT_PROJECT_SETTINGS = frozenset({"promote", "rollback", "by", "reason"})
# path-valued fields: relative paths in the file are relative to the file's folder
PATH_FIELDS = {"raw_images": ("source", "labels"), "raw_texts": ("source",)}


class ProjectError(ValueError):
    """A project file that cannot be used; the message names the file and the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Sectioned(Strict):
    """An empty section (every line in it commented out) reads as null: the same as leaving it out."""

    @model_validator(mode="before")
    @classmethod
    def empty_sections(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class Gate(Sectioned):
    image: dict[str, Any] = Field(default_factory=dict, description="image_champion's tolerances")
    text: dict[str, Any] = Field(default_factory=dict, description="text_champion's tolerances")


class Feedback(Strict):
    min_new_ratings: int = Field(default=DEFAULT_MIN_NEW_RATINGS, ge=1)
    min_new_events: int = Field(default=DEFAULT_MIN_NEW_EVENTS, ge=1)
    max_age_seconds: float = Field(default=DEFAULT_MAX_AGE_SECONDS, gt=0)


class Schedules(Strict):
    nightly: bool = Field(default=False, description="nightly_schedule runs without being switched on in the UI")
    prune: bool = Field(default=False, description="prune_schedule likewise")
    feedback_sensor: bool = Field(default=True, description="feedback_sensor retrains when ratings land (and "
                                  "events_sensor when events of served content do)")


class Sections(Sectioned):
    images: dict[str, Any] = Field(default_factory=dict)
    texts: dict[str, Any] = Field(default_factory=dict)
    gate: Gate = Field(default_factory=Gate)
    feedback: Feedback = Field(default_factory=Feedback)
    schedules: Schedules = Field(default_factory=Schedules)
    assets: dict[str, dict[str, Any] | None] = Field(default_factory=dict)


@dataclass(frozen=True)
class ProjectFile:
    """A validated project file; path None: there is none (every setting is its default)."""

    path: Path | None
    sections: Sections = field(default_factory=Sections)

    def error(self, key: str, problem: str) -> ProjectError:
        return ProjectError(f"{self.path}: {key}: {problem}")

    def asset_config(self, classes: Mapping[str, type[BaseModel]]) -> dict[str, dict[str, Any]]:
        """Asset name -> the Config fields this file sets, checked against the assets' Config classes."""
        out: dict[str, dict[str, Any]] = {}
        where: dict[tuple[str, str], str] = {}

        def put(asset: str, name: str, value: Any, key: str) -> None:
            if (asset, name) in where:
                raise self.error(key, f"{asset}.{name} is set twice (also as {where[asset, name]})")
            where[asset, name] = key
            out.setdefault(asset, {})[name] = self.resolve_path(asset, name, value)

        s = self.sections
        for section, values in (("images", s.images), ("texts", s.texts), ("gate.image", s.gate.image),
                                ("gate.text", s.gate.text)):
            assets = SECTION_ASSETS[section]
            allowed = {a: project_fields(classes[a]) for a in assets}
            for name, value in values.items():
                asset = next((a for a in assets if name in allowed[a]), None)
                if asset is None:
                    raise self.error(f"{section}.{name}", "unknown key; allowed: "
                                     + ", ".join(sorted(set().union(*allowed.values()))))
                put(asset, name, value, f"{section}.{name}")
        for asset, values in s.assets.items():
            if asset not in classes:
                raise self.error(f"assets.{asset}", "not an asset with config; allowed: " + ", ".join(sorted(classes)))
            values = {} if values is None else values
            if not isinstance(values, dict):
                raise self.error(f"assets.{asset}", f"expected a mapping of config fields, got {values!r}")
            allowed = project_fields(classes[asset])
            for name, value in values.items():
                if name not in allowed:
                    raise self.error(f"assets.{asset}.{name}", "unknown key; allowed: " + ", ".join(sorted(allowed)))
                put(asset, name, value, f"assets.{asset}.{name}")
        for asset, values in out.items():  # the types, as Dagster will check them
            try:
                classes[asset].model_validate(values)
            except ValidationError as e:
                first = e.errors()[0]
                name = str(first["loc"][0]) if first["loc"] else ""
                raise self.error(where.get((asset, name), asset),
                                 f"{first['msg']} (got {values.get(name)!r})") from None
        return out

    def resolve_path(self, asset: str, name: str, value: Any) -> Any:
        if self.path is None or name not in PATH_FIELDS.get(asset, ()) or not isinstance(value, str):
            return value
        if ":" in value.split("/", 1)[0] or os.path.isabs(value):  # builtin:..., http(s)://..., an absolute path
            return value
        return str((self.path.parent / Path(value).expanduser()).resolve())


def project_fields(cls: type[BaseModel]) -> set[str]:
    return set(cls.model_fields) - NOT_PROJECT_SETTINGS


def locate(home: Path, environ: Mapping[str, str] = os.environ) -> tuple[Path, str]:
    """The project file and where that choice came from: GEN_ASSETS_PROJECT (set by --project too), else
    gen_assets.yaml in the home directory."""
    named = environ.get(ENV_VAR, "").strip()
    if named:
        return Path(named).expanduser().resolve(), "environment (GEN_ASSETS_PROJECT)"
    return home / FILE_NAME, "default (in GEN_ASSETS_HOME)"


def load(path: Path, required: bool) -> ProjectFile:
    """The validated file at path; a missing file is no project (defaults) unless required (named by the user)."""
    if not path.exists():
        if required:
            raise ProjectError(f"{path}: no such project file (named by {ENV_VAR} or --project); "
                               "`gen-assets init` writes one")
        return ProjectFile(None)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ProjectError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ProjectError(f"{path}: expected a mapping of sections ({', '.join(Sections.model_fields)}), "
                           f"got {type(data).__name__}")
    try:
        return ProjectFile(path, Sections.model_validate(data))
    except ValidationError as e:
        raise ProjectError(f"{path}: " + "; ".join(describe(err) for err in e.errors())) from None


def describe(err: dict) -> str:
    """One pydantic error as `key: problem`, with the allowed keys where the key is unknown."""
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        model: type[BaseModel] = Sections
        for part in loc[:-1]:
            model = model.model_fields[part].annotation
        return f"{key}: unknown key; allowed: {', '.join(model.model_fields)}"
    return f"{key}: {err['msg']} (got {err.get('input')!r})"
