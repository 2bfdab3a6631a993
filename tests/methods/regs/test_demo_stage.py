"""The demo's stylization stage (``s3d demo``, stage ``stylize``) at test size."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.data
def test_stylize_stage_scores_exports_and_prints_the_commands(tmp_path: Path, capsys, monkeypatch):
    from rich.console import Console

    from scene3d.cli import demo
    from scene3d.export.splat import read_ply
    from scene3d.methods.regs import demo as regs_demo

    assert "stylize" in [s.__name__ for s in demo.STAGES]  # the demo runs it (before its summary)
    monkeypatch.setattr(regs_demo, "SIZE", 32)
    monkeypatch.setattr(regs_demo, "VIEWS", 12)
    monkeypatch.setattr(regs_demo, "SPLAT_STEPS", 60)
    monkeypatch.setattr(regs_demo, "ITERATIONS", 40)
    ctx = demo.DemoContext(out=tmp_path, args=argparse.Namespace(seed=0), console=Console(width=200))
    demo.stylize(ctx)
    printed = " ".join(capsys.readouterr().out.split())
    assert "stylized (ReGS): novel-view PSNR" in printed and "against the true stylized renders" in printed
    summary = dict(ctx.summary)
    config = Path(summary["stylized run (ns-viewer --load-config)"])
    assert config.is_file() and config.parent.parent.name == "regs-tiny"
    assert f"ns-viewer --load-config {config}" in printed and f"s3d export splat --load-config {config}" in printed
    assert 5.0 < ctx.metrics["stylized_novel_psnr"] < 40.0
    splats = read_ply(tmp_path / "stylized.ply")
    assert splats["means"].shape[0] > 100
