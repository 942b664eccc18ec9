"""`napari-sam annotate IMAGE [--model M]`: open napari with the interactive widget docked."""

from __future__ import annotations


def _run(args) -> int:
    from .._napari.launch import annotate

    labels = None
    if args.labels:
        import tifffile

        labels = tifffile.imread(args.labels)
    channels = [int(c) for c in args.channels.split(",")] if args.channels else None
    annotate(args.image, model=args.model, device=args.device, labels=labels, channels=channels)
    return 0


def add_parser(subparsers) -> None:
    """Add the `annotate` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What `ArgumentParser.add_subparsers()` returned.
    """
    p = subparsers.add_parser(
        "annotate", help="segment interactively in napari (click, refine, commit)",
        description="Open IMAGE in napari with the interactive segmentation widget docked. "
                    "Needs napari and a Qt binding: pip install 'napari-sam[napari]'.")
    p.add_argument("image", help="image file (TIFF, PNG, JPEG, ...)")
    p.add_argument("--model", default=None,
                   help="registry name (see `napari-sam models list`) or checkpoint file; "
                        "default: the bundled model")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--labels", default=None, help="a labels TIFF to continue from")
    p.add_argument("--channels", default=None,
                   help="channels to read, e.g. 0 or 0,1,2 (default: all)")
    p.set_defaults(func=_run)
