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

import math
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..progress import null_progress
from ..tiled.distributed import map_tasks
from ..tiled.embed import TiledEmbeddings
from ..tiled.grid import Tile
from ..tiled.results import open_results
from ..tiled.stitch import stitch
from ..transforms import select_channels


class AutomaskSegmenter:
    """The default tile segmenter: `AutoMaskGenerator` on one tile's embedding.

    Keywords are those of `napari_sam.automask.automask` (points_per_side, thresholds,
    points_per_batch, crop_n_layers, nms_thresh, ...). Called as
    `segmenter(embeddings, tile) -> (labels uint32 (h, w), records)`; one generator per
    thread, so it can run in a thread pool.
    """

    def __init__(self, points_per_side: int = 32, pred_iou_thresh: Optional[float] = None,
                 stability_thresh: Optional[float] = None, min_area: int = 0, **kw) -> None:
        from .amg import split_kwargs

        init, run, gen = split_kwargs(kw)
        if run:
            raise TypeError(f"{', '.join(run)}: set these on the tiled run, not per tile")
        self.init_kw = dict(init, points_per_side=points_per_side)
        self.gen_kw = dict(gen, pred_iou_thresh=pred_iou_thresh,
                           stability_thresh=stability_thresh, min_area=min_area)
        self._local = threading.local()

    def settings(self) -> dict:
        return {"segmenter": "automask", **{k: v for k, v in sorted(self.init_kw.items())
                                            if k not in ("device", "precision")},
                **dict(sorted(self.gen_kw.items()))}

    def __getstate__(self):
        return {"init_kw": self.init_kw, "gen_kw": self.gen_kw}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def _generator(self, emb: TiledEmbeddings):
        from .amg import AutoMaskGenerator, fixed_thresholds
        from ..predictor import Predictor

        gens = getattr(self._local, "gens", None)
        if gens is None:
            gens = self._local.gens = {}
        gen = gens.get(id(emb))
        if gen is None:
            pred = Predictor(emb.model, emb.device, emb.precision, session=emb.session)
            kw = {k: v for k, v in self.init_kw.items() if k not in ("device", "precision")}
            gen = gens[id(emb)] = AutoMaskGenerator(pred, **kw)
            # thresholds are fixed for a tiled run (None: the model's): keep only the
            # candidates that can pass them
            fixed_thresholds(gen, kw, self.gen_kw["pred_iou_thresh"],
                             self.gen_kw["stability_thresh"])
        return gen

    def __call__(self, emb: TiledEmbeddings, tile: Tile):
        gen = self._generator(emb)
        pixels = emb.source.read(tile.window)
        gen.initialize(pixels, channels=emb.source.channels, value_range=emb.value_range,
                       embedding=emb.embedding(tile, keep=emb.cache_dir is not None))
        res = gen.generate(offset=tile.window[:2], **self.gen_kw)
        nodata = getattr(emb.source, "nodata", None)
        if nodata is not None or emb.source.dtype.kind == "f":  # nodata never becomes objects
            from ..io.bands import mask_nodata, valid_mask

            valid = valid_mask(select_channels(pixels, emb.source.channels), nodata)
            return mask_nodata(res.labels, res.records, valid, offset=tile.window[:2])
        return res.labels, res.records


class AISSegmenter:
    """Tile segmenter for models with an instance decoder: the decoder's maps on one tile
    and the seeded watershed (`automask.ais`); same call as `AutomaskSegmenter`.
    Keywords: min_area and those of `ais.watershed_from_maps` (None: the model's)."""

    def __init__(self, min_area: int = 0, **params) -> None:
        self.min_area, self.params = int(min_area), dict(params)
        self._local = threading.local()

    def settings(self) -> dict:
        return {"segmenter": "ais", "min_area": self.min_area, **dict(sorted(self.params.items()))}

    def __getstate__(self):
        return {"min_area": self.min_area, "params": self.params}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def __call__(self, emb: TiledEmbeddings, tile: Tile):
        from .ais import labels_and_records, tile_maps

        _, maps = tile_maps(emb, tile)
        res = labels_and_records(emb.model, self.min_area, tile.window[:2], maps,
                                 zoom=emb.zoom, **self.params)
        return res.labels, res.records


class APGSegmenter(AISSegmenter):
    """Tile segmenter for APG (`automask.apg`): the decoder's seeds on one tile as point
    prompts for the mask decoder, on the tile's embedding. Keywords: min_area and those of
    `apg.apg`."""

    def settings(self) -> dict:
        return {**super().settings(), "segmenter": "apg"}

    def __call__(self, emb: TiledEmbeddings, tile: Tile):
        from .ais import tile_maps
        from .apg import labels_and_records
        from ..predictor import Predictor

        pred = getattr(self._local, "pred", None)
        if pred is None or pred.model is not emb.model:
            pred = self._local.pred = Predictor(emb.model, emb.device, emb.precision)
        e, maps = tile_maps(emb, tile)
        pred.set_embedding(e)
        res = labels_and_records(pred, self.min_area, tile.window[:2], maps, **self.params)
        return res.labels, res.records


@dataclass
class TileJob:
    """Everything a worker needs to segment tiles of one image (picklable)."""

    model: object                    # Sam or a name/path for load_model
    image: object                    # a path, or an array-like
    embed_kw: dict                   # TiledEmbeddings keywords (tiling, channels, cache, ...)
    work: Optional[str]              # work folder of the tile results (None: in memory)
    work_signature: dict
    segmenter: Callable
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


_STATE: Dict[tuple, tuple] = {}
_STATE_LOCK = threading.Lock()


def _state(job: TileJob, emb: Optional[TiledEmbeddings] = None, results=None):
    """(embeddings, results) of `job` for this thread, built once."""
    k = (job.key, threading.get_ident())
    with _STATE_LOCK:
        got = _STATE.get(k)
    if got is None:
        emb = emb or TiledEmbeddings(job.model, job.image, **job.embed_kw)
        if results is None and job.work is None:  # in memory: one store for all threads
            with _STATE_LOCK:
                results = next((v[1] for key, v in _STATE.items() if key[0] == job.key), None)
        if results is None:
            results = open_results(None if job.work is None else Path(job.work),
                                   job.work_signature, emb.grid.grid_shape,
                                   (emb.grid.tile, emb.grid.tile))
        got = (emb, results)
        with _STATE_LOCK:
            _STATE[k] = got
    return got


def release(job: TileJob) -> None:
    with _STATE_LOCK:
        for k in [k for k in _STATE if k[0] == job.key]:
            del _STATE[k]


def run_tiles(job: TileJob, indices: Sequence[Sequence[int]]) -> List[tuple]:
    """Segment the given tiles (skipping those done); returns [(index, n_objects)]."""
    emb, results = _state(job)
    out = []
    for idx in indices:
        idx = tuple(int(i) for i in idx)
        tile = emb.grid[idx]
        labels, records = job.segmenter(emb, tile)
        results.put(idx, labels, records)
        out.append((idx, len(records)))
    return out


def foreground_tiles(grid, foreground) -> List[Tile]:
    """Tiles over foreground: `foreground` is a callable(tile) -> bool, or a 2D mask of any
    resolution over the whole image (a low-resolution mask is scaled to the image)."""
    if foreground is None:
        return list(grid)
    if callable(foreground):
        return [t for t in grid if foreground(t)]
    fh, fw = foreground.shape[:2]
    h, w = grid.shape
    out = []
    for t in grid:
        y0, x0, y1, x1 = t.window
        part = foreground[int(y0 * fh / h):max(int(y0 * fh / h) + 1, math.ceil(y1 * fh / h)),
                          int(x0 * fw / w):max(int(x0 * fw / w) + 1, math.ceil(x1 * fw / w))]
        if np.asarray(part).any():
            out.append(t)
    return out


@dataclass
class TiledAutomaskResult:
    labels: object                   # uint32 (Y, X): numpy, or zarr on disk
    records: List[dict]
    tiles_run: int                   # tiles segmented in this call (not resumed)
    tiles_used: int                  # tiles over foreground (all, without a mask)
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
        map_tiles(job, todo, scheduler, workers, tiles_per_task, progress)
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


def map_tiles(job, indices: Sequence, scheduler=None, workers: Optional[int] = None,
              tiles_per_task: int = 4, progress=null_progress) -> list:
    """Run `run_tiles(job, batch)` over tile indices (`tiled.distributed.map_tasks`)."""
    return map_tasks(run_tiles, job, list(indices), scheduler, workers, tiles_per_task,
                     progress, "segmenting tiles")


def _automask_file(options: dict, paths: List[str]) -> list:
    out = []
    for p in paths:
        res = tiled_automask(p, out=options["out_for"](p), **options["kwargs"])
        out.append((p, len(res.records)))
    return out


def automask_files(paths: Iterable, out_for: Callable[[str], object], scheduler=None,
                   workers: Optional[int] = None, progress=null_progress, **kwargs) -> list:
    """Many images, one task each (each image tiled inside its task, in that worker):
    returns [(path, number of objects)]. `out_for(path)` names each zarr label image."""
    opts = {"out_for": out_for, "kwargs": kwargs}
    return map_tasks(_automask_file, opts, [str(p) for p in paths], scheduler, workers, 1,
                     progress, "images")
