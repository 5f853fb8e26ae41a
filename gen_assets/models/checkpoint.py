"""Model files in nanoGPT's habit: the state_dict plus the config needed to rebuild the model.

`{"arch": str, "config": dict, "state_dict": {...}, "extra": dict}` saved with torch.save and loaded
with weights_only=True: nothing pickled but tensors and plain containers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
from pathlib import Path
from typing import Any

import torch

from gen_assets.store.files import atomic_write_bytes, location, open_read, sha256_of

# arch name -> "module:Class"; each class has a `config_class` attribute (a dataclass) and takes it as
# its first constructor argument.
ARCHS: dict[str, str] = {
    "dcgan": "gen_assets.models.dcgan:DCGAN",
    "vae": "gen_assets.models.vae:VAE",
    "evaluator": "gen_assets.models.evaluator:ImageEvaluator",
    "gpt": "gen_assets.models.gpt:GPT",
    "hf": "gen_assets.models.hf:HFCausalLM",
    "reward": "gen_assets.models.reward:RewardModel",
}


def model_class(arch: str) -> type:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHS)}")
    module, name = ARCHS[arch].split(":")
    return getattr(importlib.import_module(module), name)


def save_model(path: str | Path, arch: str, model: torch.nn.Module, extra: dict[str, Any] | None = None) -> str:
    """Save atomically; return the sha256 of the file (the model's content hash)."""
    data = model_file_bytes(arch, model, extra)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def save_versioned_model(
    directory: str | Path, prefix: str, arch: str, model: torch.nn.Module, extra: dict[str, Any] | None = None
) -> tuple[str, str, str]:
    """Save as <directory>/<prefix>-<first 12 hex of its sha256>.pt, atomically, at a path or a URL.

    Returns (model_version, path, sha256): the version names the content, so the same weights always
    land in the same file."""
    data = model_file_bytes(arch, model, extra)
    sha = hashlib.sha256(data).hexdigest()
    version = f"{prefix}-{sha[:12]}"
    path = location(directory) / f"{version}.pt"
    atomic_write_bytes(path, data)
    return version, str(path), sha


def model_file_bytes(arch: str, model: torch.nn.Module, extra: dict[str, Any] | None = None) -> bytes:
    """The bytes of a model file: arch, config, state_dict (on the CPU) and extra, torch.save'd."""
    config = model.config
    payload = {
        "arch": arch,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def read_model_file(path: str | Path) -> dict[str, Any]:
    try:
        with open_read(path) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"model file {path} does not exist") from None


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a model from its file: class from `arch`, config from `config`, weights from `state_dict`."""
    payload = read_model_file(path)
    cls = model_class(payload["arch"])
    model = cls(cls.config_class(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    model.extra = payload.get("extra", {})
    return model.to(map_location).eval()


def file_sha256(path: str | Path) -> str:
    return sha256_of(path)
