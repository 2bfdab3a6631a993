"""Generated views as frustums with their images, and the stage status line, in a real viser server."""

from __future__ import annotations

import logging
import math
import socket

import numpy as np
import torch

from scene3d.core.cameras import look_at
from scene3d.methods.common.viewer import GenerationViewer, frustum_pose, thumbnail
from scene3d.methods.common.views import GeneratedView

K = torch.tensor([[40.0, 0.0, 32.0], [0.0, 40.0, 24.0], [0.0, 0.0, 1.0]])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _view(index: int, eye: tuple[float, float, float]) -> GeneratedView:
    c2w = look_at(torch.tensor(eye), torch.zeros(3))
    return GeneratedView(rgb=torch.rand(48, 64, 3), c2w=c2w, K=K, index=index)


def test_frustum_pose_is_the_opencv_camera_of_the_opengl_pose():
    import viser.transforms as vtf

    c2w = look_at(torch.tensor([1.0, -2.0, 0.5]), torch.zeros(3))
    wxyz, position = frustum_pose(c2w)
    R = vtf.SO3(wxyz).as_matrix()
    # OpenCV +Z (forward) is OpenGL -Z; OpenCV +Y (down) is OpenGL -Y
    assert np.allclose(R[:, 2], -c2w[:3, 2].numpy(), atol=1e-6)
    assert np.allclose(R[:, 1], -c2w[:3, 1].numpy(), atol=1e-6)
    assert np.allclose(position, c2w[:3, 3].numpy() * 10.0)


def test_thumbnail_keeps_the_aspect_and_caps_the_side():
    small = thumbnail(torch.rand(48, 64, 3))
    assert small.shape == (48, 64, 3) and small.dtype == np.uint8
    big = thumbnail(torch.ones(300, 400, 3) * 0.5)
    assert big.shape == (75, 100, 3) and int(big[0, 0, 0]) == 128


def test_views_and_status_reach_a_live_viser_server(caplog):
    import viser

    viewer = GenerationViewer()
    with caplog.at_level(logging.INFO, logger="scene3d.methods.common.viewer"):
        viewer.set_status("view 1 of 3 — generating")
    assert "view 1 of 3 — generating" in caplog.text
    viewer.add_view(_view(0, (0.0, -3.0, 1.0)))  # before the viewer exists: remembered
    assert viewer.num_drawn == 0

    server = viser.ViserServer(host="127.0.0.1", port=_free_port(), verbose=False)
    drawn: list[dict] = []
    add_frustum = server.scene.add_camera_frustum

    def spy(**kwargs):
        drawn.append(kwargs)
        return add_frustum(**kwargs)

    server.scene.add_camera_frustum = spy  # type: ignore[method-assign]
    try:
        viewer.attach(server)
        assert viewer.num_drawn == 1
        viewer.add_view(_view(1, (3.0, 0.0, 1.0)))
        assert viewer.num_drawn == 2
        assert [d["name"] for d in drawn] == ["/generated_views/view_00000", "/generated_views/view_00001"]
        assert math.isclose(drawn[1]["fov"], 2 * math.atan(24 / 40), rel_tol=1e-6)
        assert math.isclose(drawn[1]["aspect"], 64 / 48, rel_tol=1e-6)
        assert drawn[1]["image"].shape == (48, 64, 3)
        assert np.allclose(viewer._handles[1].position, [30.0, 0.0, 10.0])
        viewer.set_status("view 2 of 3 — inpainting")
        assert viewer._markdown.content.endswith("view 2 of 3 — inpainting")
    finally:
        server.stop()

