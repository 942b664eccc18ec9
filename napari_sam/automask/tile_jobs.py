"""The worker side of a tiled automask run: what a worker is sent, and what it does.

`tiled.tiled_automask` builds one `TileJob` per image and hands batches of tile indices to
`map_tiles`, which runs `run_tiles(job, batch)` in this process, in threads or on Dask
(`tiled.distributed.map_tasks`). Each thread of each worker builds the job's embeddings
and result store once (`_state`) and keeps them until `release(job)`; results go to the
store (memory, or the work folder on disk), only (tile index, object count) pairs return.
"""

from __future__ import annotations

import math
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..progress import null_progress
from ..tiled.distributed import map_tasks
from ..tiled.embed import TiledEmbeddings
from ..tiled.grid import Tile
from ..tiled.results import open_results


@dataclass
class TileJob:
    """Everything a worker needs to segment tiles of one image; picklable, so it can be
    sent to Dask workers.

    Parameters
    ----------
    model : Sam, str or path
        The model object, or a name/path that `load_model` understands.
    image : path or array-like
        The whole image, (Y, X) or (Y, X, C); a path is opened by each worker.
    embed_kw : dict
        Keywords for `TiledEmbeddings` (tile_size, overlap, channels, cache, device, ...).
    work : str, optional
        The work folder holding one result chunk per tile (None: results in memory, which
        only works when all tiles run in this process).
    work_signature : dict
        The run's settings (embedding signature and segmenter settings); a work folder
        written with other settings is not resumed.
    segmenter : callable
        `segmenter(embeddings, tile) -> (labels, records)`, labels a uint32 array of the
        tile's shape (h, w) and records a list of dicts in image coordinates.
    key : str
        Identifies the job's per-thread state (a fresh random hex string by default).
    """

    model: object
    image: object
    embed_kw: dict
    work: Optional[str]
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
    """Forget the embeddings and result stores that threads of this process built for `job`.

    Parameters
    ----------
    job : TileJob
        The finished (or abandoned) job; its state in every thread of this process goes.
    """
    with _STATE_LOCK:
        for k in [k for k in _STATE if k[0] == job.key]:
            del _STATE[k]


def run_tiles(job: TileJob, indices: Sequence[Sequence[int]]) -> List[tuple]:
    """Segment some tiles of a job and put each tile's labels and records in its store.

    Parameters
    ----------
    job : TileJob
        The image, model and segmenter; this thread's state for it is built on first use.
    indices : sequence of (int, int)
        Tile indices (grid row, grid col) to segment.

    Returns
    -------
    list of ((int, int), int)
        For each tile in the order given: its index and the number of objects found in it.
    """
    emb, results = _state(job)
    out = []
    for idx in indices:
        idx = tuple(int(i) for i in idx)
        tile = emb.grid[idx]
        labels, records = job.segmenter(emb, tile)
        results.put(idx, labels, records)
        out.append((idx, len(records)))
    return out


def map_tiles(job: TileJob, indices: Sequence, scheduler=None, workers: Optional[int] = None,
              tiles_per_task: int = 4, progress=null_progress) -> list:
    """Run `run_tiles` over tile indices in batches, where `scheduler` says.

    Parameters
    ----------
    job : TileJob
        Sent to each worker once.
    indices : sequence of (int, int)
        Tile indices (grid row, grid col) to segment.
    scheduler : None, "threads", "local", "local-threads", address or Client
        Where the batches run (see `tiled.distributed`); None: one after the other here.
    workers : int, optional
        Number of workers of a local cluster or thread pool.
    tiles_per_task : int
        Tiles per batch (one task each).
    progress : callable
        `progress(done, total, message)`, called as batches finish.

    Returns
    -------
    list of ((int, int), int)
        (tile index, number of objects) for every index, in the order given.
    """
    return map_tasks(run_tiles, job, list(indices), scheduler, workers, tiles_per_task,
                     progress, "segmenting tiles")


def foreground_tiles(grid, foreground) -> List[Tile]:
    """The tiles of a grid that lie over foreground.

    Parameters
    ----------
    grid : TileGrid
        The image's tile grid; its `shape` is the image's (Y, X).
    foreground : None, callable or array-like (Y', X')
        None: every tile. A callable `foreground(tile) -> bool`: the tiles it accepts. A 2D
        mask over the whole image, at any resolution: the tiles whose window, scaled to
        the mask's (Y', X'), covers at least one nonzero mask pixel.

    Returns
    -------
    list of Tile
        The tiles kept, in the grid's order (row by row).
    """
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
