"""`napari-sam automask --3d VOLUME... -o OUTDIR`: automatic 3D segmentation of volumes.

Per input: OUTDIR/<stem>_labels.tif (uint32 (Z, Y, X), one id per 3D object, pixel size and
Z spacing kept) and <stem>_objects.csv (one row per 3D object: `volume.props`). COCO holds
2D masks, so it is not written for 3D labels (said on stderr). Inputs whose outputs exist
are skipped unless --overwrite; a failing file is reported and the others go on.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from .volume_io import automask_kwargs, log_line, model_predictor, outputs_exist, read_stack, stem


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the "volumes (--3d)" option group.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The `automask` parser.
    """
    g = parser.add_argument_group("volumes (--3d)")
    g.add_argument("--3d", dest="three_d", action="store_true",
                   help="inputs are (Z, Y, X) volumes: segment every slice and link the "
                        "objects across slices into 3D objects (one id each)")
    g.add_argument("--z-spacing", type=float, default=None, metavar="UM",
                   help="Z step in the XY pixels' unit when the file does not say")
    g.add_argument("--min-extent", type=int, default=2, metavar="N",
                   help="drop 3D objects on fewer than N slices (default 2)")
    g.add_argument("--link-min-iou", type=float, default=0.3, metavar="F",
                   help="IoU above which objects of neighbouring slices can be linked")


def run(args: argparse.Namespace) -> int:
    """Segment each input volume into 3D objects and write its outputs.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed `automask --3d` arguments.

    Returns
    -------
    int
        Exit status: 0, or 1 when an input failed.
    """
    from ..batch import expand_inputs
    from ..io.labels import write_labels_tif
    from ..io.tables import write_csv
    from ..progress import null_progress, tqdm_progress
    from ..volume import automask_volume
    from ..volume.props import object_table_3d

    log = log_line(args.quiet)
    files, missing = expand_inputs(args.inputs)
    for pattern, why in missing:
        print(f"napari-sam: {pattern}: {why}", file=sys.stderr)
    if not files:
        raise FileNotFoundError("no input images found")
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    if "coco" in args.formats:
        print("napari-sam: COCO files hold 2D masks: not written for 3D labels", file=sys.stderr)
    predictor = None
    failed = done = skipped = objects = 0
    start = time.time()
    for path in files:
        todo = {f: outdir / (stem(path) + s) for f, s in
                (("tif", "_labels.tif"), ("csv", "_objects.csv")) if f in args.formats}
        if outputs_exist(todo.values(), args.overwrite):
            skipped += 1
            continue
        try:
            stack, meta, spacing = read_stack(path, args.channels, "Z")
            if args.z_spacing:
                dy, dx = spacing[1:] if spacing else (1.0, 1.0)
                spacing = (float(args.z_spacing), dy, dx)
                meta = replace(meta, z_size=float(args.z_spacing))
            predictor = predictor or model_predictor(args)
            progress = null_progress if args.quiet else tqdm_progress(Path(path).name)
            labels = automask_volume(stack, predictor, spacing=spacing,
                                     min_extent=args.min_extent, min_iou=args.link_min_iou,
                                     diameter=getattr(args, "diameter", None),
                                     progress=progress, **automask_kwargs(args))
            if "tif" in todo:
                write_labels_tif(todo["tif"], labels, meta.with_array(labels, "ZYX"),
                                 overwrite=args.overwrite)
            if "csv" in todo:
                write_csv(todo["csv"], object_table_3d(labels, stack, spacing),
                          overwrite=args.overwrite)
            objects += int(labels.max())
            done += 1
            log(f"{path}: {int(labels.max())} objects in 3D")
        except (OSError, ValueError, RuntimeError) as err:
            failed += 1
            print(f"FAILED  {path}: {err}", file=sys.stderr)
    print(f"{len(files)} inputs: {done} processed, {skipped} skipped (outputs exist; "
          f"--overwrite redoes them), {failed} failed; {objects} 3D objects in "
          f"{time.time() - start:.1f} s -> {outdir}")
    return 1 if failed else 0
