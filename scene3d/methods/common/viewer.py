"""What a generation method shows in nerfstudio's viewer: its generated views as camera frustums with their images,
and a status line with the current stage (``"view 3 of 9 — inpainting"``).

:class:`GenerationViewer` is a nerfstudio ``ViewerControl``: put one on the pipeline as a public attribute and
nerfstudio's viewer hands it the viser server when the viewer starts (``ViewerControl._setup``). Until then (no
viewer: ``--vis tensorboard``, tests, benchmarks) it only remembers what to draw, so a method calls it the same way
with or without a viewer::

    self.generation_viewer = GenerationViewer()                    # in the pipeline's __init__
    self.generation_viewer.set_status("view 3 of 9 — inpainting")  # whenever the stage or activity changes
    self.generation_viewer.add_view(view)                          # each GeneratedView, as it is made

The status line is a markdown panel at the top of the viewer's side bar, and it is also logged (``logging``,
INFO) whenever it changes, so a headless run shows the same stages in its log. Frustums live under
``/generated_views/`` in viser's scene tree (a user can hide them there); clicking one moves the viewer's camera
to it. The scene itself grows in the viewer as training proceeds: nerfstudio re-renders the model while it trains.

:class:`ViewsDataset` is the stand-in ``train_dataset`` a method without input images gives nerfstudio's trainer
(which requires one): it exposes the planned cameras, for the viewer's initial viewpoint, and no images, so the
trainer draws no frustums of its own (this module draws the generated ones, as they appear).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.viewer.viewer_elements import ViewerControl

from scene3d.methods.common.views import GeneratedView

logger = logging.getLogger(__name__)

VISER_SCALE = 10.0
"""nerfstudio's ``VISER_NERFSTUDIO_SCALE_RATIO``: world units are multiplied by this in viser's scene."""
THUMBNAIL_SIDE = 100
"""Longest side of the image drawn on a frustum, in pixels (nerfstudio draws its training images at 100 px)."""
FRUSTUM_COLOR = (255, 140, 0)
"""Frustums of generated views are orange (nerfstudio draws its training cameras in dark grey)."""


def frustum_pose(c2w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """viser's ``(wxyz, position)`` of a camera frustum for an OpenGL camera-to-world matrix.

    viser draws frustums in OpenCV axes (+Z forward, +Y down): the rotation is turned by π about the camera's x
    axis; positions are in viser's scene units (world × :data:`VISER_SCALE`).
    """
    import viser.transforms as vtf

    m = c2w.detach().double().cpu().numpy()
    rotation = vtf.SO3.from_matrix(m[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)
    return np.asarray(rotation.wxyz), m[:3, 3] * VISER_SCALE


def thumbnail(rgb: torch.Tensor, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """``(h, w, 3)`` uint8 image with its longest side at most ``side`` pixels (area-averaged)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    image = rgb.detach().float().clamp(0.0, 1.0).permute(2, 0, 1)[None]
    if scale < 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image = torch.nn.functional.interpolate(image, size=size, mode="area")
    return (image[0].permute(1, 2, 0) * 255.0).round().to(torch.uint8).cpu().numpy()


class GenerationViewer(ViewerControl):
    """Status line and generated-view frustums in nerfstudio's viewer (see the module docstring).

    Args:
        frustum_scale: size of the drawn frustums (nerfstudio's ``camera_frustum_scale`` is 0.1).
        title: heading of the status panel.
    """

    def __init__(self, *, frustum_scale: float = 0.1, title: str = "Generation") -> None:
        self.frustum_scale = frustum_scale
        self.title = title
        self.status = "starting"
        self.viser_server: Any = None
        self._markdown: Any = None
        self._pending: list[GeneratedView] = []
        self._handles: dict[int, Any] = {}
        self._lock = threading.Lock()

    # nerfstudio calls this once its viewer is up
    def _setup(self, viewer: Any) -> None:  # type: ignore[override]
        self.attach(viewer.viser_server)

    def attach(self, server: Any) -> None:
        """Start drawing into ``server`` (a ``viser.ViserServer``): the status panel and every view so far."""
        with self._lock:
            self.viser_server = server
            self._markdown = server.gui.add_markdown(self._markdown_text(), order=-1000.0)  # above nerfstudio's tabs
            pending, self._pending = self._pending, []
        for view in pending:
            self._draw(view)

    @property
    def num_drawn(self) -> int:
        """Frustums drawn so far."""
        return len(self._handles)

    def _markdown_text(self) -> str:
        return f"**{self.title}:** {self.status}"

    def set_status(self, text: str) -> None:
        """Show ``text`` as the current stage (logged when it changes)."""
        if text == self.status:
            return
        self.status = text
        logger.info("%s: %s", self.title, text)
        with self._lock:
            if self._markdown is not None:
                self._markdown.content = self._markdown_text()

    def add_view(self, view: GeneratedView) -> None:
        """Draw ``view`` as a frustum with its image (now, or as soon as the viewer is up)."""
        with self._lock:
            if self.viser_server is None:
                self._pending.append(view)
                return
        self._draw(view)

    def _draw(self, view: GeneratedView) -> None:
        wxyz, position = frustum_pose(view.c2w)
        fov_y = 2.0 * math.atan(0.5 * view.height / float(view.K[1, 1]))
        handle = self.viser_server.scene.add_camera_frustum(
            name=f"/generated_views/view_{view.index:05d}",
            fov=fov_y,
            aspect=view.width / view.height,
            scale=self.frustum_scale,
            color=FRUSTUM_COLOR,
            image=thumbnail(view.rgb),
            wxyz=wxyz,
            position=position,
        )

        def jump_to(event: Any) -> None:
            with event.client.atomic():
                event.client.camera.position = event.target.position
                event.client.camera.wxyz = event.target.wxyz

        handle.on_click(jump_to)
        self._handles[view.index] = handle


class ViewsDataset(InputDataset):
    """A ``train_dataset`` without images for methods that generate their own (nerfstudio's trainer needs one).

    Args:
        cameras: the planned cameras (nerfstudio ``Cameras``); the viewer starts near the first one.
        scene_box: the method's scene box.
    """

    def __init__(self, cameras: Cameras, scene_box: SceneBox) -> None:  # noqa: D107 (InputDataset's init reads files)
        self.cameras = cameras
        self.scene_box = scene_box
        self.alpha_color = None
        self.mask_filenames = None
        self.metadata: dict[str, Any] = {}
        self.scale_factor = 1.0
        self._dataparser_outputs = None

    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int) -> dict[str, Any]:
        raise IndexError("generated views are drawn by GenerationViewer, not by nerfstudio's dataset images")

