"""napari-sam: Segment Anything models for napari, usable without a GUI.

    from napari_sam import load_model, Predictor
    pred = Predictor(load_model("bundled"))
    pred.set_image(image)
    masks, scores, logits = pred.predict(points=[[row, col]], point_labels=[1])

Importing this package never imports Qt or napari.
"""

__version__ = "0.1.0"

from .model import build_model, load_model  # noqa: E402
from .predictor import ImageEmbedding, Predictor  # noqa: E402
from .automask import AutoMaskGenerator, AutoMaskResult  # noqa: E402
from .segment import AutoSegmenter, automask  # noqa: E402
from .scale import estimate_diameter  # noqa: E402
from .ais import instance_maps  # noqa: E402

__all__ = ["__version__", "build_model", "load_model", "Predictor", "ImageEmbedding",
           "automask", "AutoSegmenter", "AutoMaskGenerator", "AutoMaskResult",
           "estimate_diameter", "instance_maps"]

# napari is imported only when annotate() is called
from ._napari.launch import annotate  # noqa: E402

__all__ += ["annotate", "TiledPredictor", "tiled_automask"]


def __getattr__(name):
    # tiling pulls in zarr and dask: load it on first use only
    if name in ("TiledPredictor", "tiled_automask"):
        from . import tiling

        return getattr(tiling, name)
    raise AttributeError(f"module 'napari_sam' has no attribute {name!r}")
