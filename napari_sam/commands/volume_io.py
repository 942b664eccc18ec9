"""File handling shared by `automask --3d` and `track`: reading a stack with its spacing,
output names, skipping inputs whose outputs exist."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np


def read_stack(path, channels=None, lead: str = "Z") -> Tuple[np.ndarray, object, tuple]:
    """(stack (N, Y, X[, C]), ImageMeta, spacing (dz, dy, dx) or None) of a 3D file.

    lead: the axis expected first ("Z" for volumes, "T" for time-lapses); a file with only
    one leading axis of the other kind is accepted (a TIFF without metadata is "ZYX").

    Parameters
    ----------
    path : str or os.PathLike
        The image file.
    channels : int or sequence of int, optional
        0-based channel(s) to read (see `io.images.read_image`).
    lead : str
        "Z" or "T": with "T", dz in the spacing is the smaller pixel side.

    Returns
    -------
    stack : ndarray
        (N, Y, X) or (N, Y, X, C), the file's dtype.
    meta : ImageMeta
    spacing : (float, float, float) or None
        (dz, dy, dx) in µm; None when the file gives no pixel size.
    """
    from ..io.images import read_image

    arr, meta = read_image(path, channels)
    axes = meta.axes
    core = axes.replace("T", "").replace("Z", "")
    if arr.ndim - len(core) != 1 or core not in ("YX", "YXC"):
        raise ValueError(f"{path}: expected one stack axis (Z or T) before Y, X (and "
                         f"channels), got axes {axes!r} of shape {arr.shape}; save the "
                         "volume or time-lapse alone in the file")
    spacing = None
    if meta.pixel_size:
        dy, dx = (float(v) for v in meta.pixel_size)
        dz = float(meta.z_size) if (meta.z_size and lead == "Z") else min(dy, dx)
        spacing = (dz, dy, dx)
    return arr, meta, spacing


def stem(path) -> str:
    """The output name stem of an input file (its name without the image suffix).

    Parameters
    ----------
    path : str or os.PathLike
        The input image.

    Returns
    -------
    str
        E.g. "cells" for "cells.ome.tif".
    """
    from ..batch import output_stem

    return output_stem(Path(path))


def outputs_exist(paths, overwrite: bool) -> bool:
    """True when every output is there and nothing is to be redone.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        The outputs of one input.
    overwrite : bool
        --overwrite: always redo (gives False).

    Returns
    -------
    bool
        True when none is to be written.
    """
    from ..batch import is_complete

    return not overwrite and all(is_complete(Path(p)) for p in paths)


def automask_kwargs(args) -> dict:
    """Keywords for `automask` from the `automask` command's options (None ones left out).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed `automask` options (points_per_side, ..., min_area).

    Returns
    -------
    dict
        Keyword -> value for the options given.
    """
    kw = dict(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
              crop_n_layers=args.crop_n_layers, pred_iou_thresh=args.pred_iou_thresh,
              stability_thresh=args.stability_thresh, nms_thresh=args.nms_thresh,
              min_area=args.min_area)
    return {k: v for k, v in kw.items() if v is not None}


def model_predictor(args):
    """The Predictor the command's --model, --device and --precision ask for.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options with model, device and optionally precision.

    Returns
    -------
    Predictor
    """
    from ..predictor import Predictor

    return Predictor(args.model, device=args.device,
                     precision=getattr(args, "precision", "auto"))


def log_line(quiet: bool):
    """A function that prints one progress message to stderr (beside tqdm's bars).

    Parameters
    ----------
    quiet : bool
        --quiet: the function does nothing.

    Returns
    -------
    callable
        log(msg: str) -> None.
    """
    import sys

    if quiet:
        return lambda msg: None
    from tqdm import tqdm

    return lambda msg: tqdm.write(msg, file=sys.stderr)

