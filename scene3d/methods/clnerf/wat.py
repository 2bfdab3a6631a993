"""The WAT (World Across Time) layout of the official CLNeRF code, read as scans in one normalised frame.

A WAT scene folder holds ``images/<capture>/<frame>.jpg`` (one sub-folder per capture time) and a single COLMAP model
``sparse/0/{cameras,images,points3D}.bin`` registering every image of every capture. The official reader
(``datasets/NGPA/colmap.py::ColmapDataset_NGPA_CLNerf``) does, and :func:`read_wat` does the same:

1. sort the registered images by name; a capture's task id is the position of its folder among the folders in
   that order (``name_to_task``); the held-out views are each capture's first image and every 8th after it;
2. centre the camera-to-world poses on the average pose (``center_poses``: origin at the point cloud's mean, z the
   mean camera z axis, y from the mean y axis);
3. scale so that the largest "far" depth (99.9th percentile of the points' depths in each camera) becomes 8;
4. model the scene in the cube ``[−scale, scale]³`` (the official ``--scale``, 8 to 32 per scene).

Deviation: COLMAP distortion (SIMPLE_RADIAL/RADIAL/OPENCV) is passed on to nerfstudio's cameras, which undistort the
rays; the official code ignores it. Poses are converted from COLMAP's OpenCV axes to nerfstudio's OpenGL axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.scene_box import SceneBox

from scene3d.core.errors import DataError
from scene3d.methods.clnerf.dataparser import ScanSource, merge_outputs

FAR_DEPTH = 8.0
"""The official normalisation maps the largest far depth to 8."""
HOLDOUT_EVERY = 8


@dataclass(frozen=True)
class WATScene:
    """A WAT scene after the official normalisation (OpenGL camera-to-world, in the cube ``[−scale, scale]³``)."""

    root: Path
    scans: list[ScanSource]
    image_paths: list[Path]
    task_ids: np.ndarray
    """Scan position of every image (name order)."""
    held_out: np.ndarray
    """Whether each image is a held-out (test) view."""
    camera_to_worlds: np.ndarray
    """``(N, 3, 4)``, OpenGL axes."""
    intrinsics: tuple[float, float, float, float]
    size: tuple[int, int]
    distortion: np.ndarray
    """nerfstudio's six distortion parameters ``(k1, k2, k3, k4, p1, p2)``."""
    scale: float

    def outputs(self, split: str, selected: list[int]) -> DataparserOutputs:
        """nerfstudio outputs of the selected scans' ``train`` or held-out (``val``/``test``) images."""
        want_test = split != "train"
        parts = []
        for k, task in enumerate(selected):
            idx = np.nonzero((self.task_ids == task) & (self.held_out == want_test))[0]
            if len(idx) == 0:
                raise DataError(self.root / "images" / self.scans[task].name, None, f"the scan has no {split} images")
            n = len(idx)
            fx, fy, cx, cy = self.intrinsics
            cameras = Cameras(
                camera_to_worlds=torch.from_numpy(self.camera_to_worlds[idx]).float(),
                fx=torch.full((n, 1), fx), fy=torch.full((n, 1), fy), cx=torch.full((n, 1), cx), cy=torch.full((n, 1), cy),
                width=torch.full((n, 1), self.size[0], dtype=torch.long),
                height=torch.full((n, 1), self.size[1], dtype=torch.long),
                distortion_params=torch.from_numpy(np.tile(self.distortion, (n, 1))).float(),
                camera_type=CameraType.PERSPECTIVE,
            )  # fmt: skip
            s = self.scale
            parts.append(
                DataparserOutputs(
                    image_filenames=[self.image_paths[i] for i in idx],
                    cameras=cameras,
                    alpha_color=None,
                    scene_box=SceneBox(aabb=torch.tensor([[-s, -s, -s], [s, s, s]], dtype=torch.float32)),
                    metadata={"background_color": torch.zeros(3)},  # official: black background on real scenes
                )
            )
        scans = [ScanSource(k, self.scans[t].name, self.scans[t].source) for k, t in enumerate(selected)]
        return merge_outputs(parts, scans)


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def center_poses(poses: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The official ``center_poses``: express poses (OpenCV c2w ``(N, 3, 4)``) and points in the average pose's frame."""
    center = points.mean(0)
    z = _normalize(poses[..., 2].mean(0))
    y_ = poses[..., 1].mean(0)
    x = _normalize(np.cross(y_, z))
    y = np.cross(z, x)
    avg = np.eye(4)
    avg[:3] = np.stack([x, y, z, center], 1)
    inv = np.linalg.inv(avg)
    homo = np.concatenate([poses, np.tile(np.array([[[0, 0, 0, 1.0]]]), (len(poses), 1, 1))], 1)
    return (inv @ homo)[:, :3], points @ inv[:3, :3].T + inv[:3, 3]


def read_wat(root: Path, *, scale: float = 8.0) -> WATScene:
    """Read and normalise a WAT scene (module docstring).

    Raises:
        DataError: a missing or unreadable COLMAP file, an unsupported camera model, an image outside a capture
            folder, or a missing image file.
    """
    from nerfstudio.data.utils import colmap_parsing_utils as colmap

    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    root = Path(root)
    sparse = root / "sparse" / "0"
    try:
        cameras = colmap.read_cameras_binary(sparse / "cameras.bin")
        images = colmap.read_images_binary(sparse / "images.bin")
        points = colmap.read_points3D_binary(sparse / "points3D.bin")
    except (OSError, ValueError, IndexError) as err:  # struct errors surface as ValueError / struct.error
        raise DataError(sparse, None, f"cannot read the COLMAP model ({type(err).__name__}: {err})") from err
    if not images:
        raise DataError(sparse / "images.bin", None, "the COLMAP model registers no image")
    if not points:
        raise DataError(sparse / "points3D.bin", None, "the COLMAP model has no 3D points (needed for the normalisation)")
    camera = cameras[min(cameras)]  # the official reader uses camera 1: WAT captures share one camera
    model, p = camera.model, camera.params
    distortion = np.zeros(6)
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy = p[1], p[2]
        if model != "SIMPLE_PINHOLE":
            distortion[0] = p[3]
        if model == "RADIAL":
            distortion[1] = p[4]
    elif model in ("PINHOLE", "OPENCV"):
        fx, fy, cx, cy = p[:4]
        if model == "OPENCV":
            distortion[[0, 1, 4, 5]] = p[4:8]
    else:
        supported = "SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV"
        raise DataError(sparse / "cameras.bin", "model", f"unsupported camera model {model} ({supported})")

    ordered = sorted(images.values(), key=lambda im: im.name)
    folders: list[str] = []
    task_ids, held_out = [], []
    count = 0
    for im in ordered:
        parts = Path(im.name).parts
        if len(parts) < 2:
            raise DataError(
                sparse / "images.bin", f"images[{im.id}].name",
                f"{im.name!r} is not inside a capture folder (images/<capture>/<frame>)",
            )  # fmt: skip
        folder = parts[0]
        if folder not in folders:
            folders.append(folder)
            count = 0
        task_ids.append(folders.index(folder))
        held_out.append(count % HOLDOUT_EVERY == 0)
        count += 1
    paths = [root / "images" / im.name for im in ordered]
    for path in paths:
        if not path.is_file():
            raise DataError(path, None, "image registered in sparse/0/images.bin is missing")

    bottom = np.array([[0.0, 0.0, 0.0, 1.0]])
    w2c = np.stack([np.concatenate([np.concatenate([im.qvec2rotmat(), im.tvec[:, None]], 1), bottom]) for im in ordered])
    c2w = np.linalg.inv(w2c)[:, :3]
    xyz = np.stack([pt.xyz for pt in points.values()])
    c2w, _ = center_poses(c2w, xyz)
    # far depth per image: 99.9th percentile of the depths of the points in front of it (official near/far)
    homo = np.concatenate([xyz, np.ones((len(xyz), 1))], 1)
    far = 0.0
    for m in w2c:
        z = (homo @ m.T)[:, 2]
        z = z[z > 0]
        if len(z):
            far = max(far, float(np.percentile(z, 99.9)))
    if far <= 0:
        raise DataError(sparse / "points3D.bin", None, "no 3D point lies in front of any camera")
    c2w[..., 3] /= far / FAR_DEPTH
    c2w[:, :, 1:3] *= -1.0  # OpenCV (x right, y down, z forward) -> OpenGL (y up, z backward) camera axes

    scans = [ScanSource(k, name, str((root / "images" / name).resolve())) for k, name in enumerate(folders)]
    return WATScene(
        root=root, scans=scans, image_paths=paths, task_ids=np.asarray(task_ids), held_out=np.asarray(held_out),
        camera_to_worlds=c2w.astype(np.float32), intrinsics=(float(fx), float(fy), float(cx), float(cy)),
        size=(int(camera.width), int(camera.height)), distortion=distortion, scale=float(scale),
    )  # fmt: skip
