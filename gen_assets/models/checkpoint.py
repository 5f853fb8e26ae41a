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

from gen_assets.store.files import atomic_write_bytes, open_read, sha256_of

# arch name -> "module:Class"; each class has a `config_class` attribute (a dataclass) and takes it as
# its first constructor argument.
ARCHS: dict[str, str] = {
    "dcgan": "gen_assets.models.dcgan:DCGAN",
    "vae": "gen_assets.models.vae:VAE",
    "evaluator": "gen_assets.models.evaluator:ImageEvaluator",
    "gpt": "gen_assets.models.gpt:GPT",
    "reward": "gen_assets.models.reward:RewardModel",
}


def model_class(arch: str) -> type:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHS)}")
    module, name = ARCHS[arch].split(":")
    return getattr(importlib.import_module(module), name)


def save_model(path: str | Path, arch: str, model: torch.nn.Module, extra: dict[str, Any] | None = None) -> str:
    """Save atomically; return the sha256 of the file (the model's content hash)."""
    config = model.config
    payload = {
        "arch": arch,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


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
