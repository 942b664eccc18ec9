"""Track exports: Cell Tracking Challenge folders, napari Tracks data, CSV tables.

CTC result format (one folder per sequence): `mask000.tif`, `mask001.tif`, ... (one uint16
label image per frame, 4 digits past 999 frames; the id of a cell is its track id) and
`res_track.txt`, one line per track `L B E P`: id, first frame, last frame, parent id (0 =
none). Files are written atomically and never replace existing ones without `overwrite`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..io.atomic import atomic_path, atomic_write, check_writable

Lineage = Dict[int, Tuple[int, int, int]]


def check_lineage(labels: np.ndarray, lineage: Lineage) -> None:
    """Raise ValueError when `lineage` does not describe the ids of (T, Y, X) `labels`.

    Parameters
    ----------
    labels : ndarray, (T, Y, X) int
        Track labels, 0 background.
    lineage : dict of int to (int, int, int)
        {id: (first frame, last frame, parent id or 0)}; every id of `labels` needs one.
    """
    ids = set(np.unique(labels).tolist()) - {0}
    missing = ids - set(lineage)
    if missing:
        raise ValueError(f"track ids {sorted(missing)[:5]} of the labels have no lineage entry")
    for t, (a, b, p) in lineage.items():
        if a > b or p == t or (p and p not in lineage):
            raise ValueError(f"lineage entry {t}: ({a}, {b}, {p}) is not (first <= last, parent)")


def mask_name(t: int, n_frames: int) -> str:
    """The CTC file name of frame t's mask: maskTTT.tif (4 digits above 1000 frames).

    Parameters
    ----------
    t : int
        Frame index.
    n_frames : int
        Number of frames in the movie.

    Returns
    -------
    str
        E.g. "mask007.tif".
    """
    return f"mask{t:0{4 if n_frames > 1000 else 3}d}.tif"


def write_ctc(folder, labels, lineage: Lineage, overwrite: bool = False) -> Path:
    """Write track labels and their lineage as a Cell Tracking Challenge result folder.

    Parameters
    ----------
    folder : str or Path
        Created if missing.
    labels : array-like, (T, Y, X) int
        One id per track, at most 65535 (stored as uint16 mask TIFFs).
    lineage : dict of int to (int, int, int)
        {id: (first frame, last frame, parent id or 0)}.
    overwrite : bool
        Replace existing files (else a refusal before anything is written).

    Returns
    -------
    Path
        The folder.
    """
    import tifffile

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"track labels must be (T, Y, X), got shape {labels.shape}")
    if labels.max(initial=0) > 65535:
        raise ValueError("the CTC format stores uint16 masks: more than 65535 tracks")
    check_lineage(labels, lineage)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [mask_name(t, len(labels)) for t in range(len(labels))]
    for name in names + ["res_track.txt"]:  # refuse before writing anything
        check_writable(folder / name, overwrite)
    for name, frame in zip(names, labels):
        with atomic_path(folder / name, overwrite) as tmp:
            tifffile.imwrite(tmp, frame.astype(np.uint16), compression="zlib")
    with atomic_write(folder / "res_track.txt", overwrite, mode="w") as f:
        for t in sorted(lineage):
            a, b, p = lineage[t]
            f.write(f"{t} {a} {b} {p}\n")
    return folder


def read_ctc(folder) -> Tuple[np.ndarray, Lineage]:
    """Read a Cell Tracking Challenge folder (res_track.txt or man_track.txt, and the
    mask*.tif or man_track*.tif frames).

    Parameters
    ----------
    folder : str or Path

    Returns
    -------
    labels : ndarray, (T, Y, X) uint32
    lineage : dict of int to (int, int, int)
        {id: (first frame, last frame, parent id or 0)}.
    """
    import tifffile

    folder = Path(folder)
    txt = next((folder / n for n in ("res_track.txt", "man_track.txt")
                if (folder / n).is_file()), None)
    if txt is None:
        raise FileNotFoundError(f"{folder} has no res_track.txt or man_track.txt")
    lineage = {}
    for line in txt.read_text().split("\n"):
        if line.strip():
            t, a, b, p = (int(v) for v in line.split())
            lineage[t] = (a, b, p)
    files = sorted(folder.glob("mask*.tif")) or sorted(folder.glob("man_track*.tif"))
    labels = np.stack([tifffile.imread(f) for f in files]).astype(np.uint32)
    return labels, lineage


def tracks_data(labels, lineage: Lineage, spacing: Optional[Sequence[float]] = None):
    """napari Tracks layer data from track labels, at each cell's centroid.

    Parameters
    ----------
    labels : ndarray, (T, Y, X) int
    lineage : dict of int to (int, int, int)
        {id: (first frame, last frame, parent id or 0)}.
    spacing : sequence of float, optional
        Pixel size; its last two entries scale row and col.

    Returns
    -------
    data : ndarray, (N, 4) float64
        [track id, t, row, col], sorted by id and t.
    graph : dict of int to list of int
        {child: [parent]}.
    """
    from scipy import ndimage as ndi

    rows = []
    for t in range(labels.shape[0]):
        ids = np.unique(labels[t])
        ids = ids[ids > 0]
        if len(ids):
            cents = ndi.center_of_mass(np.ones(labels.shape[1:]), labels[t], ids)
            rows += [(i, t, c[0], c[1]) for i, c in zip(ids.tolist(), cents)]
    data = np.array(sorted(rows), float).reshape(-1, 4)
    if spacing is not None:
        data[:, 2] *= float(spacing[-2])
        data[:, 3] *= float(spacing[-1])
    graph = {int(t): [int(p)] for t, (_, _, p) in lineage.items() if p}
    return data, graph


def tracks_table(labels, lineage: Lineage) -> Dict[str, np.ndarray]:
    """One row per cell and frame: track_id, t, centroid_row, centroid_col, area, parent,
    first_frame, last_frame (for `io.tables.write_csv`).

    Parameters
    ----------
    labels : ndarray, (T, Y, X) int
        Track labels, one id per track.
    lineage : dict of int to (int, int, int)
        {id: (first frame, last frame, parent id or 0)}.

    Returns
    -------
    dict of str to ndarray
        One 1D array per column, one entry per cell and frame; centroids float64 (row,
        col) in pixels, the rest int64.
    """
    data, _ = tracks_data(labels, lineage)
    ids = data[:, 0].astype(np.int64)
    ts = data[:, 1].astype(np.int64)
    area = np.array([int((labels[t] == i).sum()) for i, t in zip(ids, ts)], np.int64)
    get = lambda j: np.array([lineage[int(i)][j] for i in ids], np.int64)  # noqa: E731
    return {"track_id": ids, "t": ts, "centroid_row": data[:, 2], "centroid_col": data[:, 3],
            "area": area, "parent": get(2), "first_frame": get(0), "last_frame": get(1)}
