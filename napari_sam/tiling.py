"""Large images, tile by tile (the public entry point; the code lives in `napari_sam.tiled`).

    from napari_sam.tiling import TiledPredictor
    tp = TiledPredictor(load_model("bundled"), "slide.tif", cache="beside")
    obj = tp.predict(points=[[12_000, 8_500]])   # obj.bbox, obj.mask (cropped)

See docs/large_images.md for the tiling defaults, the cache and the Dask batch.
"""

from .tiled import *  # noqa: F401,F403
from .tiled import __all__  # noqa: F401
