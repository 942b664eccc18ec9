"""Running tiles (or whole images) as tasks: in this process, in threads, or on Dask.

scheduler:
- None: one after the other in this process (the reference);
- "threads": a thread pool in this process (no Dask needed);
- "local": a `dask.distributed.LocalCluster` of `workers` processes (one thread each);
- "local-threads": a LocalCluster of `workers` threads in this process;
- "tcp://host:port" (any address): an existing Dask cluster;
- a `dask.distributed.Client`: used as it is.

A task is a few tiles (`tiles_per_task`), so the model is loaded once per worker and the
scheduler sees a few thousand tasks for a 20k x 20k image, not tens of thousands. Results
go to the shared work folder (and embeddings to the shared cache), so a cluster needs a
file system that all workers see; only (tile, object count) pairs come back.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, List, Optional, Sequence

from ..progress import null_progress

LOCAL = ("local", "local-threads")


@contextlib.contextmanager
def dask_client(scheduler, workers: Optional[int] = None):
    """A Dask client for `scheduler` (see the module docstring); closed afterwards when it
    was made here.

    Parameters
    ----------
    scheduler : str or dask.distributed.Client
        "local", "local-threads", a scheduler address, or a client.
    workers : int, optional
        Workers of a local cluster (None: up to 4, one per CPU).

    Yields
    ------
    dask.distributed.Client
        RuntimeError when dask.distributed is missing or the scheduler cannot be reached.
    """
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - dask is a dependency of tiling
        raise RuntimeError("a Dask scheduler needs dask.distributed: "
                           "pip install 'dask[distributed]'") from err
    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler in LOCAL:
        n = workers or max(1, min(4, os.cpu_count() or 1))
        cluster = LocalCluster(n_workers=n, threads_per_worker=1,
                               processes=scheduler == "local", dashboard_address=None)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return
    try:
        client = Client(str(scheduler), timeout="20s")
    except (OSError, TimeoutError) as err:
        raise RuntimeError(f"cannot reach the Dask scheduler at {scheduler!r} ({err}); "
                           "check the address (e.g. tcp://host:8786) and that it is running"
                           ) from err
    try:
        yield client
    finally:
        client.close()


def _batches(items: Sequence, size: int) -> List[list]:
    size = max(1, int(size))
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def map_tasks(fn: Callable, shared, items: Sequence, scheduler=None, workers: Optional[int] = None,
              per_task: int = 1, progress=null_progress, message: str = "tasks") -> list:
    """`fn(shared, batch)` over `items` in batches; returns the concatenated results in the
    order of `items`. `shared` is sent to each worker once (Dask: scattered).

    Parameters
    ----------
    fn : callable
        `fn(shared, batch) -> list`, one result per item of the batch.
    shared : object
        What every task needs (picklable for Dask).
    items : sequence
        The work items (tiles, files, ...).
    scheduler : None, str or dask.distributed.Client
        See the module docstring.
    workers : int, optional
        Threads or local workers (None: up to 4, one per CPU).
    per_task : int
        Items per batch.
    progress : callable
        `progress(done, total, message)`, counted in items.
    message : str
        The progress message.

    Returns
    -------
    list
        The results of every batch, in the order of `items`.
    """
    batches = _batches(list(items), per_task)
    total = len(items)
    done = 0
    progress(done, total, message)
    results: List[Optional[list]] = [None] * len(batches)
    if not batches:
        return []
    if scheduler is None:
        for i, b in enumerate(batches):
            results[i] = fn(shared, b)
            done += len(b)
            progress(done, total, message)
    elif scheduler == "threads":
        with ThreadPoolExecutor(workers or max(1, min(4, os.cpu_count() or 1))) as pool:
            futs = {pool.submit(fn, shared, b): i for i, b in enumerate(batches)}
            for f in as_completed(futs):
                results[futs[f]] = f.result()
                done += len(batches[futs[f]])
                progress(done, total, message)
    else:
        from dask.distributed import as_completed as dask_completed

        with dask_client(scheduler, workers) as client:
            shared_f = client.scatter(shared, broadcast=True, hash=False)
            futs = [client.submit(fn, shared_f, b, pure=False) for b in batches]
            index = {f.key: i for i, f in enumerate(futs)}
            for f in dask_completed(futs):
                i = index[f.key]
                results[i] = f.result()
                done += len(batches[i])
                progress(done, total, message)
    return [r for part in results for r in part]
