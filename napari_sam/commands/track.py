"""`napari-sam track MOVIE... -o OUTDIR`: track cells through time-lapses, with divisions.

Per input (a (T, Y, X) or (T, Y, X, C) file): OUTDIR/<stem>_RES/ in the Cell Tracking
Challenge result format (mask000.tif ..., res_track.txt), <stem>_labels.tif (uint32 (T, Y,
X), one id per track) and <stem>_tracks.csv (one row per cell and frame: track id, frame,
centroid, area, parent). With --labels, the given per-frame labels are linked instead of
segmenting (no model is loaded).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .automask import _diameter, _int_list


def add_parser(subparsers) -> None:
    """Add the `track` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What `ArgumentParser.add_subparsers()` returned.
    """
    p = subparsers.add_parser(
        "track", help="track cells through time-lapses (divisions, CTC export)",
        description=__doc__.split("\n\n", 1)[1])
    p.add_argument("inputs", nargs="+", metavar="MOVIE", help="(T, Y, X[, C]) TIFF files")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.add_argument("--labels", nargs="+", default=None, metavar="LABELS",
                   help="per-frame label TIFFs to link, one per movie (no segmentation)")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="registry name or checkpoint file (default: the bundled model)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--channels", type=_int_list, default=None, metavar="0,1")
    p.add_argument("--points-per-side", type=int, default=32, metavar="N")
    p.add_argument("--pred-iou-thresh", type=float, default=None, metavar="F")
    p.add_argument("--stability-thresh", type=float, default=None, metavar="F")
    p.add_argument("--min-area", type=int, default=0, metavar="N")
    p.add_argument("--min-iou", type=float, default=0.3, metavar="F",
                   help="IoU above which a cell continues a track (default 0.3)")
    p.add_argument("--max-gap", type=int, default=1, metavar="N",
                   help="frames a track may miss and still continue (default 1)")
    p.add_argument("--min-length", type=int, default=1, metavar="N")
    p.add_argument("--diameter", type=_diameter, default=None, metavar="auto|N|off",
                   help="the cells' diameter in pixels: auto (default) estimates it on the "
                        "middle frame, a number is used as it is, off resizes whole frames "
                        "to the model's input")
    p.add_argument("--method", default="auto", choices=("auto", "memory", "prompt"),
                   help="how a cell missed on a frame is followed into it: memory (SAM 2.1's "
                        "memory of its last frames; SAM 2.1 models only), prompt (the frame "
                        "before's box and mask), auto (memory for SAM 2.1 models)")
    p.add_argument("--no-fill-gaps", action="store_true",
                   help="do not follow cells the segmentation missed on a frame")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Track (or link the given labels of) each movie and write its outputs.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed `track` arguments.

    Returns
    -------
    int
        Exit status: 0, or 1 when a movie failed.
    """
    from ..io.labels import read_labels, write_labels_tif
    from ..io.tables import write_csv
    from ..progress import null_progress, tqdm_progress
    from ..volume import track
    from .volume_io import log_line, model_predictor, outputs_exist, read_stack, stem

    log = log_line(args.quiet)
    if args.labels is not None and len(args.labels) != len(args.inputs):
        raise ValueError(f"--labels gives {len(args.labels)} files for {len(args.inputs)} "
                         "movies; give one labels file per movie")
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    predictor = None
    failed = done = skipped = 0
    start = time.time()
    for j, path in enumerate(args.inputs):
        s = stem(path)
        res_dir = outdir / f"{s}_RES"
        outs = [outdir / f"{s}_labels.tif", outdir / f"{s}_tracks.csv",
                res_dir / "res_track.txt"]
        if outputs_exist(outs, args.overwrite):
            skipped += 1
            continue
        try:
            frames, meta, spacing = read_stack(path, args.channels, "T")
            progress = null_progress if args.quiet else tqdm_progress(Path(path).name)
            if args.labels is not None:
                given = read_labels(args.labels[j])[0]
                result = track(frames, labels=given, min_iou=args.min_iou,
                               max_gap=args.max_gap, min_length=args.min_length)
            else:
                predictor = predictor or model_predictor(args)
                kw = dict(points_per_side=args.points_per_side, min_area=args.min_area,
                          pred_iou_thresh=args.pred_iou_thresh,
                          stability_thresh=args.stability_thresh)
                result = track(frames, predictor, min_iou=args.min_iou, max_gap=args.max_gap,
                               min_length=args.min_length, fill_gaps=not args.no_fill_gaps,
                               diameter=args.diameter, method=args.method,
                               progress=progress, **kw)
            result.write_ctc(res_dir, overwrite=args.overwrite)
            write_labels_tif(outs[0], result.labels, meta.with_array(result.labels, "TYX"),
                             overwrite=args.overwrite)
            write_csv(outs[1], result.table(), overwrite=args.overwrite)
            done += 1
            log(f"{path}: {len(result.lineage)} tracks, {len(result.divisions)} divisions")
        except (OSError, ValueError, RuntimeError) as err:
            failed += 1
            print(f"FAILED  {path}: {err}", file=sys.stderr)
    print(f"{len(args.inputs)} movies: {done} tracked, {skipped} skipped (outputs exist; "
          f"--overwrite redoes them), {failed} failed in {time.time() - start:.1f} s "
          f"-> {outdir}")
    return 1 if failed else 0
