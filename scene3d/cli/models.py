"""``s3d models``: list, pre-download and verify the pretrained models behind ``scene3d.priors``.

    s3d models list                       every preset: id, revision setting, methods, whether it is on disk
    s3d models fetch NAME [--revision R] [--to DIR]
                                          download a preset (into the HF cache, or DIR/NAME); needs the network.
                                          ``fetch tiny-random --to DIR`` writes the tiny random set (no network)
    s3d models check [NAME ...] [--load]  verify presets are complete offline (exit 1 if one is not); --load
                                          also reads them with their loaders. NAME may be groundtruth:PATH (a
                                          dataset written by `s3d data synth`): its twins are built and each
                                          operation is run once at a stored view

Common options: ``--models-dir DIR`` (local copies, default ``$SCENE3D_MODELS_DIR``), ``--hf-cache DIR``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from scene3d.core.errors import ModelNotFoundError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s3d models", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models-dir", type=Path, default=None,
                        help="folder of local copies (one sub-folder per preset); default $SCENE3D_MODELS_DIR")
    common.add_argument("--hf-cache", type=Path, default=None, help="Hugging Face hub cache (default: HF's own)")
    sub.add_parser("list", parents=[common], help="show every preset and whether it is available offline")
    fetch = sub.add_parser("fetch", parents=[common], help="download a preset (network needed)")
    fetch.add_argument("name", help="a preset name from `s3d models list`, or tiny-random")
    fetch.add_argument("--revision", default=None, help="branch, tag or commit (default: the preset's)")
    fetch.add_argument("--to", type=Path, default=None, help="write into DIR/NAME instead of the HF cache")
    check = sub.add_parser("check", parents=[common], help="verify presets are complete offline")
    check.add_argument("names", nargs="*", help="presets to check (default: all), tiny-random, or groundtruth:PATH")
    check.add_argument("--load", action="store_true", help="also load each model with its loader")
    return parser


def _settings(args: argparse.Namespace, revision: str | None = None, name: str | None = None):  # noqa: ANN202
    from scene3d.priors.settings import PriorSettings

    settings = PriorSettings(hf_cache_dir=args.hf_cache)
    if args.models_dir is not None:
        settings.models_dir = args.models_dir
    if revision and name:
        settings.revisions[name] = revision
    return settings


def registered_methods() -> set[str]:
    """The ``ns-train`` methods installed in this environment (nerfstudio's plugin entry points), ``-tiny`` included."""
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="nerfstudio.method_configs")}


def _list(args: argparse.Namespace) -> int:
    from scene3d.priors.presets import PRESETS, locate

    settings = _settings(args)
    installed = registered_methods()
    rows = [("NAME", "KIND", "MODEL", "REVISION SETTING", "USED BY", "STATUS")]
    for p in PRESETS.values():
        try:
            loc = locate(p.name, settings)
            status = f"{loc.source} ({loc.revision[:12] if loc.source == 'hf-cache' else loc.path})"
        except ModelNotFoundError:
            status = "missing"
        used_by = ",".join(m for m in p.used_by if m in installed) or "-"  # only methods that exist here
        rows.append((p.name, p.kind, p.hf_id, f"${p.revision_setting}", used_by, status))
    rows.append(("tiny-random", "all", "(built in memory, seeded)", "-", "tests, *-tiny", "always"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    print(f"\nLocal copies: {settings.models_dir or '$SCENE3D_MODELS_DIR (unset)'}; fetch with `s3d models fetch NAME`.")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from scene3d.priors.presets import TINY_RANDOM, fetch

    if args.name == TINY_RANDOM:
        if args.to is None:
            print("s3d models fetch tiny-random needs --to DIR (it writes the tiny set there)")
            return 2
        from scene3d.priors.tiny import save_tiny_random

        print(f"wrote the tiny-random set to {save_tiny_random(args.to)}")
        return 0
    try:
        path = fetch(args.name, _settings(args, args.revision, args.name), args.to)
    except ValueError as err:
        print(f"s3d models fetch: {err}")
        return 2
    except Exception as err:  # network and hub errors have many types; report them and fail
        print(f"s3d models fetch {args.name} failed: {type(err).__name__}: {err}")
        return 1
    print(f"{args.name}: {path}")
    return 0


def _check_tiny() -> None:
    import torch

    from scene3d.priors import loading

    sd = loading.load_diffusion("tiny-random", controlnet="tiny-random")
    sd.predict_noise(torch.randn(1, 4, 8, 8), 500, sd.embed("a chair"), 7.5)
    loading.load_inpainting("tiny-random")
    loading.load_depth("tiny-random")(torch.rand(1, 3, 28, 28))
    loading.load_normals("tiny-random")(torch.rand(1, 3, 16, 16))
    loading.load_clip("tiny-random").image_text_similarity(torch.rand(1, 3, 32, 32), "a chair")
    loading.load_vgg("tiny-random")(torch.rand(1, 3, 32, 32))


def _check_groundtruth(preset: str, settings) -> str:  # noqa: ANN001
    """Build every twin of a groundtruth:PATH preset and run each operation once at the dataset's first view."""
    import torch

    from scene3d.core.cameras import CameraBatch
    from scene3d.methods.common.priors import resolve_prior
    from scene3d.priors.sampling import inpaint, text_to_image

    sd = resolve_prior("diffusion", preset, settings)
    stored = sd.source.stored
    cams = CameraBatch.pinhole(stored.c2w[:1], stored.K, stored.width, stored.height)
    image = text_to_image(sd, "the scene", height=stored.height, width=stored.width, cameras=cams).images
    mask = torch.zeros(1, 1, stored.height, stored.width)
    mask[..., stored.height // 4 : 3 * stored.height // 4, stored.width // 4 : 3 * stored.width // 4] = 1.0
    inpaint(resolve_prior("inpainting", preset, settings), image, mask, "the scene", num_images_per_prompt=2,
            cameras=cams)  # fmt: skip
    resolve_prior("depth", preset, settings)(image, cameras=cams)
    resolve_prior("normals", preset, settings)(image, cameras=cams)
    resolve_prior("clip", preset, settings).image_text_similarity(image, "the scene", cameras=cams)
    start = time.perf_counter()
    for _ in range(5):
        sd.source.render(cams.scaled(128, 128), sd.source.target(f"view {_}"), antialias=sd.source.options.antialias)
        sd.source._cache.clear()
    rate = 5 / (time.perf_counter() - start)
    return (f"{stored.kind} scene, {len(stored.scene.objects)} objects, {len(stored.c2w)} stored views; every twin "
            f"ran; {rate:.1f} renders/s at 128 px")  # fmt: skip


def _check(args: argparse.Namespace) -> int:
    from scene3d.priors.loading import load
    from scene3d.priors.presets import PRESETS, TINY_RANDOM, get_preset, locate

    settings = _settings(args)
    names = args.names or list(PRESETS)
    failed = 0
    for name in names:
        start = time.perf_counter()
        try:
            if name.startswith("groundtruth:"):
                print(f"ok       {name}: {_check_groundtruth(name, settings)} ({time.perf_counter() - start:.1f} s)")
                continue
            if name == TINY_RANDOM:
                _check_tiny()
                print(f"ok       {name}: every tiny component built and ran ({time.perf_counter() - start:.1f} s)")
                continue
            get_preset(name)
            loc = locate(name, settings)
            if args.load:
                load(name, settings)
            what = "loaded" if args.load else "complete"
            print(f"ok       {name}: {what} at {loc.path} ({time.perf_counter() - start:.1f} s)")
        except ModelNotFoundError as err:
            failed += 1
            print(f"MISSING  {name}: {err}")
        except ValueError as err:
            failed += 1
            print(f"ERROR    {name}: {err}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return {"list": _list, "fetch": _fetch, "check": _check}[args.action](args)
