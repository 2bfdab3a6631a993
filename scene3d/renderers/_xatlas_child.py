"""Runs xatlas in a child process for :func:`scene3d.renderers.atlas.unwrap` (a crash there cannot kill the caller).

Usage: ``python -m scene3d.renderers._xatlas_child IN.npz OUT.npz``; ``IN`` holds ``vertices`` (V, 3) float32,
``faces`` (F, 3) uint32, ``resolution``, ``padding``; ``OUT`` gets ``vmapping``, ``indices``, ``uvs`` and ``info``
(width, height, atlas count, chart count).
"""

from __future__ import annotations

import sys


def main(src: str, dst: str) -> None:
    import numpy as np
    import xatlas

    data = np.load(src)
    atlas = xatlas.Atlas()
    atlas.add_mesh(data["vertices"], data["faces"])
    pack = xatlas.PackOptions()
    pack.resolution = int(data["resolution"])
    pack.padding = int(data["padding"])
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, indices, uvs = atlas[0]
    info = np.array([atlas.width, atlas.height, atlas.atlas_count, atlas.chart_count], dtype=np.int64)
    tmp = dst + ".part.npz"
    np.savez(tmp, vmapping=vmapping, indices=indices, uvs=uvs, info=info)
    import os

    os.replace(tmp, dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
