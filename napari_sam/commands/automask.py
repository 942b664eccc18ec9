"""`napari-sam automask INPUT... -o OUTDIR`: segment everything in images, stacks and folders.

Argument parsing is split so other features can add options without touching the rest:
`add_arguments(parser)` declares the options (extend it with a new group), and
`batch_options(args)` turns them into keyword arguments for `napari_sam.batch.run_batch`.
"""

from __future__ import annotations

import argparse
import json
import sys


def _int_list(text: str):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _formats(text: str):
    from ..batch import FORMATS

    out = [v.strip().lower() for v in text.split(",") if v.strip()]
    out = ["tif" if v == "tiff" else v for v in out]
    bad = [v for v in out if v not in FORMATS]
    if bad or not out:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {', '.join(bad) or '(none)'}; choose from {','.join(FORMATS)}")
    return out


def _diameter(text: str):
    from ..scale import parse_diameter

    try:
        return parse_diameter(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `automask` command's arguments and option groups.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The `automask` subcommand's parser; inputs, outputs, generation, stacks, tiling,
        geo and 3D options are added to it.
    """
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files (.tif/.tiff/.png/.jpg), folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                        help="folder for <stem>_labels.tif, <stem>_coco.json, <stem>_objects.csv")
    parser.add_argument("--model", default=None, metavar="NAME|PATH",
                        help="registry name or checkpoint file (default: the bundled model)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--format", dest="formats", type=_formats, default=["tif", "coco", "csv"],
                        metavar="tif,coco,csv,geojson,gpkg",
                        help="outputs to write (default: tif,coco,csv); geojson and gpkg are "
                             "polygons in the image's CRS (pip install napari-sam-suite[geo])")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo inputs whose outputs exist (default: skip them)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write <stem>_overlay.png (outlines; stacks: middle slice)")
    parser.add_argument("--channels", type=_int_list, default=None, metavar="0,1",
                        help="channels to use (1 to 3) for images with more than three")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g = parser.add_argument_group("automatic mask generation")
    g.add_argument("--mode", default="auto", choices=("auto", "amg", "ais", "apg"),
                   help="amg: a grid of point prompts; ais: the model's instance decoder and "
                        "a seeded watershed (the bundled model and micro-sam checkpoints with "
                        "a decoder); apg: the decoder's seeds as point prompts for SAM "
                        "(slower than ais, sharper outlines); auto (default): ais when the "
                        "model has a decoder")
    g.add_argument("--diameter", type=_diameter, default=None, metavar="auto|N|off",
                   help="the objects' diameter in pixels: auto (default) estimates it, a "
                        "number gives it, off resizes the whole image to the model input. "
                        "The image reaches the model zoomed so objects have the size the "
                        "model segments best, tile by tile when that is larger than its input")
    g.add_argument("--points-per-side", type=int, default=None, metavar="N",
                   help="amg prompt grid per model input (default: from the object size; 32 "
                        "with --diameter off)")
    g.add_argument("--points-per-batch", type=int, default=64, metavar="N")
    g.add_argument("--crop-n-layers", type=int, default=0, metavar="N",
                   help="extra layers of overlapping crops, for small objects (slower)")
    g.add_argument("--pred-iou-thresh", type=float, default=None, metavar="F",
                   help="keep masks whose predicted IoU is at least F (default: the model's; "
                        "0.88 for SAM checkpoints, calibrated for the bundled model)")
    g.add_argument("--stability-thresh", type=float, default=None, metavar="F",
                   help="keep masks whose stability score is at least F (default: the "
                        "model's; 0.95 for SAM checkpoints)")
    g.add_argument("--nms-thresh", type=float, default=0.7, metavar="F")
    g.add_argument("--min-area", type=int, default=None, metavar="N",
                   help="drop objects smaller than N pixels (default: a tenth of the area of "
                        "a disc of the objects' diameter; 0 with --diameter off)")
    s = parser.add_argument_group("stacks")
    s.add_argument("--link-slices", action="store_true",
                   help="give overlapping objects of neighbouring slices one id (IoU matching)")
    s.add_argument("--link-iou", type=float, default=0.5, metavar="F")
    tiling_arguments(parser)
    geo_arguments(parser)
    from .automask3d import add_arguments as add_volume_arguments

    add_volume_arguments(parser)


def geo_arguments(parser: argparse.ArgumentParser) -> None:
    """Hook for satellite images (--bands, --vector-crs, --simplify, --prompts).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The `automask` parser.
    """
    from .geo import add_arguments as add_geo_arguments

    add_geo_arguments(parser)


def tiling_arguments(parser: argparse.ArgumentParser) -> None:
    """Hook for tiled processing of large images (--tile-size, --overlap, --tiling).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The `automask` parser.
    """
    from .tiled_files import add_arguments as add_tiling_arguments

    add_tiling_arguments(parser)


def batch_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of `run_batch` from parsed arguments.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed `automask` arguments.

    Returns
    -------
    dict
        Keywords for `napari_sam.batch.run_batch` (model, formats, generation options,
        vectors: the geo options or None).
    """
    return dict(
        model=args.model, device=args.device, precision=args.precision, formats=args.formats,
        overwrite=args.overwrite, overlay=args.overlay, channels=args.channels,
        link_slices=args.link_slices, link_iou=args.link_iou,
        mode=args.mode, diameter=args.diameter, points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
        crop_n_layers=args.crop_n_layers, pred_iou_thresh=args.pred_iou_thresh,
        stability_thresh=args.stability_thresh, nms_thresh=args.nms_thresh,
        min_area=args.min_area, vectors=_vector_options(args))


def _vector_options(args: argparse.Namespace):
    if not hasattr(args, "vector_crs"):
        return None
    from .geo import vector_options

    return vector_options(args)


def print_summary(summary: dict, file=None) -> None:
    """Print the failed inputs and a one-line summary of a batch.

    Parameters
    ----------
    summary : dict
        `run_batch`'s summary ("files", "inputs", "processed", "skipped", "failed",
        "objects", "seconds", "outdir").
    file : file object, optional
        Where to print (default: sys.stdout).
    """
    file = file or sys.stdout
    for r in summary["files"]:
        if r["status"] == "failed":
            print(f"FAILED  {r['path']}: {r['error']}", file=file)
    print(f"{summary['inputs']} inputs: {summary['processed']} processed, "
          f"{summary['skipped']} skipped (outputs exist; --overwrite redoes them), "
          f"{summary['failed']} failed; {summary['objects']} objects in "
          f"{summary['seconds']:.1f} s -> {summary['outdir']}", file=file)


def run(args: argparse.Namespace) -> int:
    """Run the `automask` command: 2D batch, tiled, prompted or 3D (--3d).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed `automask` arguments.

    Returns
    -------
    int
        Exit status: 0, 1 when an input failed, 2 when the geo extra is missing.
    """
    if getattr(args, "three_d", False):  # volumes: 3D objects (commands/automask3d.py)
        from .automask3d import run as run_3d

        return run_3d(args)
    from ..batch import prepare_outdir, run_batch
    from ..progress import cli_progress, null_progress

    summary_json = getattr(args, "summary_json", None)
    if summary_json:  # refuse a bad path before the work, not after it
        from ..io.atomic import check_writable

        try:
            check_writable(summary_json, overwrite=True)
        except OSError as err:
            raise ValueError(f"--summary-json {summary_json}: {err.strerror or err}") from err
    prepare_outdir(args.output)
    progress = null_progress if args.quiet else cli_progress("automask")
    log = None
    if not args.quiet:
        if sys.stderr.isatty():
            from tqdm import tqdm

            log = lambda msg: tqdm.write(msg, file=sys.stderr)  # noqa: E731 (keeps the bar)
        else:
            log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if getattr(args, "bands", None) is not None:
        from .geo import resolve_bands

        resolve_bands(args)
    if set(args.formats) & {"geojson", "gpkg"}:
        from ..io.georef import require

        try:
            require("shapely")
            if "gpkg" in args.formats:
                require("pyogrio")
        except ImportError as err:
            print(f"napari-sam automask: error: {err}", file=sys.stderr)
            return 2
    if getattr(args, "prompts", None):
        from .geo import run_prompts

        summary = run_prompts(args, batch_options(args), progress, log)
    elif getattr(args, "tiling", "off") != "off":  # large 2D images go tile by tile
        from .tiled_files import run_with_tiling

        summary = run_with_tiling(args, batch_options(args), progress, log)
    else:
        summary = run_batch(args.inputs, args.output, progress=progress, log=log,
                            **batch_options(args))
    print_summary(summary)
    if summary_json:  # atomic: a full disk leaves the old file (or none), never a stub
        from ..io.atomic import atomic_write

        with atomic_write(summary_json, overwrite=True, mode="w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    return 1 if summary["failed"] else 0


def add_parser(subparsers) -> None:
    """Add the `automask` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What `ArgumentParser.add_subparsers()` returned.
    """
    parser = subparsers.add_parser(
        "automask", help="segment everything in images, stacks and folders",
        description="Automatic segmentation with a grid of point prompts. Writes, per input, "
                    "OUTDIR/<stem>_labels.tif (uint32, same Y/X shape, Z/T kept), "
                    "<stem>_coco.json and <stem>_objects.csv. Inputs whose outputs all exist "
                    "are skipped unless --overwrite; a file that fails is reported and the "
                    "rest go on. Exit status 1 if any input failed.")
    add_arguments(parser)
    parser.add_argument("--summary-json", default=None, metavar="PATH",
                        help="also write the summary as JSON")
    parser.set_defaults(func=run)
