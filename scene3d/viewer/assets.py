"""A browser viewer for exported assets: 3DGS ``.ply`` / ``.splat`` files and meshes (``s3d view FILE``).

Splats are rendered on the server through :func:`scene3d.renderers.gaussians.rasterize` (scene3d's torch
rasterizer on a CPU, gsplat on a CUDA device) and streamed to the page as images, so viewing needs no GPU on either
side. Meshes (``.ply`` without 3DGS properties, ``.obj``, ``.glb``) are sent to the page and drawn by its WebGL
renderer. viser's usual orbit controls move the camera; a splat frame is re-rendered at most at the resolution cap
and at a quarter of it while the camera moves.

The server binds 127.0.0.1 unless told otherwise (``--host 0.0.0.0`` shares it on the network).

Example:
    >>> viewer = AssetViewer("scene.ply", port=8080)   # doctest: +SKIP
    >>> viewer.start(); viewer.wait()                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor


logger = logging.getLogger(__name__)

MESH_SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".stl", ".off")


def is_splat_ply(path: str | Path) -> bool:
    """Whether a ``.ply`` file is a 3DGS splat (its header declares ``f_dc_0``) rather than a mesh or point cloud."""
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic or 'end_header' in the first 64 KiB)")
    return b"f_dc_0" in head[:end]


@dataclass
class SplatScene:
    """Raw splat parameters (``s3d-splat`` names: log scales, logit opacities, SH coefficients)."""

    params: dict[str, Tensor]

    @property
    def sh_degree(self) -> int:
        bases = 1 + self.params["features_rest"].shape[1]
        return int(round(math.sqrt(bases))) - 1

    @property
    def centre_and_radius(self) -> tuple[np.ndarray, float]:
        """A robust centre and radius of the splat centres (5th to 95th percentile box), for framing the view."""
        means = self.params["means"].numpy()
        lo, hi = np.percentile(means, 5, axis=0), np.percentile(means, 95, axis=0)
        return (lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2 + 1e-6)


def load_asset(path: str | Path) -> SplatScene | "trimesh.Trimesh":  # noqa: F821
    """Read a splat (``.ply`` with 3DGS properties, ``.splat``) or a mesh.

    Raises:
        ValueError: for an unknown suffix, a file that is neither, or an empty asset.
        FileNotFoundError: if the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".splat" or (suffix == ".ply" and is_splat_ply(path)):
        from scene3d.export.splat import read_ply, read_splat

        params = read_splat(path) if suffix == ".splat" else read_ply(path)
        if params["means"].shape[0] == 0:
            raise ValueError(f"{path}: holds no Gaussians")
        return SplatScene(params)
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unknown asset type '{suffix}'; expected .ply, .splat, .obj or .glb")
    import trimesh

    mesh = trimesh.load(path, force="mesh")
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"{path}: holds no triangles (a point cloud PLY? view it as splats or in a mesh tool)")
    if suffix in (".glb", ".gltf"):  # glTF is +Y up; the viewer's world is +Z up, as scene3d's
        from scene3d.core.cameras import Z_UP_TO_Y_UP

        mesh.apply_transform(Z_UP_TO_Y_UP.numpy().T)
    return mesh


def viser_camera_to_viewmat(wxyz: np.ndarray, position: np.ndarray) -> Float[Tensor, "4 4"]:
    """World-to-camera matrix (OpenCV axes, as ``rasterize`` takes) of a viser client camera.

    viser reports ``P_world = R p_camera + t`` with ``R`` from ``wxyz`` in OpenCV axes (+Z forward, +Y down).
    """
    w, x, y, z = (float(v) for v in wxyz)
    rot = torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float32,
    )
    t = torch.tensor(np.asarray(position, dtype=np.float32))
    viewmat = torch.eye(4)
    viewmat[:3, :3] = rot.T
    viewmat[:3, 3] = -(rot.T @ t)
    return viewmat


def render_splats(
    scene: SplatScene,
    viewmat: Float[Tensor, "4 4"],
    fov_y: float,
    width: int,
    height: int,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 frame of ``scene`` from a world-to-camera matrix and a vertical field of view."""
    from scene3d.renderers.splats import render

    focal = 0.5 * height / math.tan(fov_y / 2)
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    bg = torch.tensor([background], dtype=torch.float32)
    with torch.no_grad():
        rgb, _, _ = render(scene.params, viewmat[None], K[None], width, height, sh_degree=scene.sh_degree, background=bg)
    return (rgb[0, ..., :3].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


class AssetViewer:
    """Serve one asset in the browser through viser (see the module docstring).

    Args:
        path: a 3DGS ``.ply``, a ``.splat`` or a mesh file.
        host: interface to bind; 127.0.0.1 (this machine only) by default.
        port: port to serve on.
        max_res: the longer side of a splat frame once the camera rests, in pixels.
    """

    def __init__(self, path: str | Path, *, host: str = "127.0.0.1", port: int = 8080, max_res: int = 512) -> None:
        if max_res < 16:
            raise ValueError(f"max_res must be at least 16, got {max_res}")
        self.path = Path(path)
        self.asset = load_asset(self.path)
        self.host, self.port, self.max_res = host, port, max_res
        self.server = None
        self._stop = threading.Event()
        self.frames_sent = 0
        self.render_errors: list[str] = []
        """Distinct render errors, in order (each also logged and shown in the page)."""

    @property
    def kind(self) -> str:
        return "splat" if isinstance(self.asset, SplatScene) else "mesh"

    def _framing(self) -> tuple[np.ndarray, float]:
        if isinstance(self.asset, SplatScene):
            return self.asset.centre_and_radius
        lo, hi = self.asset.bounds
        return (lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2 + 1e-6)

    def start(self) -> None:
        """Start the server (returns at once; the page is then at ``http://HOST:PORT``)."""
        import viser

        self.server = viser.ViserServer(host=self.host, port=self.port, verbose=False)
        self.server.scene.set_up_direction("+z")
        centre, radius = self._framing()
        eye = centre + radius * np.array([0.0, -2.2, 1.2])
        if self.kind == "mesh":
            self.server.scene.add_mesh_trimesh("/asset", self.asset)
        self.server.gui.add_markdown(f"**{self.path.name}**: {self._summary()}")

        def on_connect(client) -> None:
            client.camera.position = eye
            client.camera.look_at = centre
            client.camera.up_direction = (0.0, 0.0, 1.0)
            if self.kind == "splat":
                threading.Thread(target=self._stream, args=(client,), daemon=True).start()

        self.server.on_client_connect(on_connect)
        logger.info("viewing %s (%s) at http://%s:%d", self.path, self.kind, self.host, self.port)

    def _summary(self) -> str:
        if isinstance(self.asset, SplatScene):
            return f"{self.asset.params['means'].shape[0]:,} Gaussians, SH degree {self.asset.sh_degree}"
        return f"{len(self.asset.vertices):,} vertices, {len(self.asset.faces):,} faces"

    def _stream(self, client) -> None:
        """Render a client's camera whenever it changes: a quarter-size frame while moving, full size at rest.

        A frame that fails to render (or to send) does not end the stream: the error goes to the terminal with its
        traceback and to the page as a notification (once per distinct error), the last good frame stays, and the
        next camera move tries again.
        """
        assert isinstance(self.asset, SplatScene)
        last_key, rested, shown_error = None, False, None
        while not self._stop.is_set() and client.client_id in self.server.get_clients():
            try:
                cam = client.camera
                key = (tuple(np.round(cam.wxyz, 5)), tuple(np.round(cam.position, 5)), round(cam.fov, 5), round(cam.aspect, 4))
                aspect = cam.aspect if cam.aspect > 0 else 4 / 3
            except AssertionError:  # the client has not reported its camera yet
                time.sleep(0.05)
                continue
            moving = key != last_key
            if not moving and rested:
                time.sleep(0.03)
                continue
            scale = 4 if moving else 1
            long_side = max(16, self.max_res // scale)
            width, height = (long_side, max(8, int(long_side / aspect))) if aspect >= 1 else (max(8, int(long_side * aspect)), long_side)
            try:
                frame = render_splats(self.asset, viser_camera_to_viewmat(cam.wxyz, cam.position), cam.fov, width, height)
                client.scene.set_background_image(frame, format="jpeg", jpeg_quality=80 if moving else 92)
            except Exception as err:  # noqa: BLE001 - shown to the user; the stream goes on
                message = f"{type(err).__name__}: {err}"
                if message != shown_error:
                    shown_error = message
                    self.render_errors.append(message)
                    logger.error("rendering %s at %dx%d failed", self.path.name, width, height, exc_info=err)
                    self._notify(client, message)
                last_key, rested = key, True  # wait for the camera to move before trying again
                continue
            shown_error = None
            self.frames_sent += 1
            last_key, rested = key, not moving

    @staticmethod
    def _notify(client, message: str) -> None:
        try:
            client.add_notification(
                title="Rendering failed", body=f"{message[:300]} (details in the terminal; move the camera to retry)",
                with_close_button=True, color="red",
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - the client left; the terminal has the error
            logger.debug("could not show the render error to client %s", getattr(client, "client_id", "?"))

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.stop()

    def wait(self) -> None:
        """Block until interrupted (Ctrl-C)."""
        try:
            while not self._stop.is_set():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
