"""The `napari-sam` command line: one sub-command per module in `napari_sam.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from . import __version__

# Each module defines `add_parser(subparsers)`; the parser it adds sets `func(args) -> int`.
COMMANDS = [
    "napari_sam.commands.models",
    "napari_sam.commands.annotate",
    "napari_sam.commands.automask",
    "napari_sam.commands.evaluate",
    "napari_sam.commands.export_onnx",
    "napari_sam.commands.track",
    "napari_sam.commands.finetune",
]


def build_parser() -> argparse.ArgumentParser:
    """The `napari-sam` argument parser, with every sub-command of `COMMANDS`.

    Returns
    -------
    argparse.ArgumentParser
        Its parsed arguments carry `func(args) -> int` for the chosen sub-command.
    """
    parser = argparse.ArgumentParser(
        prog="napari-sam",
        description="Segment Anything for microscopy and large images, without or with napari.")
    parser.add_argument("--version", action="version", version=f"napari-sam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the `napari-sam` command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (None: `sys.argv[1:]`).

    Returns
    -------
    int
        The exit status: 0 on success, 1 on an error, 2 on a usage error, 130 when
        interrupted.
    """
    # first of all, before torch is imported (the OpenMP wait policy can be set only then):
    # the command line owns its process and tunes it for CPU inference unless
    # NAPARI_SAM_TUNE_CPU=0 (see napari_sam/runtime/cpu.py)
    from .runtime.cpu import tune_cpu_if_requested

    try:
        tune_cpu_if_requested(default=True)
    except ValueError as err:
        print(f"napari-sam: error: {err}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        if isinstance(err, OSError) and err.strerror:  # name the file, once
            name = str(err.filename or "")
            msg = err.strerror if name in err.strerror else f"{name}: {err.strerror}"
        print(f"napari-sam: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
