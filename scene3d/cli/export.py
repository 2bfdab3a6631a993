"""``s3d export KIND ...``: one exporter module per kind, each with ``main(argv: list[str]) -> int``.

    s3d export splat --load-config outputs/.../config.yml --out scene.ply

Each piece adds its kind with one line in ``EXPORTERS``.
"""

from __future__ import annotations

import importlib
import logging
import sys

# kind -> (module with a ``main(argv: list[str]) -> int``, one-line help)
EXPORTERS: dict[str, tuple[str, str]] = {
    "dreamspace": ("scene3d.export.dreamspace", "a DreamSpace run's retextured room (.glb, or .obj + .mtl + .png) and panorama"),
    "epigraf": ("scene3d.export.epigraf", "an EpiGRAF instance (--seed) as a coloured mesh (.ply) and a turntable video"),
    "splat": ("scene3d.export.splat", "a run's Gaussian splats as a 3DGS .ply or a .splat"),
    "mesh": ("scene3d.export.mesh", "a NeRF run's density surface as a coloured mesh (.ply, .obj, .glb)"),
}


def _usage() -> str:
    width = max(len(k) for k in EXPORTERS)
    lines = ["usage: s3d export KIND [ARGS...]", "", "kinds:"]
    lines += [f"  {k.ljust(width)}  {help_}" for k, (_, help_) in EXPORTERS.items()]
    lines += ["", "Run `s3d export KIND --help` for a kind's options."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Dispatch ``argv`` to the exporter named by its first element; returns the exit status."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    kind, rest = argv[0], argv[1:]
    if kind not in EXPORTERS:
        print(f"s3d export: unknown kind '{kind}'\n\n{_usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    module = importlib.import_module(EXPORTERS[kind][0])
    return int(module.main(rest) or 0)
