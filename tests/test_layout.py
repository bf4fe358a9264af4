"""The package's import graph: no cycles, and no module imports from a layer
above its own.

Imports are read from the source tree the package is built from (every
``import`` and ``from ... import``, at module level or inside a function: a
lazy import is a dependency too). The tree, not the installed package: a wheel
holds the compiled extension, whose imports cannot be read, not its ``.pyx``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

# Bottom to top: a module imports only from its own layer or below. A
# module's layer is that of the longest name here it falls under.
LAYERS = {
    "memscan._version": 0,  # foundation: version, exceptions, records, caches
    "memscan._errors": 0,
    "memscan._types": 0,
    "memscan._cache": 0,
    "memscan.kernel": 1,  # /proc and the kernel's ABI
    "memscan.engine": 2,  # bytes in, records out
    "memscan._fast": 2,
    "memscan.layout.rules": 2,  # the rules both engines apply
    "memscan.elf": 3,
    "memscan.layout": 3,
    "memscan.owners": 4,  # the exact tier's readers of a live process
    "memscan.core": 5,  # scans, snapshots, samplers
    "memscan": 6,  # what a user calls: the CLI and its commands, formatting, the demo, the pytest plugin
}

ROOT = Path(__file__).resolve().parents[1] / "src" / "memscan"
# Cython's own imports; its cimports are not Python imports.
PYX_IMPORT = re.compile(r"^\s*from\s+(\.+[\w.]*)\s+import\s+(.+)$", re.M)


def layer(module: str) -> int:
    while module not in LAYERS:
        module = module.rpartition(".")[0]
    return LAYERS[module]


def modules() -> Dict[str, Path]:
    """Every module of the package, by dotted name."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")) + sorted(ROOT.glob("*.pyx")):
        parts = ["memscan", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def resolve(module: str, is_package: bool, level: int, target: str) -> str:
    """The absolute name of ``from <level dots><target> import ...`` in ``module``."""
    base = module.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(name: str, path: Path, known: Dict[str, Path]) -> Set[str]:
    """The package's modules that ``name`` imports: ``from P import N`` is an
    import of module P.N where there is one, else of P."""
    package = path.name == "__init__.py"
    pairs: List[Tuple[str, str]] = []  # (P, N); N is "" for ``import P``
    if path.suffix == ".pyx":
        for dots, names in PYX_IMPORT.findall(path.read_text()):
            base = resolve(name, False, len(dots) - len(dots.lstrip(".")), dots.lstrip("."))
            pairs += [(base, n.split()[0]) for n in names.split(",")]
    else:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                pairs += [(a.name, "") for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = resolve(name, package, node.level, node.module or "") if node.level else node.module or ""
                pairs += [(base, a.name) for a in node.names]
    out = set()
    for base, member in pairs:
        target = f"{base}.{member}" if f"{base}.{member}" in known else base
        if target in known and target != name:
            out.add(target)
    return out


def graph() -> Dict[str, Set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_the_graph_is_read():
    g = graph()
    assert "memscan.engine.pure" in g["memscan.engine"] and "memscan._fast" in g["memscan.engine"]
    assert "memscan.layout.rules" in g["memscan._fast"]
    assert "memscan.kernel.procfs" in g["memscan.core.scanner"]


def test_no_import_from_a_layer_above():
    g = graph()
    upward = sorted(f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
                    for m, targets in g.items() for t in targets if layer(t) > layer(m))
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    g = graph()
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_subpackages_import_nothing_themselves():
    """Importing memscan.layout.rules (as the engines do) runs only
    memscan.layout's docstring: not the ELF or kernel layers."""
    g = graph()
    for package in ("memscan.kernel", "memscan.layout", "memscan.owners", "memscan.owners.go", "memscan.core"):
        assert not g[package], (package, g[package])


def test_the_readme_names_every_module():
    """The README's architecture section gives each module its one line."""
    readme = (ROOT.parents[1] / "README.md").read_text()
    section = readme[readme.index("## Architecture"):]
    section = section[: section.index("\n## ", 1)]
    missing = []
    for path in sorted(ROOT.rglob("*.py")) + sorted(ROOT.rglob("*.pxi")) + sorted(ROOT.glob("*.pyx")):
        rel = path.relative_to(ROOT).as_posix()
        if path.name in ("__init__.py", "__main__.py") and rel != "engine/__init__.py":
            continue  # a package is named by its directory
        if path.suffix == ".pxi":
            rel = f"{path.parent.relative_to(ROOT).as_posix()}/*.pxi"
        if f"`{rel}`" not in section:
            missing.append(rel)
    assert not missing, f"modules the README's architecture section does not name: {missing}"
