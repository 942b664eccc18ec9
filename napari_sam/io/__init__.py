"""Reading images and writing results: lazy TIFF, label TIFF, COCO RLE, CSV; atomic writes.

    from napari_sam.io import read_image, write_labels_tif, write_coco, read_coco
    image, meta = read_image("cells.tif")            # axes in meta.axes, e.g. "YXC"
    write_labels_tif("cells_labels.tif", labels, meta)  # keeps pixel size and GeoTIFF tags
    write_coco("cells_coco.json", labels, "cells.tif")
    assert (read_coco("cells_coco.json") == labels).all()

Satellite images (`pip install "napari-sam-suite[geo]"`): `meta.georef` (CRS + affine),
`label_features` / `write_vectors` (GeoJSON, GeoPackage), `read_vectors`,
`vectors_to_labels`, `read_vector_prompts`; see docs/geospatial.md.

Submodules load on first use, so `import napari_sam.io` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "atomic": ("atomic_write", "atomic_path", "check_writable", "partial_files"),
    "images": ("ImageMeta", "read_image", "read_meta", "open_lazy", "as_dask", "is_tiff"),
    "lazy_tiff": ("LazyTiff",),
    "labels": ("write_labels_tif", "read_labels", "to_uint32"),
    "coco": ("labels_to_coco", "write_coco", "read_coco", "coco_to_labels"),
    "tables": ("object_table", "write_csv", "read_csv"),
    "georef": ("GeoRef",),
    "vectors": ("label_features", "write_vectors", "write_label_vectors"),
    "vector_read": ("read_vectors", "vectors_to_labels"),
    "vector_prompts": ("read_vector_prompts",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
