"""`s3d export mesh|splat|epigraf` on a wrong path or a run of the wrong method: one clear line, before anything
heavy (nerfstudio, the pipeline, the dataset) loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scene3d.core.errors import RunFolderError
from scene3d.export.runs import NERF_METHODS, SPLAT_METHODS, read_run, require_method

CONFIG = """\
!!python/object:scene3d.methods.common.trainer.S3DTrainerConfig
_target: !!python/name:scene3d.methods.common.trainer.S3DTrainer ''
data: null
experiment_name: scene
method_name: {method}
output_dir: !!python/object/apply:pathlib.PosixPath
- outputs
pipeline: !!python/object:nerfstudio.pipelines.base_pipeline.VanillaPipelineConfig
  datamanager: !!python/object:nerfstudio.data.datamanagers.full_images_datamanager.FullImageDatamanagerConfig
    data: !!python/object/apply:pathlib.PosixPath
    - /data
    - object
    dataparser: !!python/object:scene3d.datasets.dataparser.Scene3DDataParserConfig
      data: !!python/object/apply:pathlib.PosixPath []
    camera_res_scale_factor: 1.0
relative_model_dir: !!python/object/apply:pathlib.PosixPath
- nerfstudio_models
steps: !!python/tuple
- 1
- 2
timestamp: 2024-01-01_000000
"""


def _run(tmp_path: Path, method: str, *, checkpoint: bool = True) -> Path:
    run = tmp_path / "outputs" / "scene" / method / "2024-01-01_000000"
    (run / "nerfstudio_models").mkdir(parents=True)
    if checkpoint:
        (run / "nerfstudio_models" / "step-000000099.ckpt").write_bytes(b"not loaded by the checks")
    (run / "config.yml").write_text(CONFIG.format(method=method))
    return run / "config.yml"


def test_a_run_config_is_read_as_plain_data(tmp_path: Path) -> None:
    run = read_run(_run(tmp_path, "s3d-nerf-tiny"))
    assert run.method_name == "s3d-nerf-tiny" and run.data == Path("/data/object")
    assert run.checkpoint_dir == run.config_path.parent / "nerfstudio_models" and run.checkpoint_steps == [99]
    assert run.tree["pipeline"]["__type__"].endswith("VanillaPipelineConfig") and run.tree["steps"] == (1, 2)
    require_method(run, NERF_METHODS, "s3d export mesh")  # the right method passes


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda tmp: tmp / "missing" / "config.yml", "does not exist"),
        (lambda tmp: _run(tmp, "s3d-nerf-tiny").parent, "is a folder.*pass the config.yml inside it"),
        (lambda tmp: (tmp / "t.json").write_text(json.dumps({"frames": []})) and tmp / "t.json", "not a nerfstudio run config"),
        (lambda tmp: (tmp / "bad.yml").write_text("a: [") and tmp / "bad.yml", "not a YAML file"),
    ],
)
def test_a_wrong_path_is_one_clear_error(tmp_path: Path, make, match: str) -> None:
    with pytest.raises(RunFolderError, match=match):
        read_run(make(tmp_path))


def test_a_run_of_another_kind_names_the_command_to_use(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match=r"s3d-splat-tiny run \(Gaussian splats\).*use `s3d export splat`"):
        require_method(read_run(_run(tmp_path, "s3d-splat-tiny")), NERF_METHODS, "s3d export mesh")
    with pytest.raises(RunFolderError, match=r"s3d-nerf run \(a NeRF\).*use `s3d export mesh`"):
        require_method(read_run(_run(tmp_path, "s3d-nerf")), SPLAT_METHODS, "s3d export splat")
    with pytest.raises(RunFolderError, match="holds no step-.*checkpoint"):
        require_method(read_run(_run(tmp_path / "b", "s3d-nerf", checkpoint=False)), NERF_METHODS, "s3d export mesh")
    require_method(read_run(_run(tmp_path / "c", "my-nerf-plugin")), NERF_METHODS, "s3d export mesh")  # unknown: checked later


def test_s3d_export_fails_fast_with_one_line(tmp_path: Path) -> None:
    """All three exporters, a missing config and a run of the wrong method, in one fresh process (nothing preloaded)."""
    cases = []
    for kind, wrong in (("mesh", "s3d-splat-tiny"), ("splat", "s3d-nerf-tiny"), ("epigraf", "s3d-nerf-tiny")):
        out = str(tmp_path / kind / ("x.ply" if kind != "epigraf" else "x"))
        cases.append((["export", kind, "--load-config", str(tmp_path / "nope" / "config.yml"), "--out", out], "does not exist"))
        cases.append((["export", kind, "--load-config", str(_run(tmp_path / kind, wrong)), "--out", out], f"is a {wrong} run"))
    code = (
        "import contextlib, io, json, sys\nfrom scene3d.cli.main import main\nresults = []\n"
        f"for argv in {[c[0] for c in cases]!r}:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        rc = main(argv)\n"
        "    results.append([rc, err.getvalue(), 'nerfstudio' in sys.modules])\n"
        "print(json.dumps(results))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for (argv, expected), (rc, stderr, heavy) in zip(cases, results, strict=True):
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert rc == 2 and len(lines) == 1, (argv, stderr)
        assert lines[0].startswith(f"s3d export: {argv[3]}") and expected in lines[0], lines
        assert not heavy, f"nerfstudio was imported before the check: {argv}"
    assert not [p for kind in ("mesh", "splat", "epigraf") for p in (tmp_path / kind).glob("x*")]  # nothing written
