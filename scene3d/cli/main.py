"""``s3d``: scene3d's command line. Each subcommand lives in its own module and is imported only when used.

    s3d demo                      generate a scene, train, evaluate, export (what `make demo` runs)
    s3d data synth ...            synthetic scenes with ground truth
    s3d models list|fetch|check   the pretrained models scene3d's priors use
    s3d export ...                meshes, splats, panoramas from a trained run
    s3d view FILE                 open an exported splat or mesh in the browser

scene3d's own input errors (:class:`scene3d.core.errors.Scene3DError`: bad data, a missing pretrained model, a wrong
run folder or output folder) end a command with one line naming what to fix, and exit status 2.
"""

from __future__ import annotations

import importlib
import os
import sys

# Before torch loads libgomp: OpenMP threads that spin while waiting stall torch 10x and more whenever another
# process or thread holds one of a small machine's cores. A value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# name -> (module with a ``main(argv: list[str]) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("scene3d.cli.demo", "generate a scene, train s3d-nerf-tiny on CPU, evaluate, export"),
    "data": ("scene3d.cli.data", "synthetic scenes with ground truth (s3d data synth --kind KIND --out DIR)"),
    "models": ("scene3d.cli.models", "list, fetch and check the pretrained models behind scene3d.priors"),
    "export": ("scene3d.cli.export", "export meshes, splats and other assets from a trained run"),
    "view": ("scene3d.cli.view", "open an exported splat (.ply, .splat) or mesh in the browser"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: s3d COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `s3d COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a subcommand; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("--version", "-V"):
        from scene3d import __version__

        print(f"scene3d {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"s3d: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    from scene3d.core.errors import Scene3DError

    try:
        return int(module.main(rest) or 0)
    except Scene3DError as err:
        # scene3d's own input errors (bad data, a missing model, a wrong run folder) name what to fix: that one
        # line is the whole report, not a traceback
        print(f"s3d {name}: {err}", file=sys.stderr)
        return 2


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())
