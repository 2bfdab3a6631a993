"""Imports point down (docs/design.md, "Layers"): a static scan of every import statement in ``scene3d/``.

Each module may import its own component and the components of lower layers, never a peer or a higher one; lazy
imports inside functions count too. ``scene3d.methods.common`` (the harness the methods share) imports no method
folder, and the layers a user reuses outside nerfstudio never import nerfstudio.
"""

from __future__ import annotations

import ast
from pathlib import Path

import scene3d

LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("renderers",),  # pure functions; a field takes what it renders with through a protocol, never the reverse
    ("fields",),  # nn.Modules, which may use renderers' functions (DMTet's marching tetrahedra)
    ("priors",),
    ("datasets",),
    ("export",),
    ("viewer",),
    ("methods",),
    ("cli",),
)
"""scene3d's components from the bottom up (docs/design.md); components in one entry would be peers, importing neither."""

NO_NERFSTUDIO = ("core", "fields", "renderers", "priors")
"""Components that must run where only torch is installed."""

ROOT = Path(scene3d.__file__).parent


def _rank(component: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if component in layer), None)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in ``path`` (``from scene3d.x import y`` also yields ``scene3d.x.y``)."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            if target.count(".") < 2:  # `from scene3d import methods`, `from scene3d.methods import common`
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def layer_violations(root: Path) -> list[str]:
    """Every import in the package at ``root`` that points up or sideways, as ``file:line: message``."""
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        parts = module.split(".")
        where = f"{path.relative_to(root.parent)}"
        if len(parts) == 1:  # scene3d/__init__.py: `import scene3d` stays light
            for line, target in _imports(path, root):
                if target.startswith("scene3d."):
                    problems.append(f"{where}:{line}: the package root imports {target}")
            continue
        component = parts[1]
        rank = _rank(component)
        if rank is None:
            problems.append(f"{where}: component scene3d.{component} has no layer (add it to LAYERS and docs/design.md)")
            continue
        allowed = sorted(c for layer in LAYERS[:rank] for c in layer)
        reported: set[tuple[int, str]] = set()  # one message per statement and component
        for line, target in _imports(path, root):
            tparts = target.split(".")
            if tparts[0] in ("nerfstudio",) and component in NO_NERFSTUDIO:
                problems.append(f"{where}:{line}: scene3d.{component} imports {target} (it must run without nerfstudio)")
            if tparts[0] != "scene3d" or len(tparts) < 2:
                continue
            other = tparts[1]
            if other == component:
                in_harness = module.startswith("scene3d.methods.common")
                if in_harness and len(tparts) > 2 and tparts[2] != "common":
                    problems.append(f"{where}:{line}: scene3d.methods.common imports the method {target}")
                continue
            other_rank = _rank(other)
            if other_rank is None and not _is_module(root, tparts[:2]):
                continue  # `from scene3d import __version__` and the like
            if (other_rank is None or other_rank >= rank) and (line, other) not in reported:
                reported.add((line, other))
                problems.append(
                    f"{where}:{line}: scene3d.{component} imports {target}; it may import only "
                    f"{', '.join('scene3d.' + c for c in allowed) or 'nothing else in scene3d'}"
                )
    return problems


def _is_module(root: Path, parts: list[str]) -> bool:
    rel = Path(*parts[1:])
    return (root / rel).is_dir() or (root / rel).with_suffix(".py").is_file()


def test_every_import_points_down() -> None:
    problems = layer_violations(ROOT)
    assert not problems, "imports that point up or sideways:\n" + "\n".join(problems)


def test_every_component_has_a_layer() -> None:
    components = {p.name for p in ROOT.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert components == {c for layer in LAYERS for c in layer}


def test_the_scan_finds_an_upward_import(tmp_path: Path) -> None:
    """The scanner itself: an upward, a sideways, a relative and a lazy import are each reported."""
    pkg = tmp_path / "scene3d"
    for sub in ("core", "fields", "renderers", "viewer", "methods", "methods/common", "methods/foo"):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "ok.py").write_text("import torch\n")
    (pkg / "fields" / "grid.py").write_text("from scene3d.core import ok\nfrom ..renderers import splat\n")
    (pkg / "renderers" / "march.py").write_text("import torch\nfrom ..fields import grid\n")
    (pkg / "renderers" / "splat.py").write_text("def f():\n    from scene3d.methods.foo import model\n")
    (pkg / "viewer" / "view.py").write_text("from scene3d.renderers.splat import f\nimport nerfstudio\n")
    (pkg / "methods" / "common" / "harness.py").write_text("from scene3d.methods.foo import model\n")
    (pkg / "methods" / "foo" / "model.py").write_text("from scene3d.methods.common import harness\n")
    problems = layer_violations(pkg)
    assert any(p.startswith("scene3d/renderers/march.py:2:") and "scene3d.fields" in p for p in problems), problems
    assert not any("fields/grid.py" in p for p in problems), problems  # fields may use renderers
    assert any(p.startswith("scene3d/renderers/splat.py:2:") for p in problems), problems
    assert any(p.startswith("scene3d/methods/common/harness.py:1:") for p in problems), problems
    assert not any("viewer/view.py" in p for p in problems), problems  # viewer may use nerfstudio and renderers
    assert not any("methods/foo" in p for p in problems), problems
    assert len(problems) == 3, problems
