"""The project file (gen_assets.project) checked against the assets' Config classes, and the run config
it makes: for the jobs' launchpad, the schedules, the sensor and `gen-assets run`."""

from __future__ import annotations

import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from gen_assets.project import effective
from gen_assets.project.file import ProjectFile, load, locate
from gen_assets.settings import Paths


def config_classes(assets: Iterable[dg.AssetsDefinition]) -> dict[str, type[dg.Config]]:
    """Asset name -> the dg.Config class of its `config` parameter."""
    out = {}
    for asset in assets:
        if not isinstance(asset, dg.AssetsDefinition) or asset.op is None:
            continue
        hint = typing.get_type_hints(asset.op.compute_fn.decorated_fn).get("config")
        if isinstance(hint, type) and issubclass(hint, dg.Config):
            for key in asset.keys:
                out[key.to_user_string()] = hint
    return out


def config_defaults(classes: Mapping[str, type[dg.Config]]) -> dict[str, dict[str, Any]]:
    return {asset: {name: f.get_default(call_default_factory=True) for name, f in cls.model_fields.items()
                    if not f.is_required()}
            for asset, cls in classes.items()}


@dataclass(frozen=True)
class Project:
    """A project file, validated, with the assets' defaults to layer it on."""

    file: ProjectFile
    location: Path  # where it is (or would be)
    location_origin: str
    defaults: dict[str, dict[str, Any]]
    config: dict[str, dict[str, Any]]  # asset -> the fields the file sets

    def settings(self, profile: str = "demo", champions: Iterable[str] = (),
                 command: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, effective.Setting]]:
        return effective.effective_config(self.defaults, self.config, profile, champions, command)

    def run_config(self, ops: Iterable[str] | None = None, profile: str = "demo", champions: Iterable[str] = (),
                   command: Mapping[str, Mapping[str, Any]] | None = None) -> dict:
        return effective.run_config(self.settings(profile, champions, command), ops)


def load_project(paths: Paths, assets: Iterable[dg.AssetsDefinition],
                 environ: Mapping[str, str] = os.environ) -> Project:
    """The project file of this home (or GEN_ASSETS_PROJECT's); raises ProjectError when it is invalid."""
    location, origin = locate(paths.home, environ)
    file = load(location, required=not origin.startswith(effective.DEFAULT))
    classes = config_classes(assets)
    return Project(file, location, origin, config_defaults(classes), file.asset_config(classes))


def job_run_config(project: Project, selection: dg.AssetSelection, assets: list) -> dict:
    """A job's default run config (its launchpad): the project's settings for the assets it selects."""
    ops = {key.to_user_string() for key in selection.resolve(assets)}
    return project.run_config(ops)
