"""The fingerprint of the code that defines a trained result: part of a model's identity.

A model is a function of its data, its config and its code. The run keys of the training assets hash
the first two; this module supplies the third, so that an edit of, say, the DCGAN's forward pass
retrains the image generator instead of silently reusing weights the old code produced.

    code_fingerprint("gen_assets.models.dcgan", "gen_assets.training.fit")  # -> 16 hex characters

The fingerprint hashes the syntax tree (`ast.dump` without line numbers) of the given modules and of
every module of the package they import, transitively: comments, formatting and docstrings do not
count, any change to what the code does does. Imports are read statically, wherever they are in a file
(lazy imports inside functions too); `from gen_assets.x import y` counts the submodule x/y.py when there
is one, and every package __init__.py on the way, since importing a submodule runs them. Dynamic imports
(`importlib.import_module`, as in models.checkpoint.ARCHS) are invisible here: an asset lists the
modules it loads that way among its roots. Imports of other packages (torch, lightning) are not
followed: a library upgrade is the environment's business, not the model's identity.

Nothing is excluded by name: the Dagster layer (defs/) and the review page (web/) stay out of a
training asset's fingerprint because the pure modules never import them, so an edit of the web app
retrains nothing (a test holds that).

Existing homes: run keys now include the fingerprint, so every model trained before this change
retrains once, the first time its asset runs again; later runs reuse it as before.

Pure module (standard library only). Computed once per process (the defs ask for it at import time):
the fingerprint describes the code this process loaded.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "gen_assets"
# gen_assets/training/fingerprint.py -> gen_assets/
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def code_fingerprint(*modules: str, package_root: str | Path | None = None) -> str:
    """16 hex characters that change exactly when the code of `modules` or anything they import changes.

    `package_root` is the gen_assets folder to read (default: the one this module belongs to); tests
    point it at an edited copy. Independent of where that folder is: the same code hashes the same.
    """
    return _fingerprint(tuple(sorted(set(modules))), _root(package_root))


def module_closure(*modules: str, package_root: str | Path | None = None) -> tuple[str, ...]:
    """The dotted names of `modules` and every gen_assets module they import, transitively; sorted."""
    return _closure(tuple(sorted(set(modules))), _root(package_root))


def _root(package_root: str | Path | None) -> str:
    # a string key for the caches: the same folder however it was spelled
    return str(Path(package_root if package_root is not None else PACKAGE_ROOT).resolve())


@functools.lru_cache(maxsize=None)
def _fingerprint(modules: tuple[str, ...], root: str) -> str:
    digest = hashlib.sha256()
    for name in _closure(modules, root):
        # names too: the same code moved to another module is another import graph
        digest.update(f"{name}\0{_module_hash(name, root)}\0".encode())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _closure(modules: tuple[str, ...], root: str) -> tuple[str, ...]:
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if _module_file(name, root) is None:
            # a root is a promise about what defines a result: a typo must not hash to "nothing"
            raise ModuleNotFoundError(f"{name}: no such module under {root}")
        seen.add(name)
        todo.extend(_parent_packages(name, root))
        todo.extend(_imports(name, root))
    return tuple(sorted(seen))


def _module_file(name: str, root: str) -> Path | None:
    """gen_assets.x.y -> <root>/x/y.py or <root>/x/y/__init__.py; None when neither exists."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    parts = name.split(".")[1:]
    base = Path(root).joinpath(*parts)
    for path in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if path is not None and path.is_file():
            return path
    return None


def _is_package(name: str, root: str) -> bool:
    path = _module_file(name, root)
    return path is not None and path.name == "__init__.py"


def _parent_packages(name: str, root: str) -> list[str]:
    # importing gen_assets.models.dcgan runs gen_assets/models/__init__.py first: its code counts too
    # (gen_assets itself is a namespace package without one; then there is nothing to count)
    parts = name.split(".")
    parents = [".".join(parts[:i]) for i in range(1, len(parts))]
    return [p for p in parents if _module_file(p, root) is not None]


def _parse(name: str, root: str) -> ast.Module:
    path = _module_file(name, root)
    assert path is not None, name
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@functools.lru_cache(maxsize=None)
def _imports(name: str, root: str) -> tuple[str, ...]:
    """The gen_assets modules that `name` imports (absolute or relative), as files that exist."""
    found: list[str] = []
    for node in ast.walk(_parse(name, root)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, root, node.module, node.level)
            if base is None:
                continue
            found.append(base)
            # `from gen_assets.store import warehouse`: warehouse is a module, not a name in store/__init__
            found += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    return tuple(m for m in found if _module_file(m, root) is not None)


def _absolute(name: str, root: str, module: str | None, level: int) -> str | None:
    """The absolute name of an ImportFrom's module; `from . import x` in gen_assets/a/b.py -> gen_assets.a."""
    if level == 0:
        return module
    package = name if _is_package(name, root) else name.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 >= len(parts):
        return None  # beyond the top of the package: Python refuses it too
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{module}" if module else base


@functools.lru_cache(maxsize=None)
def _module_hash(name: str, root: str) -> str:
    tree = _parse(name, root)  # a fresh tree: stripping edits it in place
    _strip_docstrings(tree)
    # include_attributes=False: line and column numbers out, so reformatting does not count
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def _strip_docstrings(tree: ast.AST) -> None:
    """Remove the docstring of the module and of every class and function, in place."""
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            # a body of only a docstring does what `pass` does: hash it as that
            node.body = body[1:] or [ast.Pass()]
