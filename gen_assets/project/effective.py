"""The effective settings, layered, each with where it came from.

Layers, later wins: the Config classes' defaults < the project file < the run's profile (smoke / demo /
full, gen_assets.settings.PROFILES) < what the command itself sets (a person's promote / rollback).

The one exception is the gate (tolerance, max_ratio_to_floor, max_bits_per_byte, the text guard's shares;
None, no bar, is the loosest).
A profile may tighten it, but it never loosens
- a value the project file sets: the user's gate holds under every profile;
- the gate of a champion decided under another profile's gate (or the project's: a schedule, the sensor,
  the UI): the stricter of the project's value (file or default) and the profile's applies.
So `--profile smoke` crowns a first champion on a fresh home and keeps replacing its own smoke champions,
but its barely trained candidates cannot replace a real champion through smoke's loose gate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gen_assets.settings import PROFILES

DEFAULT = "default"
PROJECT = "project file"

# champion asset -> (modality, the gate's fields: smaller is stricter, None is no bar)
GATE_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "image_champion": ("image", ("tolerance", "max_ratio_to_floor")),
    "text_champion": ("text", ("tolerance", "max_bits_per_byte", "max_degenerate_share", "max_out_of_length_share",
                                 "reward_tolerance")),
}


@dataclass(frozen=True)
class Setting:
    value: Any
    origin: str  # default / project file / profile NAME / command line / environment (...)


def stricter(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def effective_config(defaults: Mapping[str, Mapping[str, Any]], project: Mapping[str, Mapping[str, Any]],
                     profile: str = "demo", champions: Iterable[str] = (),
                     command: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Setting]]:
    """Asset name -> field -> Setting. champions: the modalities whose champion was decided under another
    gate than this profile's (their gate is kept at least as strict as the project's)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    champions = set(champions)
    out = {asset: {name: Setting(value, DEFAULT) for name, value in fields.items()} for asset, fields in defaults.items()}
    for asset, fields in project.items():
        for name, value in fields.items():
            out.setdefault(asset, {})[name] = Setting(value, PROJECT)
    for asset, fields in PROFILES[profile].items():
        modality, gate = GATE_FIELDS.get(asset, (None, ()))
        for name, value in fields.items():
            base = out.setdefault(asset, {}).get(name)
            protected = base is not None and (base.origin == PROJECT or modality in champions)
            if name in gate and protected and stricter(value, base.value) != value:
                whose = "the project file's gate" if base.origin == PROJECT else f"the gate of the {modality} champion"
                out[asset][name] = Setting(base.value, f"{base.origin}; profile {profile} would loosen {whose} "
                                           f"to {value!r}")
            else:
                out[asset][name] = Setting(value, f"profile {profile}")
    for asset, fields in (command or {}).items():
        for name, value in fields.items():
            out.setdefault(asset, {})[name] = Setting(value, "command line")
    return out


def run_config(settings: Mapping[str, Mapping[str, Setting]], ops: Iterable[str] | None = None) -> dict:
    """Dagster run config: the settings that are not the defaults, for the ops (asset names) given."""
    ops = None if ops is None else set(ops)
    return {"ops": {asset: {"config": {name: s.value for name, s in fields.items() if s.origin != DEFAULT}}
                    for asset, fields in settings.items()
                    if (ops is None or asset in ops) and any(s.origin != DEFAULT for s in fields.values())}}
