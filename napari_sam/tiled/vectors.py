"""Vector features of a large label image, block by block, never loading it whole.

    feats = tiled_features(res.labels, image=source, georef=meta.georef, records=res.records)
    write_vectors({"gpkg": "scene_objects.gpkg"}, feats, georef=meta.georef)

The label image (zarr, memmap, lazy TIFF: anything with numpy slicing) is read in blocks of
`block` x `block` pixels in row-major order. Each block's objects are polygonised with
pixel-edge coordinates of the whole image, and their pixel counts and band sums added up.
An object whose bounding box lies in one block is finished there; the pieces of an object
across block seams are kept until the last block its box touches, then merged (pixel-edge
polygons share their seam edges exactly, so the union is the polygon of the whole object).
Features are yielded as objects finish, so a writer can stream them to disk.

Bounding boxes come from the stitched records (`bbox`, end exclusive); without them a
first pass over the blocks finds them. Memory: one block of labels and image, the pieces
of the objects that cross the current row of seams, and a few numbers per object.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..io.georef import GeoRef
from ..io.vectors import ObjectStats, make_feature, polygonize
from ..progress import null_progress
from .source import read_box

BLOCK = 1024


def _blocks(shape, block: int):
    h, w = shape
    for r in range(0, h, block):
        for c in range(0, w, block):
            yield r, c, min(r + block, h), min(c + block, w)


def scan_bboxes(labels, block: int = BLOCK) -> Dict[int, Tuple[int, int, int, int]]:
    """{id: (row0, col0, row1, col1)} (end exclusive) of a label image, block by block.

    Parameters
    ----------
    labels : array_like, (Y, X) int
        Any array with numpy slicing (zarr, dask, ...).
    block : int
        Block side in pixels.

    Returns
    -------
    dict of int to (int, int, int, int)
        Each id's box, in label-image pixels.
    """
    from scipy import ndimage as ndi

    out: Dict[int, list] = {}
    for r0, c0, r1, c1 in _blocks(labels.shape[:2], block):
        part = read_box(labels, (r0, c0, r1, c1))
        ids = np.unique(part)
        ids = ids[ids > 0]
        if not len(ids):
            continue
        lut = np.zeros(int(ids[-1]) + 1, np.int64)
        lut[ids] = np.arange(1, len(ids) + 1)
        for k, sl in zip(ids.tolist(), ndi.find_objects(lut[part])):
            box = [sl[0].start + r0, sl[1].start + c0, sl[0].stop + r0, sl[1].stop + c0]
            old = out.get(k)
            out[k] = box if old is None else [min(old[0], box[0]), min(old[1], box[1]),
                                              max(old[2], box[2]), max(old[3], box[3])]
    return {k: tuple(v) for k, v in out.items()}


def tiled_features(labels, image=None, georef: Optional[GeoRef] = None,
                   records: Optional[Sequence[dict]] = None, block: int = BLOCK,
                   simplify: float = 0.0, simplify_units: str = "px", band_names=None,
                   progress=null_progress) -> Iterator[dict]:
    """Yield the features (see `napari_sam.io.vectors.make_feature`) of a (Y, X) label
    image of any size, block by block (module docstring).

    image: an array-like (Y, X) or (Y, X, C) on the same grid for the band means, or None.
    records: per-object dicts with id and bbox (and predicted_iou, stability), or None.

    Parameters
    ----------
    labels : array_like, (Y, X) int
        Any array with numpy slicing.
    image, records
        See above.
    georef : GeoRef, optional
        Maps pixels to map coordinates (None: pixel coordinates).
    block : int
        Block side in pixels.
    simplify : float
        Simplification tolerance (0: none).
    simplify_units : str
        "px" or "map".
    band_names : sequence of str, optional
        Names of the band-mean attributes.
    progress : callable
        `progress(done, total, message)`, once per block.

    Yields
    ------
    dict
        {"geometry": shapely geometry in map coordinates, "properties": {...}}, one per
        object, once its last block is read.
    """
    h, w = labels.shape[:2]
    if image is not None and tuple(image.shape[:2]) != (h, w):
        raise ValueError(f"the image has shape {tuple(image.shape)}, the labels {(h, w)}")
    by_id = {int(r["id"]): r for r in (records or [])}
    if records is not None and all("bbox" in r for r in by_id.values()):
        boxes = {k: tuple(int(v) for v in r["bbox"]) for k, r in by_id.items()}
    else:
        boxes = scan_bboxes(labels, block)
    nbx = -(-w // block)
    last = {k: ((b[2] - 1) // block) * nbx + (b[3] - 1) // block for k, b in boxes.items()}
    ending: Dict[int, List[int]] = {}
    for k, n in last.items():
        ending.setdefault(n, []).append(k)
    pieces: Dict[int, list] = {}
    stats = ObjectStats()
    total = -(-h // block) * nbx
    for n, (r0, c0, r1, c1) in enumerate(_blocks((h, w), block)):
        part = read_box(labels, (r0, c0, r1, c1))
        if part.any():
            pixels = None if image is None else read_box(image, (r0, c0, r1, c1))
            stats.add(part, pixels)
            for k, g in polygonize(part, offset=(r0, c0)).items():
                pieces.setdefault(k, []).append(g)
        for k in sorted(ending.pop(n, [])):
            got = pieces.pop(k, None)
            if got is None:  # in the records but not painted (e.g. masked as nodata)
                stats.pop(k)
                continue
            yield _finish(k, got, stats, georef, by_id.get(k), simplify, simplify_units,
                          band_names)
        progress(n + 1, total, "vectors")
    for k in sorted(pieces):  # ids missing from the records: finished at the end
        yield _finish(k, pieces[k], stats, georef, by_id.get(k), simplify, simplify_units,
                      band_names)


def _finish(k, parts, stats, georef, record, simplify, simplify_units, band_names) -> dict:
    import shapely

    geom = parts[0] if len(parts) == 1 else shapely.union_all(parts)
    if len(parts) > 1:  # drop the seam vertices the union leaves on straight edges
        geom = shapely.simplify(geom, 0.0, preserve_topology=True)
    n, means = stats.pop(k)
    return make_feature(k, geom, n, means, georef, record, simplify, simplify_units,
                        band_names)
