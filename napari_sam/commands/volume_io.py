"""File handling shared by `automask --3d` and `track`: reading a stack with its spacing,
output names, skipping inputs whose outputs exist."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np


def read_stack(path, channels=None, lead: str = "Z") -> Tuple[np.ndarray, object, tuple]:
    """(stack (N, Y, X[, C]), ImageMeta, spacing (dz, dy, dx) or None) of a 3D file.

    lead: the axis expected first ("Z" for volumes, "T" for time-lapses); a file with only
    one leading axis of the other kind is accepted (a TIFF without metadata is "ZYX")."""
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
    from ..batch import output_stem

    return output_stem(Path(path))


def outputs_exist(paths, overwrite: bool) -> bool:
    """True when every output is there and nothing is to be redone."""
    from ..batch import is_complete

    return not overwrite and all(is_complete(Path(p)) for p in paths)


def automask_kwargs(args) -> dict:
    """Keywords for `automask` from the `automask` command's options (None ones left out)."""
    kw = dict(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
              crop_n_layers=args.crop_n_layers, pred_iou_thresh=args.pred_iou_thresh,
              stability_thresh=args.stability_thresh, nms_thresh=args.nms_thresh,
              min_area=args.min_area)
    return {k: v for k, v in kw.items() if v is not None}


def model_predictor(args):
    from ..predictor import Predictor

    return Predictor(args.model, device=args.device,
                     precision=getattr(args, "precision", "auto"))


def log_line(quiet: bool):
    import sys

    if quiet:
        return lambda msg: None
    from tqdm import tqdm

    return lambda msg: tqdm.write(msg, file=sys.stderr)

