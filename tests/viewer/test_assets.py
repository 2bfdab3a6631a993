"""``s3d view``: asset loading, the viser camera convention, and the page in headless Chromium."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scene3d.core.cameras import look_at
from scene3d.export.splat import write_splats
from scene3d.renderers.splats import init_from_points
from scene3d.viewer.assets import AssetViewer, SplatScene, is_splat_ply, load_asset, render_splats, viser_camera_to_viewmat


def _splat_file(tmp_path: Path, suffix: str = ".ply") -> Path:
    g = torch.Generator().manual_seed(0)
    xyz = torch.rand(400, 3, generator=g) - 0.5
    rgb = (xyz + 0.5).clamp(0, 1)  # colour varies across the blob
    params = init_from_points(xyz, rgb, sh_degree=1, init_opacity=0.9, generator=g)
    return write_splats(params, tmp_path / f"blob{suffix}")


def _mesh_file(tmp_path: Path) -> Path:
    import trimesh

    mesh = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    mesh.visual.vertex_colors = np.tile(np.array([[200, 80, 40, 255]], np.uint8), (len(mesh.vertices), 1))
    path = tmp_path / "box.ply"
    mesh.export(path)
    return path


def _textured_glb(tmp_path: Path) -> Path:
    """A box with a bright checkerboard texture, written by scene3d's GLB writer (+Y up on disk)."""
    import trimesh

    from scene3d.export.textured import TexturedMesh, write_textured_mesh

    box = trimesh.creation.box(extents=(1.0, 0.6, 0.4)).unwrap()  # per-corner UVs from xatlas
    checker = (np.indices((8, 8)).sum(0) % 2).astype(bool)
    texture = np.where(checker[..., None], np.array([230, 40, 40], np.uint8), np.array([40, 200, 60], np.uint8))
    mesh = TexturedMesh(np.asarray(box.vertices, np.float32), np.asarray(box.faces), np.asarray(box.visual.uv, np.float32),
                        np.ascontiguousarray(texture.repeat(8, 0).repeat(8, 1)))  # fmt: skip
    return write_textured_mesh(mesh, tmp_path / "box.glb")[0]


def _quat_from_matrix(m: np.ndarray) -> np.ndarray:
    w = math.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    return np.array([w, (m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), (m[1, 0] - m[0, 1]) / (4 * w)])


def test_viser_camera_convention_projects_target_to_centre():
    eye, target = torch.tensor([1.0, -3.0, 1.5]), torch.tensor([0.1, 0.2, 0.3])
    c2w_gl = look_at(eye, target).numpy()
    r_cv = c2w_gl[:3, :3] @ np.diag([1.0, -1.0, -1.0])  # viser reports OpenCV axes
    viewmat = viser_camera_to_viewmat(_quat_from_matrix(r_cv), eye.numpy())
    p = viewmat @ torch.cat([target, torch.ones(1)])
    assert p[2] > 0  # in front of the camera (+Z forward)
    torch.testing.assert_close(p[:2], torch.zeros(2), atol=1e-5, rtol=0)


def test_load_asset_tells_splats_from_meshes(tmp_path: Path):
    splat_ply, splat_bin, mesh_ply = _splat_file(tmp_path), _splat_file(tmp_path, ".splat"), _mesh_file(tmp_path)
    assert is_splat_ply(splat_ply) and not is_splat_ply(mesh_ply)
    assert isinstance(load_asset(splat_ply), SplatScene) and load_asset(splat_ply).sh_degree == 1
    assert isinstance(load_asset(splat_bin), SplatScene) and load_asset(splat_bin).sh_degree == 0
    assert len(load_asset(mesh_ply).faces) == 12
    glb = load_asset(_textured_glb(tmp_path))  # glTF's +Y up turned back to +Z up: the box's 0.4 m side is up
    np.testing.assert_allclose(glb.extents, [1.0, 0.6, 0.4], atol=1e-6)
    assert glb.visual.material.baseColorTexture is not None
    with pytest.raises(FileNotFoundError):
        load_asset(tmp_path / "missing.ply")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown asset type"):
        load_asset(tmp_path / "notes.txt")


def test_render_splats_frames_the_blob(tmp_path: Path):
    scene = load_asset(_splat_file(tmp_path))
    centre, radius = scene.centre_and_radius
    eye = torch.tensor(centre + radius * np.array([0.0, -2.2, 1.2]), dtype=torch.float32)
    c2w = look_at(eye, torch.tensor(centre, dtype=torch.float32)).numpy()
    viewmat = viser_camera_to_viewmat(_quat_from_matrix(c2w[:3, :3] @ np.diag([1.0, -1.0, -1.0])), eye.numpy())
    frame = render_splats(scene, viewmat, math.radians(50), 64, 48)
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    centre_patch = frame[16:32, 24:40].astype(float)
    assert centre_patch.mean() > 40 and frame[0, 0].max() < 40  # the blob is in the middle, the corners are empty


@pytest.mark.browser
@pytest.mark.parametrize("kind", ["splat", "mesh", "textured"])
def test_view_in_browser(tmp_path: Path, browser, kind: str):
    path = {"splat": _splat_file, "mesh": _mesh_file, "textured": _textured_glb}[kind](tmp_path)
    viewer = AssetViewer(path, port=browser.free_port(), max_res=256)
    viewer.start()
    try:
        browser.page.goto(f"http://127.0.0.1:{viewer.port}")
        verdict = browser.wait_for_scene(f"viewer/s3d_view_{kind}.png", timeout_s=90)
        if kind == "splat":
            assert viewer.frames_sent >= 1
        assert verdict
    finally:
        viewer.stop()


def test_a_render_error_is_shown_to_the_user_and_the_stream_goes_on(tmp_path: Path, monkeypatch, caplog):
    """An exception in the render thread reaches the page (a notification) and the terminal; a later camera move
    renders again, instead of the page freezing on its last frame."""
    import logging
    import threading
    import time
    from types import SimpleNamespace

    from scene3d.viewer import assets

    viewer = AssetViewer(_splat_file(tmp_path), max_res=32)
    failures = [RuntimeError("CUDA out of memory (simulated)")]
    real_render = assets.render_splats

    def render(*args, **kwargs):
        if failures:
            raise failures.pop()
        return real_render(*args, **kwargs)

    monkeypatch.setattr(assets, "render_splats", render)
    sent, notes = [], []
    camera = SimpleNamespace(wxyz=np.array([1.0, 0.0, 0.0, 0.0]), position=np.array([0.0, 0.0, -3.0]), fov=0.9, aspect=1.0)
    client = SimpleNamespace(
        client_id=7, camera=camera, scene=SimpleNamespace(set_background_image=lambda frame, **kw: sent.append(frame)),
        add_notification=lambda **kw: notes.append(kw),
    )  # fmt: skip
    viewer.server = SimpleNamespace(get_clients=lambda: {7: client})

    def wait_for(what, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline and thread.is_alive(), "the render thread stopped or hung"
            time.sleep(0.01)

    with caplog.at_level(logging.ERROR, logger=assets.__name__):
        thread = threading.Thread(target=viewer._stream, args=(client,), daemon=True)
        thread.start()
        try:
            wait_for(lambda: notes)
            assert notes[0]["title"] == "Rendering failed" and "CUDA out of memory" in notes[0]["body"]
            assert viewer.render_errors == ["RuntimeError: CUDA out of memory (simulated)"] and not sent
            camera.position = np.array([0.0, 0.1, -3.0])  # the user moves the camera: rendering resumes
            wait_for(lambda: len(sent) >= 2)  # a moving frame, then the full-size one at rest
        finally:
            viewer._stop.set()
            thread.join(timeout=30)
    assert len(notes) == 1 and any("failed" in r.getMessage() and r.exc_info for r in caplog.records)
