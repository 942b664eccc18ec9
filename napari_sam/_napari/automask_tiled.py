"""The automask widget on large 2D layers: `tiled_automask`, tile by tile (Qt-free).

Which layers: the interactive widget's rule (`tiled_jobs.TilingRule`, through the
`embedding.TiledSetup` of the layer): multiscale or lazy 2D layers, and planes longer than
twice the model's input side. Each tile is segmented at native resolution, then the pieces
are stitched across the seams (`napari_sam.automask.tiled`), so small objects are not lost
to shrinking and an object across a seam gets one id.

Where things go:

- tile embeddings: beside the layer's source file (`<file>.sam-cache/<model>-...`, shared
  with the interactive widget and the command line), or the per-user cache when that folder
  is read-only or holds embeddings of other pixels; layers without a file keep them in
  memory (each tile is computed once per run and dropped), as the interactive widget does;
- the run's folder (`output_folder`): `<file>.sam-cache/automask/` when the layer has a
  file in a writable folder, else `<user cache>/napari-sam/automask/`. It holds the label
  image being painted (`<key>.zarr.partial`, only renamed into place once complete) and
  the per-tile results (`<key>.zarr.work/`): a cancelled run leaves its finished tiles
  there, and the next Run on the same pixels resumes from them (other settings clear them);
- the result: in memory (numpy, uint32) up to `MEMORY_PIXELS`, the limit the interactive
  widget uses for its in-memory labels layer (512 MiB); above, the zarr label image stays
  on disk, `<key>-<time>.zarr` in the run's folder, and is shown as a lazy multiscale layer.

Thresholds are fixed per run: each tile keeps only the candidates that pass them (the core
keeps no per-tile candidates to re-filter), so the widget's sliders apply at the next Run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np

from .layers import MAX_LABELS_PIXELS, SMALLEST_LEVEL

#: results with more pixels than this stay on disk as a zarr label image (512 MiB of uint32)
MEMORY_PIXELS = MAX_LABELS_PIXELS


@dataclass
class TiledOutput:
    """What a tiled run gives the widget."""

    labels: object                    # uint32 (Y, X): numpy, or a zarr array on disk (r+)
    records: List[dict]
    tiles_run: int                    # tiles segmented by this run
    tiles_used: int                   # all tiles of the image
    grid_shape: Tuple[int, int]
    path: Optional[Path] = None       # the zarr label image when the result is on disk
    folder: Optional[Path] = None     # the run's folder (work, partial output)
    info: dict = field(default_factory=dict)

    @property
    def resumed(self) -> int:
        return self.tiles_used - self.tiles_run


def output_folder(path: Optional[str]) -> Path:
    """Where a run's work folder and on-disk result go (see the module docstring)."""
    if path is not None and os.access(Path(path).parent, os.W_OK):
        return Path(str(path) + ".sam-cache") / "automask"
    from ..tiled.cache import default_cache_root

    return default_cache_root().parent / "automask"


def run_key(source, channels, stem: str) -> str:
    """The run's name: the layer's file stem and a hash of its pixels' fingerprint and
    channels, so runs on other images never share (and clear) each other's work."""
    blob = json.dumps({"image": source.fingerprint(), "channels": channels}, sort_keys=True)
    return f"{stem}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


def per_tile(report: Callable) -> Callable:
    """tiled_automask's progress, as the widget shows it (the report may raise Cancelled)."""
    def progress(done, total, message=""):
        if message == "segmenting tiles":
            message = f"segmenting tile {done} of {total} still to do"
        report(done, total, message)
    return progress


def run_tiled(req, model, report: Callable, thresholds: dict, plan=None,
              points_per_side: Optional[int] = None) -> TiledOutput:
    """Segment level 0 of the request's 2D layer tile by tile; see the module docstring.

    `req` is an `automask_job.Request` whose `tiled` names the layer's file (or None);
    `thresholds` are resolved (no None). `plan`: a tiled `scale.ZoomPlan` (tiles at the
    zoom the objects need; None or untiled: the model's native tiles). Raises what `report` raises (Cancelled) after
    removing the half-painted label image; the finished tiles stay for the next run.
    """
    from ..tiled.cache import CacheMismatchError
    from ..tiled.source import ImageSource
    from ..automask import tiled_automask

    path = req.tiled.path if req.tiled is not None else None
    source = ImageSource(req.data, req.channels)
    report(0, 1, "large image: reading the whole-image contrast")
    if path is not None:
        source.path = Path(path)  # only places the cache; the pixels are the layer's
    folder = output_folder(path)
    folder.mkdir(parents=True, exist_ok=True)
    tiles = ({} if plan is None or not plan.tiled
             else {"tile_size": plan.tile, "overlap": plan.overlap})
    key = run_key(source, req.channels, Path(path).stem if path else "layer")
    if tiles:
        key += f"-t{plan.tile}"
    out = folder / f"{key}.zarr"
    kw = dict(points_per_side=points_per_side or req.points_per_side or 32,
              min_area=int(thresholds["min_area"]), **tiles,
              pred_iou_thresh=thresholds["pred_iou_thresh"],
              stability_thresh=thresholds["stability_thresh"], tiles_per_task=1,
              overwrite=True, device=req.device, progress=per_tile(report))
    cache = "auto" if path is not None else None
    try:
        try:
            res = tiled_automask(source, model, out, cache=cache, **kw)
        except CacheMismatchError:
            if cache is None:
                raise
            res = tiled_automask(source, model, out, cache="user", **kw)
    except BaseException:
        shutil.rmtree(str(out) + ".partial", ignore_errors=True)  # never shown, never kept
        raise
    h, w = source.shape2d
    done = dict(records=res.records, tiles_run=res.tiles_run, tiles_used=res.tiles_used,
                grid_shape=tuple(res.grid_shape), folder=folder)
    if h * w <= MEMORY_PIXELS:
        labels = np.asarray(res.labels[:], np.uint32)
        shutil.rmtree(out, ignore_errors=True)
        return TiledOutput(labels, **done)
    from ..io.zarr_arrays import open_array

    final = folder / f"{key}-{time.strftime('%Y%m%d-%H%M%S')}.zarr"
    n = 1
    while final.exists():
        n += 1
        final = folder / f"{key}-{time.strftime('%Y%m%d-%H%M%S')}-{n}.zarr"
    os.replace(out, final)
    return TiledOutput(open_array(final, mode="r+"), path=final, **done)


def labels_levels(labels) -> list:
    """Level 0 and strided (nearest-neighbour) views halving down to about SMALLEST_LEVEL
    pixels: numpy views of a numpy array, dask views of a zarr array (level 0 stays the
    zarr array, so napari's brushes and the interactive widget's commits write to it)."""
    if isinstance(labels, np.ndarray):
        levels, step = [labels], 2
        while max(labels.shape) // step >= SMALLEST_LEVEL:
            levels.append(labels[::step, ::step])
            step *= 2
        return levels
    from .large_image import levels_for

    return [labels] + levels_for(labels, SMALLEST_LEVEL)[1:]
