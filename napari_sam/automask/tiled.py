"""Automask on images of any size: per tile, then stitched without seams.

    res = tiled_automask("slide.tif", "bundled", out="slide_labels.zarr", cache="beside")
    res.labels        # zarr array (Y, X) uint32 on disk (numpy when out=None)
    res.records       # id, area, bbox, centroid, predicted_iou, stability, tile

1. Every tile (or, with `foreground`, every tile over foreground) is segmented on its own
   by a *segmenter*: by default `AutomaskSegmenter`, the core AutoMaskGenerator run on the
   tile's embedding (cached or computed) with the whole image's contrast range. The tile's
   label image and records go to a work folder (`<out>.work/`), one chunk per tile, so an
   interrupted run resumes and Dask workers never send label images to the scheduler.
2. `stitch` links the pieces of an object across seams and paints each object once into
   the output, tile by tile.

Memory: a tile's image, embedding and masks per worker, plus a few tiles and a few numbers
per object while stitching; never an image-sized array unless `out` is None.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional

import numpy as np

from ..progress import null_progress
from ..tiled.distributed import map_tasks
from ..tiled.embed import TiledEmbeddings
from ..tiled.stitch import stitch
# the worker plumbing lives in tile_jobs; its names stay importable from here
from .tile_jobs import TileJob, _state, foreground_tiles, release
from .tile_jobs import run_tiles
# the per-tile segmenters live in tile_segmenters; importable from here as before
from .tile_segmenters import AISSegmenter, APGSegmenter, AutomaskSegmenter  # noqa: F401


@dataclass
class TiledAutomaskResult:
    """What `tiled_automask` returns.

    Parameters
    ----------
    labels : ndarray or zarr array (Y, X) uint32
        The stitched objects, 0 = background (numpy, or the zarr array on disk).
    records : list of dict
        One per object: id, area, bbox (row0, col0, row1, col1), centroid (row, col), ...
    tiles_run : int
        Tiles segmented in this call (not taken from an interrupted run's work folder).
    tiles_used : int
        Tiles over foreground (all tiles without a foreground mask).
    grid_shape : tuple of int
        (rows, cols) of the tile grid.
    """

    labels: object
    records: List[dict]
    tiles_run: int
    tiles_used: int
    grid_shape: tuple


def tiled_automask(image, model=None, out=None, *, tile_size: Optional[int] = None,
                   overlap: Optional[int] = None, tile_input: Optional[int] = None,
                   channels=None, cache=None,
                   cache_dtype: str = "float16", foreground=None, segmenter=None,
                   link_iou: float = 0.3, scheduler=None, workers: Optional[int] = None,
                   tiles_per_task: int = 4, keep_work: bool = False, overwrite: bool = False,
                   device="auto", precision="auto", progress=null_progress,
                   **automask_kw) -> TiledAutomaskResult:
    """Segment everything in a 2D image of any size, tile by tile (see the module docstring).

    The tiles are taken at native resolution unless `tile_size` says otherwise; for tiles
    at the objects' zoom use `automask(image)` (or `AutoSegmenter`), which plans them from
    the objects' diameter and calls this function.

    Parameters
    ----------
    image : array-like (numpy, memmap, zarr, dask) (Y, X) or (Y, X, C), or a path
    model : Sam, str or path, optional
        None: the bundled model.
    out : path, optional
        A zarr label image to create (None: labels in memory).
    tile_size, overlap : int, optional
        Tile side and overlap in image pixels (default: the model's, `default_tiling`).
    tile_input : int, optional
        A tile's side in model-input pixels (default: the model's input); a larger one
        (`scale.instance_tile_input`) only with the AIS segmenter on a model with
        `flexible_input`.
    channels : sequence of int, optional
    cache : None, "beside", "user" or a folder
        Where tile embeddings are kept (None: not kept; see `TiledEmbeddings`).
    foreground : ndarray (Y', X') bool, optional
        A coarse mask; only tiles over it are segmented.
    segmenter : callable, optional
        The per-tile segmenter (`AutomaskSegmenter`, `AISSegmenter`, `APGSegmenter`).
    link_iou : float
        IoU above which pieces of an object on two sides of a seam are joined.
    scheduler : None, "threads", "local", "local-threads", "tcp://host:port" or a Client
        Where tiles run (None: one after the other in this process).
    **automask_kw
        Passed to `AutomaskSegmenter` (points_per_side, pred_iou_thresh, ...).

    Returns
    -------
    TiledAutomaskResult
        `labels` (Y, X) uint32 (numpy, or the zarr array at `out`), `records` (one dict per
        object: id, area, bbox (row0, col0, row1, col1), centroid (row, col), ...), tiles
        run and used, and the tile grid's shape.
    """

    embed_kw = dict(tile_size=tile_size, overlap=overlap, channels=channels, cache=cache,
                    cache_dtype=cache_dtype, device=device, precision=precision,
                    tile_input=tile_input)
    emb = TiledEmbeddings(model, image, **embed_kw)
    embed_kw.update(tile_size=emb.grid.tile, overlap=emb.grid.overlap,
                    cache=None if emb.cache_dir is None else str(emb.cache_dir))
    segmenter = segmenter or AutomaskSegmenter(**automask_kw)
    settings = getattr(segmenter, "settings", lambda: {"segmenter": repr(segmenter)})()
    work_sig = {"embeddings": emb.signature, "segmenter": settings}
    if out is not None:
        out = Path(out)
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    tmp = None
    if out is not None:
        work = Path(str(out) + ".work")
    elif scheduler is not None and scheduler != "threads":
        tmp = tempfile.TemporaryDirectory(prefix="napari-sam-tiles-")
        work = Path(tmp.name) / "work"
    else:
        work = None
    image_for_job = emb.source.path if emb.source.path is not None else emb.source.array
    job = TileJob(model=emb.model, image=image_for_job, embed_kw=embed_kw,
                  work=None if work is None else str(work), work_signature=work_sig,
                  segmenter=segmenter)
    try:
        _, results = _state(job, emb=emb)  # this thread's state, also creates the work folder
        used = foreground_tiles(emb.grid, foreground)
        done = results.done()
        todo = [t.index for t in used if t.index not in done]
        # straight to the scheduler (not via tile_jobs.map_tiles): the call chain then
        # enters tile_jobs once, in the worker
        map_tasks(run_tiles, job, todo, scheduler, workers, tiles_per_task, progress,
                  "segmenting tiles")
        labels = _open_output(out, emb.grid.shape, emb.grid.tile)
        records = stitch(emb.grid, results, labels, link_iou=link_iou, progress=progress)
        labels = _publish(labels, out)
        if work is not None and not keep_work and hasattr(results, "remove"):
            results.remove()
    finally:
        release(job)
        if tmp is not None:
            tmp.cleanup()
    return TiledAutomaskResult(labels, records, len(todo), len(used), emb.grid.grid_shape)


def _open_output(out: Optional[Path], shape, tile: int):
    """The label image to paint: numpy, or a zarr array at `<out>.partial` (renamed to `out`
    by `_publish` once complete, so `out` never holds a half-painted image)."""
    if out is None:
        return np.zeros(shape, np.uint32)
    from numcodecs import Blosc

    from ..io.zarr_arrays import open_array

    chunk = min(512, max(tile, 128))
    return open_array(str(out) + ".partial", mode="w", shape=shape,
                      chunks=(chunk, chunk), dtype="uint32", fill_value=0,
                      compressor=Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE))


def _publish(labels, out: Optional[Path]):
    if out is None:
        return labels
    from ..io.zarr_arrays import open_array

    if out.exists():
        shutil.rmtree(out)
    os.replace(str(out) + ".partial", out)
    return open_array(out, mode="r")


def _automask_file(options: dict, paths: List[str]) -> list:
    out = []
    for p in paths:
        res = tiled_automask(p, out=options["out_for"](p), **options["kwargs"])
        out.append((p, len(res.records)))
    return out


def automask_files(paths: Iterable, out_for: Callable[[str], object], scheduler=None,
                   workers: Optional[int] = None, progress=null_progress, **kwargs) -> list:
    """Run `tiled_automask` on many images, one task per image (each image is tiled inside
    its task, in that worker).

    Parameters
    ----------
    paths : iterable of str or path
        The images.
    out_for : callable
        `out_for(path)` names the zarr label image written for that image.
    scheduler : None, "threads", "local", "local-threads", address or Client
        Where the images run (see `tiled.distributed`); None: one after the other here.
    workers : int, optional
        Number of workers of a local cluster or thread pool.
    progress : callable
        `progress(done, total, message)`, called as images finish.
    **kwargs
        Passed to `tiled_automask` for every image (model, tile_size, cache, ...).

    Returns
    -------
    list of (str, int)
        (path, number of objects) for every image, in the order given.
    """
    opts = {"out_for": out_for, "kwargs": kwargs}
    return map_tasks(_automask_file, opts, [str(p) for p in paths], scheduler, workers, 1,
                     progress, "images")
