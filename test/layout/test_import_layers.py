"""The layers stack: every import runs downward (docs/architecture.md, "Layers and the import rule").

Walks every module of the four packages with `ast` (imports inside functions included, since a lazy import
is still a dependency) and checks each import against the declared order of layers. A second test keeps
the engine's own module graph free of cycles. Both checkers are also run on a small tree with a planted
violation, so they are known to be able to fail.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: bottom to top; a module may import its own layer and the ones below it, never one above
LAYERS: tuple[str, ...] = ("infinipot", "infinipot_ros", "infinipot_eval", "infinipot_train")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    return [(line, target) for line, target, _ in imports_with_kind(path, root)]


def imports_with_kind(path: Path, root: Path) -> list[tuple[int, str, bool]]:
    """(line, absolute name, is_member) of every import; is_member: `name` of `from module import name`,
    which may be a submodule or just an attribute of the module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, False) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target, False))
            # `from pkg import module` imports pkg.module too
            found.extend((node.lineno, f"{target}.{alias.name}", True) for alias in node.names)
    return found


def layer_of(module: str, layers: tuple[str, ...]) -> int | None:
    top = module.split(".")[0]
    return layers.index(top) if top in layers else None


def upward_imports(root: Path, layers: tuple[str, ...] = LAYERS) -> list[str]:
    """Every import of a module from a higher layer than its own, as 'file:line imports name'."""
    violations = []
    for package in layers:
        for path in sorted((root / package).rglob("*.py")):
            own = layer_of(module_name(path, root), layers)
            for line, target in imported_modules(path, root):
                other = layer_of(target, layers)
                if other is not None and own is not None and other > own:
                    violations.append(f"{path.relative_to(root)}:{line} imports {target} ({layers[other]} is above {layers[own]})")
    return sorted(set(violations))


#: modules that exist only once built: the rosidl-generated interfaces merged into infinipot_ros
GENERATED = ("infinipot_ros.msg", "infinipot_ros.srv")


def unresolved_imports(root: Path, layers: tuple[str, ...] = LAYERS) -> list[str]:
    """First-party imports naming a module that is not in the tree (e.g. one left behind by a move)."""
    known = {module_name(p, root) for package in layers for p in (root / package).rglob("*.py")}
    missing = []
    for package in layers:
        for path in sorted((root / package).rglob("*.py")):
            for line, target, is_member in imports_with_kind(path, root):
                if is_member or layer_of(target, layers) is None or target in known or target.startswith(GENERATED):
                    continue  # a member is an attribute unless it is a known module; its module is checked itself
                missing.append(f"{path.relative_to(root)}:{line} imports {target}, which does not exist")
    return sorted(set(missing))


def module_cycles(root: Path, package: str) -> list[list[str]]:
    """Cycles in the import graph of `package`'s own modules (lazy imports included)."""
    modules = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for _, target in imported_modules(path, root):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # a package's __init__ re-exporting its children is not a dependency of the children on it
            if target and target != name and not name.startswith(target + "."):
                deps.add(target)
        graph[name] = deps
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_every_import_runs_downward() -> None:
    assert upward_imports(ROOT) == []


def test_every_first_party_import_resolves() -> None:
    assert unresolved_imports(ROOT) == []


def test_engine_modules_have_no_import_cycle() -> None:
    assert module_cycles(ROOT, "infinipot") == []


def test_every_layer_package_is_checked() -> None:
    for package in LAYERS:
        assert (ROOT / package / "__init__.py").is_file(), package
    # every first-party Python package at the root belongs to a layer
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages <= set(LAYERS), packages - set(LAYERS)


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_checker_flags_a_planted_upward_import(tmp_path: Path) -> None:
    layers = ("low", "high")
    _write(tmp_path, "low/__init__.py", "")
    _write(tmp_path, "low/a.py", "def f():\n    from high.b import g  # lazy, still upward\n")
    _write(tmp_path, "low/c.py", "from . import a\nfrom .a import f\n")
    _write(tmp_path, "high/__init__.py", "")
    _write(tmp_path, "high/b.py", "from low.a import f\nimport low\n")
    found = upward_imports(tmp_path, layers)
    assert len(found) == 2 and all(v.startswith("low/a.py:2 imports high.b") for v in found), found


def test_checker_flags_an_import_left_behind_by_a_move(tmp_path: Path) -> None:
    _write(tmp_path, "low/__init__.py", "")
    _write(tmp_path, "low/a.py", "def f():\n    pass\n")
    _write(tmp_path, "low/b.py", "from .a import f\nfrom .gone import g\nimport low.a\nfrom low import a\n")
    assert unresolved_imports(tmp_path, ("low",)) == ["low/b.py:2 imports low.gone, which does not exist"]


def test_checker_flags_a_planted_cycle(tmp_path: Path) -> None:
    _write(tmp_path, "pkg/__init__.py", "from .a import x\n")
    _write(tmp_path, "pkg/a.py", "def x():\n    from .b import y\n")
    _write(tmp_path, "pkg/b.py", "from pkg.a import x\ny = 1\n")
    assert module_cycles(tmp_path, "pkg") == [["pkg.a", "pkg.b", "pkg.a"]]


@pytest.mark.parametrize("name", ["FrameSampler", "SampleDecision"])
def test_sampling_is_part_of_the_engine(name: str) -> None:
    import infinipot

    assert getattr(infinipot, name).__module__ == "infinipot.sampling"
