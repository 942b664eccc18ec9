"""Automatic segmentation: everything in an image, as a uint32 label image.

    from napari_sam.automask import automask, AutoSegmenter
    labels = automask(image)                  # bundled model, diameter estimated, mode auto
    seg = AutoSegmenter("vit_b_lm", mode="ais")
    result = seg(image)                       # AutoMaskResult(labels (Y, X) uint32, records)

The modules, in the order `automask(image)` runs them:

- `segmenter`: the one entry point (`automask`, `AutoSegmenter`): object size and zoom,
  the mode ("auto" | "amg" | "ais" | "apg"), and tiles when the zoomed image is larger than
  the model's input;
- `amg`: the grid of point prompts (`AutoMaskGenerator`): decode the grid, keep compact
  candidates, filter, paint;
- `grid`: the point grid, the crop boxes and the candidates' full-resolution regions;
- `candidates`: the candidate store and its filters (stability, box NMS);
- `painting`: the survivors' clean-up and their painting into labels;
- `ais`: the instance decoder's three maps and the seeded watershed on them (`watershed`);
- `apg`: AIS seeds as prompts for the mask decoder;
- `tiled`: the same, tile by tile over an image of any size, stitched across seams
  (`tile_segmenters`: one tile in, labels out; `tile_jobs`: what a worker is sent and runs);
- `stack`: a stack of 2D images, slice by slice, optionally linked;
- `volume`: a 3D volume, slice by slice, linked into 3D objects.
"""

from .amg import SAM_THRESHOLDS, AutoMaskGenerator, AutoMaskResult, default_thresholds
from .grid import crop_boxes, point_grid
from .segmenter import AutoSegmenter, automask

# submodules that import the large-image (zarr, dask) and volume machinery load on use
_LAZY = {"tiled_automask": "tiled", "AutomaskSegmenter": "tile_segmenters",
         "AISSegmenter": "tile_segmenters",
         "TiledAutomaskResult": "tiled", "automask_volume": "volume",
         "automask_stack": "stack", "instance_maps": "ais"}

__all__ = ["automask", "AutoSegmenter", "AutoMaskGenerator", "AutoMaskResult",
           "SAM_THRESHOLDS", "default_thresholds", "crop_boxes", "point_grid", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
