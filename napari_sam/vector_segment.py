"""Segment the objects a vector file points at: one object per box and per positive point.

    res = segment_vector_prompts("scene.tif", "buildings.gpkg", model="bundled")
    res.labels    # uint32 (Y, X); res.records: id, area, bbox, predicted_iou, prompt

"Segment every building in this bounding-box layer": each polygon's bounding box (in any
CRS, reprojected onto the image, see `napari_sam.io.vector_prompts`) and each positive
point prompts the model once; background points of the file (label 0) go with every
point prompt. Images of any size go through `TiledPredictor` (an object is followed across
tiles); only the tiles under prompts are embedded. An object takes only pixels no earlier
object holds, and nodata pixels never become objects. The label image is held in memory.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .automask import AutoMaskResult
from .progress import null_progress


def segment_vector_prompts(image, prompts, model=None, *, georef=None, tile_size=None,
                           overlap=None, channels=None, cache=None, device="auto",
                           precision="auto", progress=null_progress) -> AutoMaskResult:
    """Labels from vector prompts (module docstring).

    image: a path (its GeoTIFF georeferencing and nodata are used) or a (Y, X[, C]) array
    with `georef` given; prompts: a vector file path or a `VectorPrompts`.
    model: Sam, registry name or checkpoint path (None: the bundled model).

    Parameters
    ----------
    image : str, Path or array_like, (Y, X) or (Y, X, C)
        The image (above).
    prompts : str, Path or VectorPrompts
        The vector prompts (above).
    model : Sam, str or Path, optional
        The model (above).
    georef : GeoRef, optional
        The image's georeferencing (None: the file's own).
    tile_size, overlap : int, optional
        Tile side and least overlap in image pixels (None: `TiledEmbeddings`' defaults).
    channels : sequence of int, optional
        1 to 3 channels to use.
    cache : None, str or Path
        Where tile embeddings are kept (as `TiledEmbeddings`).
    device, precision : str or torch.device
        As `TiledEmbeddings`.
    progress : callable
        `progress(done, total, message)`, once per prompt.

    Returns
    -------
    AutoMaskResult
        `labels` (Y, X) uint32, 0 background, one id per object in prompt order (boxes, then
        positive points); `records` one dict per object: "id", "area", "bbox" (row0, col0,
        row1, col1, end exclusive), "predicted_iou", "prompt" (kind, then the box's
        (row0, col0, row1, col1) or the point's (row, col)).
    """
    from .io.bands import mask_nodata
    from .io.vector_prompts import VectorPrompts, read_vector_prompts
    from .tiled.prompts import TiledPredictor
    from .tiled.source import ImageSource

    source = ImageSource(image, channels)
    if georef is None and source.meta is not None:
        georef = source.meta.georef
    vp = prompts if isinstance(prompts, VectorPrompts) else \
        read_vector_prompts(prompts, georef, source.shape2d)
    tp = TiledPredictor(model, source, tile_size=tile_size, overlap=overlap, cache=cache,
                        device=device, precision=precision)
    labels = np.zeros(source.shape2d, np.uint32)
    records = []
    negatives = vp.points[vp.point_labels == 0]
    jobs = [("box", b) for b in vp.boxes] + [("point", p) for p in
                                              vp.points[vp.point_labels == 1]]
    for n, (kind, value) in enumerate(jobs):
        if kind == "box":
            m = tp.predict(box=value)
        else:
            pts = np.concatenate([value[None], negatives])
            m = tp.predict(points=pts, point_labels=np.r_[1, np.zeros(len(negatives), int)])
        part = labels[m.slices]
        free = m.mask & (part == 0)
        k = len(records) + 1
        if free.any():
            part[free] = k
            rows, cols = np.nonzero(free)
            records.append({"id": k, "area": int(free.sum()), "predicted_iou": m.score,
                            "bbox": [int(rows.min() + m.bbox[0]), int(cols.min() + m.bbox[1]),
                                     int(rows.max() + 1 + m.bbox[0]),
                                     int(cols.max() + 1 + m.bbox[1])],
                            "prompt": [kind] + [float(v) for v in value]})
        progress(n + 1, len(jobs), f"prompt {n + 1}/{len(jobs)}")
    if source.nodata is not None or source.dtype.kind == "f":
        valid = _valid(source)
        labels, records = mask_nodata(labels, records, valid)
    return AutoMaskResult(labels, records)


def _valid(source) -> Optional[np.ndarray]:
    from .io.bands import valid_mask

    h, w = source.shape2d
    return valid_mask(source.read((0, 0, h, w)), source.nodata)
