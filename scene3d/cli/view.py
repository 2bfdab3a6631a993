"""``s3d view FILE``: open an exported splat (3DGS ``.ply``, ``.splat``) or a mesh in the browser."""

from __future__ import annotations

import argparse
import logging


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="s3d view",
        description="Open a 3DGS .ply, a .splat or a mesh (.ply/.obj/.glb) in the browser. Splats render on this "
        "machine (no GPU needed); meshes render in the page.",
    )
    parser.add_argument("file", help="the asset to view")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 shares it on the network)")
    parser.add_argument("--port", type=int, default=8080, help="port to serve on")
    parser.add_argument("--max-res", type=int, default=512, help="longer side of a splat frame at rest, in pixels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from scene3d.viewer.assets import AssetViewer

    try:
        viewer = AssetViewer(args.file, host=args.host, port=args.port, max_res=args.max_res)
    except (ValueError, FileNotFoundError) as err:
        print(f"s3d view: {err}")
        return 2
    viewer.start()
    print(f"Viewing {args.file} ({viewer.kind}) at http://{args.host}:{args.port} (Ctrl-C to stop)")
    viewer.wait()
    return 0
