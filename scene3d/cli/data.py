"""``s3d data``: synthetic scenes with ground truth, and dataset checks.

    s3d data synth --kind KIND --out DIR [--size PX] [--views N] [--seed S] [--stylized] [--steps T] [--instances N]
                   [--mesh PATH [--mesh-up y|z]]
    s3d data check DIR
"""

from __future__ import annotations

import argparse
import sys
import time


def _parser() -> argparse.ArgumentParser:
    from scene3d.datasets.synthetic import DEFAULT_INSTANCES, DEFAULT_SIZE, DEFAULT_VIEWS, KINDS

    parser = argparse.ArgumentParser(prog="s3d data", description="Synthetic scenes with ground truth; checks.")
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser(
        "synth",
        help="render a synthetic scene into a nerfstudio dataset",
        description="Render a procedural scene (RGB, depth, normals, masks, points, meshes) into DIR.",
    )
    synth.add_argument("--kind", required=True, choices=KINDS, help="scene kind")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument(
        "--size", type=int, default=None, help=f"image side in pixels, 32..800 (default {DEFAULT_SIZE})"
    )
    synth.add_argument(
        "--views",
        type=int,
        default=None,
        help=f"views (per step for changing, per instance for collection; default {DEFAULT_VIEWS})",
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed (same arguments give identical files)")
    synth.add_argument("--stylized", action="store_true", help="also render a stylized look into images_stylized/")
    synth.add_argument("--steps", type=int, default=4, help="time steps of a changing scene (default 4)")
    synth.add_argument(
        "--instances", type=int, default=None, help=f"instances of a collection (default {DEFAULT_INSTANCES})"
    )
    synth.add_argument(
        "--mesh",
        default=None,
        help="a mesh file (OBJ, PLY, GLB/glTF, OFF, STL) that replaces the objects of an object or forward scene, "
        "normalised to the scene's scale",
    )
    synth.add_argument(
        "--mesh-up",
        default="auto",
        choices=("auto", "y", "z"),
        help="the mesh file's up axis (auto: y for GLB/glTF/OBJ, z otherwise)",
    )
    check = sub.add_parser("check", help="validate a dataset and print a summary")
    check.add_argument("path", help="dataset folder, its transforms.json, or a changing scene's root")
    return parser


def main(argv: list[str]) -> int:
    """Run ``s3d data``; returns the exit status."""
    args = _parser().parse_args(argv)
    from scene3d.core.errors import DataError
    from scene3d.datasets.validate import validate_dataset

    if args.command == "synth":
        from scene3d.datasets.synthetic import generate_scene

        start = time.perf_counter()
        try:
            out = generate_scene(
                args.kind,
                args.out,
                size=args.size,
                views=args.views,
                seed=args.seed,
                stylized=args.stylized,
                steps=args.steps,
                instances=args.instances,
                mesh=args.mesh,
                mesh_up=args.mesh_up,
            )
        except ValueError as err:
            print(f"s3d data synth: {err}", file=sys.stderr)
            return 2
        elapsed = time.perf_counter() - start
        summary = validate_dataset(out)
        print(summary.describe())
        print(f"rendered {summary.num_frames} views in {elapsed:.2f} s ({summary.num_frames / elapsed:.1f} views/s)")
        return 0
    try:
        summary = validate_dataset(args.path)
    except DataError as err:
        print(f"s3d data check: {err}", file=sys.stderr)
        return 1
    print(summary.describe())
    print("ok")
    return 0
