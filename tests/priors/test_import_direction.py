"""Nothing under scene3d.priors imports nerfstudio or the scene generator (scene3d.datasets), nor anything above."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import scene3d.priors

FORBIDDEN = ("nerfstudio", "scene3d.datasets", "scene3d.methods", "scene3d.viewer", "scene3d.export", "scene3d.cli")


def _modules() -> list[str]:
    return ["scene3d.priors"] + [f"scene3d.priors.{m.name}" for m in pkgutil.iter_modules(scene3d.priors.__path__)]


def test_no_import_statement_under_priors_names_nerfstudio_or_the_generator():
    # every import statement, also those inside functions (which run later, on first use)
    offenders = []
    for path in sorted(Path(scene3d.priors.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n.startswith(FORBIDDEN)]
    assert offenders == []


def test_importing_every_priors_module_loads_neither_nerfstudio_nor_the_generator():
    code = (
        "import sys\n" + "".join(f"import {m}\n" for m in _modules())
        + f"print(','.join(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == ""
