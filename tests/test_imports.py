"""``import scene3d`` is light, and the layers a user reuses outside nerfstudio never import it (docs/design.md, "Layers")."""

from __future__ import annotations

import subprocess
import sys

REUSABLE = [
    "scene3d",
    "scene3d.core.checkpoint",
    "scene3d.core.metrics",
    "scene3d.core.shape_metrics",
    "scene3d.fields.dmtet",
    "scene3d.fields.hash_grid",
    "scene3d.fields.radiance",
    "scene3d.fields.sdf",
    "scene3d.fields.tensorf",
    "scene3d.renderers.gaussians",
    "scene3d.renderers.isosurface",
    "scene3d.renderers.marching",
    "scene3d.renderers.mesh",
    "scene3d.renderers.mesh_raster",
    "scene3d.renderers.neus",
    "scene3d.renderers.occupancy",
    "scene3d.renderers.tetrahedra",
    "scene3d.renderers.triplane",
    "scene3d.renderers.volume",
    "scene3d.priors",
    "scene3d.priors.distillation",
]
HEAVY = ["nerfstudio", "gsplat", "nerfacc", "tinycudann", "open3d"]


def _imported_after(modules: list[str]) -> list[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_scene3d_is_light() -> None:
    assert _imported_after(["scene3d"]) == []


def test_core_fields_renderers_priors_do_not_import_nerfstudio_or_cuda_backends() -> None:
    assert _imported_after(REUSABLE) == []
