"""Exporting a labels layer to files, without Qt: names, existing files, writing.

Files are `<folder>/<stem>_labels.tif`, `<stem>_coco.json`, `<stem>_objects.csv` (the
names `napari-sam automask` writes and the reader opens). Every write goes through
`napari_sam.io`, so it is atomic and refuses an existing file unless it is in `replace`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..batch import output_paths

FORMATS = ("tif", "coco", "csv", "geojson", "gpkg")
FORMAT_NAMES = {"tif": "TIFF", "coco": "COCO JSON", "csv": "CSV object table",
                "geojson": "GeoJSON", "gpkg": "GeoPackage"}
DEFAULT_FORMATS = ("tif", "coco", "csv")  # the GIS ones are ticked by hand


def clean_stem(text: str) -> str:
    """A file-name stem from free text (a layer name): no path separators or odd characters."""
    return re.sub(r"[^\w.\-]+", "_", str(text)).strip("._-") or "labels"


def plan(folder, stem: str, formats: Iterable[str]) -> Tuple[Dict[str, Path], List[Path]]:
    """-> ({format: path}, [paths that exist already])."""
    formats = [f for f in FORMATS if f in set(formats)]
    paths = output_paths(Path(folder), clean_stem(stem), formats)
    return paths, [p for p in paths.values() if p.exists()]


def intensity_image(image: Optional[np.ndarray], labels_shape: Sequence[int]):
    """The image as `object_table` wants it for labels of `labels_shape`, or a ValueError
    saying why it does not fit."""
    if image is None:
        return None
    image = np.asarray(image)
    n = len(labels_shape)
    if image.shape[:n] != tuple(labels_shape) or image.ndim > n + 1:
        raise ValueError(f"the intensity image has shape {image.shape}, the labels "
                         f"{tuple(labels_shape)}: choose an image of the same size, or none")
    return image


def write(paths: Dict[str, Path], labels, meta=None, image=None, image_name: str = "labels",
          records=None, replace: Iterable[Path] = ()) -> List[Path]:
    """Write `labels` in each format of `paths`; files in `replace` may be overwritten, any
    other existing file raises FileExistsError (nothing is replaced silently).

    Stacks with more than one leading axis are flattened for COCO and CSV, as the batch
    command does. Returns the written paths, in the order of `paths`.
    """
    from ..io.coco import write_coco
    from ..io.labels import write_labels_tif
    from ..io.tables import object_table, write_csv

    labels = np.asarray(labels)
    replace = {Path(p) for p in replace}
    flat = labels.reshape((-1,) + labels.shape[-2:]) if labels.ndim > 3 else labels
    written = []
    for kind, path in paths.items():
        ok = path in replace
        if kind == "tif":
            write_labels_tif(path, labels, meta=meta, overwrite=ok)
        elif kind == "coco":
            write_coco(path, flat, image_name=image_name, records=records, overwrite=ok)
        elif kind == "csv":
            img = intensity_image(image, labels.shape)
            if img is not None:
                img = img.reshape(flat.shape + img.shape[labels.ndim:])
            pixel_size = getattr(meta, "pixel_size", None)
            write_csv(path, object_table(flat, image=img, pixel_size=pixel_size), overwrite=ok)
        elif kind in ("geojson", "gpkg"):
            from ..io.vectors import write_label_vectors

            write_label_vectors({kind: path}, labels, meta, records,
                                intensity_image(image, labels.shape), overwrite=ok)
        else:
            raise ValueError(f"unknown format {kind!r}; choose from {', '.join(FORMATS)}")
        written.append(path)
    return written
