"""Which library files a stage's outputs depend on, derived from the code.

Snakemake re-runs a job when its script changes, not when a module that script imports changes. So every
rule names, under `input: lib=`, the import closure of its script inside `esn/`: read from the source
(`import` statements at any depth, with the parent packages Python runs on import, and every module of a
package whose `__init__` imports them all by `pkgutil.iter_modules`), plus the package data a module reads
(`esn/templates/<module>/`), plus the modules a registry imports lazily by config name (the model's adapter
family, the corpus's reader). Nothing is listed by hand, so a module someone adds or imports
tomorrow invalidates exactly the stages that import it.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path

#: Registries that import a module by its config name: the module (as a file of the package) that holds the
#: registry -> (the module's name of the registry variable, what the name is looked up by).
ADAPTER_REGISTRY = "esn/models/__init__.py"
READER_REGISTRY = "esn/corpora/__init__.py"
#: Package data read by a module: esn/templates/<module stem>/ belongs to esn/<module stem>.py.
TEMPLATES = "esn/templates"


def _module_file(root: Path, name: str) -> str | None:
    """Repository-relative file of module `name` (`esn.x.y`), or None when it is not a module of `esn`."""
    parts = name.split(".")
    if parts[0] != "esn":
        return None
    base = root.joinpath(*parts)
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path.relative_to(root).as_posix()
    return None


def _parents(name: str) -> list[str]:
    """The packages Python imports before module `name`: `esn.a.b` -> `esn`, `esn.a`."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _module_name(file: str) -> str:
    parts = Path(file).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _discovers_modules(tree: ast.AST) -> bool:
    """Whether a package's `__init__` imports its modules by listing them (`pkgutil.iter_modules`)."""
    return any(isinstance(n, ast.Attribute) and n.attr == "iter_modules" for n in ast.walk(tree))


@functools.lru_cache(maxsize=None)
def _imports(root: Path, file: str, mtime_ns: int) -> tuple[str, ...]:
    """Files of `esn` that one source file imports directly (statements anywhere in it)."""
    tree = ast.parse((root / file).read_text(), filename=file)
    package = _module_name(file) if file.endswith("__init__.py") else _module_name(file).rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .y import z
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{anchor}.{node.module}" if node.module else anchor
            else:
                module = node.module or ""
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]  # `from esn import store` imports a module
    if file.endswith("__init__.py") and _discovers_modules(tree):  # a package that imports all its modules
        names += [_module_name(p.relative_to(root).as_posix()) for p in sorted((root / file).parent.glob("*.py"))
                  if p.name != "__init__.py"]
    found: list[str] = []
    for name in names:
        for candidate in [*_parents(name), name]:
            path = _module_file(root, candidate)
            if path and path != file:
                found.append(path)
    return tuple(dict.fromkeys(found))


def import_closure(root: str | Path, files: Iterable[str]) -> list[str]:
    """Every file of `esn` (repository-relative, sorted) that `files` import, directly or not, with the
    package data those modules read. `files` may be scripts outside `esn` (they are not listed)."""
    root = Path(root).resolve()
    todo, seen = list(files), set()
    closure: set[str] = set()
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        if file.startswith("esn/"):
            closure.add(file)
        todo += _imports(root, file, (root / file).stat().st_mtime_ns)
    for file in list(closure):
        data = root / TEMPLATES / Path(file).stem
        if data.is_dir() and not file.endswith("__init__.py"):
            closure.update(p.relative_to(root).as_posix() for p in data.rglob("*") if p.is_file())
    return sorted(closure)


def adapter_module(root: str | Path, adapter: str) -> str:
    """The module file the adapter registry (`ADAPTERS` in esn/models/__init__.py) imports for `adapter`;
    read from the source, so the workflow's parse does not import torch."""
    tree = ast.parse((Path(root) / ADAPTER_REGISTRY).read_text())
    for node in tree.body:
        target = getattr(node, "target", None) or (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "ADAPTERS":
            registry = ast.literal_eval(node.value)
            path = _module_file(Path(root), registry[adapter].split(":")[0])
            assert path, f"ADAPTERS[{adapter!r}] names no module of esn"
            return path
    raise ValueError(f"no ADAPTERS in {ADAPTER_REGISTRY}")


def reader_module(root: str | Path, reader: str) -> str | None:
    """The module file the reader registry imports for a built-in reader (`esn.corpora.<reader>`)."""
    return _module_file(Path(root), f"esn.corpora.{reader}")


def stage_library(root: str | Path, script: str, adapter: str | None = None,
                  readers: Iterable[str] = ()) -> list[str]:
    """The library inputs of one job: its script's import closure, and where that closure holds a registry,
    the closure of the module it would import for this job's model (`adapter`) or corpora (`readers`)."""
    files = import_closure(root, [script])
    extra = []
    if adapter and ADAPTER_REGISTRY in files:
        extra.append(adapter_module(root, adapter))
    if READER_REGISTRY in files:
        extra += [m for m in (reader_module(root, r) for r in readers) if m]
    return sorted(set(files) | set(import_closure(root, extra))) if extra else files
