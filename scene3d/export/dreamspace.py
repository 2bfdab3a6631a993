"""``s3d export dreamspace``: a DreamSpace run's retextured room as a textured mesh, and its panorama.

    s3d export dreamspace --load-config outputs/.../config.yml --out room.glb [--panorama pano.png] [--overwrite]

``--out`` ending in ``.glb`` writes one GLB (texture inside, +Y up, unlit material: what a VR headset's viewer or
``s3d view room.glb`` opens); ending in ``.obj`` writes ``room.obj`` + ``room.mtl`` + ``room.png``
(:mod:`scene3d.export.textured`). ``--panorama`` writes the fine 360° panorama as an equirectangular PNG. The mesh is
the atlas' mesh (the room split along the chart seams) in the dataset's frame, with the run's final texture (or,
for a run stopped early, the texture as far as it got: coloured texels, the imitating network's prediction in the
gaps).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from scene3d.export.textured import FORMATS, TexturedMesh, write_panorama, write_textured_mesh

logger = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    """``s3d export dreamspace``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="s3d export dreamspace", description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-config", type=Path, required=True, help="the run's config.yml")
    parser.add_argument("--out", type=Path, required=True, help=f"textured mesh file, one of {', '.join(FORMATS)}")
    parser.add_argument("--panorama", type=Path, default=None, help="also write the 360° panorama here (.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    if args.out.suffix.lower() not in FORMATS:
        parser.error(f"--out must end in one of {FORMATS}, got {args.out.name!r}")

    from scene3d.export.runs import DREAMSPACE_METHODS, load_pipeline, read_run, require_method

    run = read_run(args.load_config)  # one clear error for a wrong path or method before anything loads
    require_method(run, DREAMSPACE_METHODS, "s3d export dreamspace")
    _, pipeline, _, step = load_pipeline(run)
    model = pipeline.model
    for attribute in ("atlas", "display", "current_panorama"):
        if not hasattr(model, attribute):
            raise ValueError(f"{type(model).__name__} has no {attribute!r}: `s3d export dreamspace` exports DreamSpace runs")
    if not (model.has_atlas and model.has_texture):
        raise ValueError(f"{args.load_config}: the run has no texture yet (step {step}); train past the panorama's "
                         "projection first")  # fmt: skip
    mesh = TexturedMesh.from_atlas(model.atlas, model.display)
    written = write_textured_mesh(mesh, args.out, overwrite=args.overwrite)
    if args.panorama is not None:
        if not model.has_panorama:
            raise ValueError(f"{args.load_config}: the run has no panorama yet (step {step})")
        pano = model.current_panorama().permute(1, 2, 0).clamp(0, 1).mul(255).round().byte().cpu().numpy()
        written.append(write_panorama(np.ascontiguousarray(pano), args.panorama, overwrite=args.overwrite))
    for path in written:
        logger.info("wrote %s", path)
    logger.info("%d faces, %dx%d texture, from step %d", len(mesh.faces), mesh.texture.shape[1], mesh.texture.shape[0], step)
    return 0
