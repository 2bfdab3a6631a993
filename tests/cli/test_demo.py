"""`s3d demo` end to end at test size: data, training, held-out metrics, turntable, mesh, printed commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch


@pytest.mark.slow
@pytest.mark.data
def test_demo_runs_every_stage_and_prints_the_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    from scene3d.cli import demo
    from scene3d.cli.main import main

    # the NeRF stages; stages other pieces add (ReGS's stylization) have their own tests
    mine = {"generate_data", "train", "evaluate", "turntable", "export_mesh", "print_commands"}
    assert mine <= {stage.__name__ for stage in demo.STAGES}
    monkeypatch.setattr(demo, "STAGES", [stage for stage in demo.STAGES if stage.__name__ in mine])

    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--size", "32", "--views", "12", "--iterations", "30", "--frames", "3",
            "--mesh-resolution", "40", "--threads", "1"]  # fmt: skip
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)  # the demo sets the process's thread count; later tests keep theirs
    printed = capsys.readouterr().out
    configs = list((out / "runs").glob("demo/s3d-nerf-tiny/*/config.yml"))
    assert len(configs) == 1
    config = configs[0]
    for name in ("eval_views.png", "turntable.mp4", "mesh.ply"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "data" / "transforms.json").exists()
    assert "held-out views" in printed and "PSNR" in printed and "SSIM" in printed
    flat = " ".join(printed.split())  # rich may wrap long lines
    assert f"ns-viewer --load-config {config} --viewer.websocket-host 127.0.0.1" in flat
    assert f"s3d export mesh --load-config {config} --out" in flat
    assert f"ns-render interpolate --load-config {config}" in flat
    # a second run reuses the generated scene, and trains to the same numbers (seeded as ns-train seeds)
    from rich.console import Console

    ctx = demo.DemoContext(out=out, args=demo.parse_args(argv[1:]), console=Console())
    demo.generate_data(ctx)
    assert ctx.data == out / "data" and "reusing the scene" in capsys.readouterr().out
    ctx.out = tmp_path / "again"
    try:
        torch.set_num_threads(1)
        demo.train(ctx)
        demo.evaluate(ctx)
    finally:
        torch.set_num_threads(threads)
    first = re.search(r"held-out views \(\d+\): PSNR (\d+\.\d\d) dB", flat)
    assert first is not None and f"{ctx.metrics['psnr']:.2f}" == first.group(1)


def test_thread_choice():
    from scene3d.cli.demo import choose_threads

    assert choose_threads("3")[0] == 3
    n, why = choose_threads("auto")
    assert n >= 1 and "load" in why
    with pytest.raises(ValueError):
        choose_threads("0")
