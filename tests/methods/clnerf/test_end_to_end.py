"""CLNeRF through nerfstudio: three incremental runs (one per scan of a changing scene, each continuing the previous
run), saved, reloaded with nerfstudio's ``eval_setup`` and rendered at every scan; and a whole sequence in one run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from scene3d.core.checkpoint import latest_checkpoint, load_checkpoint
from scene3d.methods.clnerf.datamanager import cameras_from_poses
from scene3d.methods.clnerf.runfolder import SCANS_JSON, STATE_FILE, CarriedState, scans_for_step


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.data
def test_incremental_runs_over_three_scans_save_reload_and_render_each_scan(changing_scene: Path, micro, tmp_path: Path) -> None:
    from nerfstudio.utils.eval_utils import eval_setup

    runs: list[Path] = []
    for t in range(3):
        previous = runs[-1] if runs else None
        before = _digest(previous) if previous is not None else None
        cfg = micro.config(changing_scene / f"step_{t:02d}", iterations=25, previous_run=previous)
        runs.append(micro.run(cfg, tmp_path / "outputs", f"scan{t}"))
        if previous is not None:
            assert _digest(previous) == before, "a run modified the previous run's folder"

    record = json.loads((runs[-1] / SCANS_JSON).read_text())
    assert record["status"] == "complete"
    assert record["renders_scan_ids"] == [0, 1, 2]
    assert [s["name"] for s in record["scans"]] == ["step_00", "step_01", "step_02"]
    assert [Path(s["trained_in"]) for s in record["scans"]] == runs
    assert record["previous_run"] == str(runs[1])
    assert record["kept_between_scans"]["images_stored"] == 0
    assert scans_for_step(record, 24) == [0, 1, 2]
    first = json.loads((runs[0] / SCANS_JSON).read_text())
    assert first["renders_scan_ids"] == [0]
    state = CarriedState.from_state(load_checkpoint(runs[-1] / STATE_FILE), runs[-1] / STATE_FILE)
    assert state.poses.scan_counts() == {s["scan_id"]: s["num_train_poses"] for s in record["scans"]}
    assert state.buffer_images == {}
    load_checkpoint(latest_checkpoint(runs[-1] / "nerfstudio_models"))  # weights only

    # reload through nerfstudio and render every scan the checkpoint holds
    _, pipeline, _, step = eval_setup(runs[-1] / "config.yml", test_mode="test")
    assert step == 24
    model = pipeline.model
    assert model.num_scans == 3
    assert model.dataset_scan_ids.tolist() == [2]
    pose = state.poses.select(state.poses.indices_of_scans([0])[:1])
    renders = {}
    for scan in range(3):
        camera = cameras_from_poses(pose)
        camera.metadata = {"scan_id": torch.full((1, 1), scan)}
        with torch.no_grad():
            renders[scan] = model.get_outputs_for_camera(camera)["rgb"]
        assert renders[scan].shape == (32, 32, 3) and bool(torch.isfinite(renders[scan]).all())
    assert (renders[0] - renders[2]).abs().mean() > 1e-3  # scan 2 has a moved object: its render differs
    metrics = pipeline.get_average_eval_image_metrics()
    assert set(metrics) >= {"psnr", "ssim", "psnr_scan_2"}


def test_a_whole_sequence_in_one_run(sphere_scans: Path, micro, tmp_path: Path) -> None:
    """Every scan of a folder of scans in one ns-train run: scans switch every iterations_per_scan steps."""
    cfg = micro.config(sphere_scans, iterations=6, buffer_size=2)
    cfg.max_num_iterations = 1  # replaced by iterations_per_scan x scans
    run = micro.run(cfg, tmp_path / "outputs", "sequence")
    record = json.loads((run / SCANS_JSON).read_text())
    assert record["status"] == "complete"
    assert record["renders_scan_ids"] == [0, 1, 2]
    ranges = record["checkpoints"]["step_ranges"]
    assert [(r["first_step"], r["last_step"], r["renders_scan_ids"]) for r in ranges] == [
        (0, 5, [0]), (6, 11, [0, 1]), (12, 17, [0, 1, 2]),
    ]  # fmt: skip
    assert scans_for_step(record, 7) == [0, 1]
    # the pipeline saved at the end of scans 0 and 1, the trainer at the end of the run (only the latest is kept)
    assert latest_checkpoint(run / "nerfstudio_models").name == "step-000000017.ckpt"
    state = CarriedState.from_state(load_checkpoint(run / STATE_FILE), run / STATE_FILE)
    assert len(state.buffer.keys) == 2 and set(state.buffer_images) == set(state.buffer.keys)
    assert record["kept_between_scans"]["buffer_images"] == 2
    assert record["kept_between_scans"]["buffer_bytes"] == 2 * 24 * 24 * 3
