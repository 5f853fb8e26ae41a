"""The code fingerprint: what counts as a change of a model's code, and what does not.

Each test edits a copy of the package and compares the fingerprints of the copy with those of the
package itself (the fingerprint does not depend on where the folder is: an unedited copy hashes the
same). A folder's fingerprints are computed once per process, so a test edits its copy before it asks.
"""

import shutil
from pathlib import Path

import pytest

from gen_assets.defs.assets import trained, tuned
from gen_assets.training.fingerprint import PACKAGE_ROOT, code_fingerprint, module_closure

# every training-like asset's code roots, by asset name
ASSET_CODE = {
    "image_evaluator": trained.IMAGE_EVALUATOR_CODE,
    "image_generator": trained.IMAGE_GENERATOR_CODE,
    "text_generator": trained.TEXT_GENERATOR_CODE,
    "image_reward_model": tuned.IMAGE_REWARD_CODE,
    "text_reward_model": tuned.TEXT_REWARD_CODE,
    "tuned_image_generator": tuned.TUNED_IMAGE_GENERATOR_CODE,
    "tuned_text_generator": tuned.TUNED_TEXT_GENERATOR_CODE,
}

GENERATOR_FORWARD = """\
    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], dim=1))
        return torch.sigmoid(self.net(h.view(len(z), -1, self.base, self.base)))
"""


@pytest.fixture
def package(tmp_path) -> Path:
    """A fresh copy of the gen_assets folder, to edit."""
    copy = tmp_path / "gen_assets"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def edit(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of `old`: a test whose edit missed would prove nothing."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not exactly once in {path}"
    path.write_text(text.replace(old, new))


def fingerprints(package_root: Path | None = None) -> dict[str, str]:
    return {name: code_fingerprint(*roots, package_root=package_root) for name, roots in ASSET_CODE.items()}


def test_an_unedited_copy_has_the_same_fingerprints(package):
    assert fingerprints(package) == fingerprints()


def test_comments_formatting_and_docstrings_do_not_count(package):
    dcgan = package / "models" / "dcgan.py"
    edit(dcgan, '"""Class-conditional DCGAN: the default image generator.',
         '"""Class-conditional DCGAN (an edited docstring): the default image generator.')
    edit(dcgan, GENERATOR_FORWARD, """\
    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        '''A docstring added to the generator's forward.'''
        # a comment, and the same call spread over lines
        h = self.fc(
            torch.cat( [z, self.embed(y)],
                       dim = 1 )
        )

        return torch.sigmoid(self.net(h.view(len(z), -1, self.base, self.base)))  # why: pixels in [0, 1]
""")
    assert fingerprints(package) == fingerprints()


def test_an_edit_of_the_dcgan_forward_pass_changes_the_image_generator(package):
    edit(package / "models" / "dcgan.py", GENERATOR_FORWARD,
         GENERATOR_FORWARD.replace("torch.sigmoid(", "torch.tanh("))
    before, after = fingerprints(), fingerprints(package)
    changed = {name for name in ASSET_CODE if before[name] != after[name]}
    # the generator and everything built on it (the tuned one imports it too); the evaluator, the text
    # side and the reward models do not import the DCGAN
    assert changed == {"image_generator", "tuned_image_generator"}


def test_an_edit_of_the_web_app_changes_no_training_asset(package):
    edit(package / "web" / "app.py", "def create_app(", "def unused_helper():\n    return 1\n\n\ndef create_app(")
    assert fingerprints(package) == fingerprints()


def test_an_edit_of_a_module_imported_transitively_counts(package):
    # store.files is no asset's root; models.checkpoint and models.tokenizers import it
    assert "gen_assets.store.files" not in trained.IMAGE_GENERATOR_CODE
    assert "gen_assets.store.files" in module_closure(*trained.IMAGE_GENERATOR_CODE)
    edit(package / "store" / "files.py", 'with open(tmp, "wb") as f:', 'with open(tmp, "xb") as f:')
    before, after = fingerprints(), fingerprints(package)
    assert {name for name in ASSET_CODE if before[name] != after[name]} == set(ASSET_CODE)


def test_an_edit_of_training_fit_changes_what_is_fitted_with_it(package):
    edit(package / "training" / "fit.py", 'return "bf16-mixed"', 'return "16-mixed"')
    before, after = fingerprints(), fingerprints(package)
    changed = {name for name in ASSET_CODE if before[name] != after[name]}
    # the reward models' fit is their own (models.reward)
    assert changed == set(ASSET_CODE) - {"image_reward_model", "text_reward_model"}


def test_no_training_asset_depends_on_the_dagster_layer_or_the_web_app():
    for name, roots in ASSET_CODE.items():
        closure = module_closure(*roots)
        assert set(roots) <= set(closure), name
        outside = [m for m in closure if m.startswith(("gen_assets.defs", "gen_assets.web"))]
        assert outside == [], name


def test_imports_are_resolved_within_the_package(tmp_path):
    """Absolute, relative, lazy and `from package import submodule` imports; other packages ignored."""
    root = tmp_path / "gen_assets"
    files = {
        "a/__init__.py": "from .c import VALUE\n",
        "a/b.py": "from . import c\nfrom gen_assets.a.c import VALUE as V\n",
        "a/c.py": "import math\nVALUE = math.pi\n",
        "d.py": "from gen_assets.a import b, VALUE\n",
        "e.py": "def later():\n    import gen_assets.f\n    return gen_assets.f\n",
        "f.py": "import torch\nfrom gen_assets.g import NAME_THAT_IS_NOT_A_MODULE\n",
        "g.py": "NAME_THAT_IS_NOT_A_MODULE = 1\n",
        "h.py": "from gen_assets import d\n",
        "unused.py": "X = 1\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    closure = lambda *m: module_closure(*m, package_root=root)  # noqa: E731
    assert closure("gen_assets.a.b") == ("gen_assets.a", "gen_assets.a.b", "gen_assets.a.c")
    assert closure("gen_assets.h") == ("gen_assets.a", "gen_assets.a.b", "gen_assets.a.c", "gen_assets.d",
                                       "gen_assets.h")
    assert closure("gen_assets.e") == ("gen_assets.e", "gen_assets.f", "gen_assets.g")
    with pytest.raises(ModuleNotFoundError):
        closure("gen_assets.missing")
    # the package __init__ runs on import: its code is part of its submodules' fingerprint (edited in
    # a copy: the fingerprint of a folder is computed once per process)
    before = code_fingerprint("gen_assets.a.c", package_root=root)
    (root / "a" / "__init__.py").write_text("from .c import VALUE\nDOUBLE = 2 * VALUE\n")
    copy = tmp_path / "copy" / "gen_assets"
    shutil.copytree(root, copy)
    assert code_fingerprint("gen_assets.a.c", package_root=copy) != before
