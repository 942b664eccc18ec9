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
from .automask import AutoMaskGenerator, AutoMaskResult, automask  # noqa: E402

__all__ = ["__version__", "build_model", "load_model", "Predictor", "ImageEmbedding",
           "automask", "AutoMaskGenerator", "AutoMaskResult"]

# napari is imported only when annotate() is called
from ._napari.launch import annotate  # noqa: E402

__all__ += ["annotate", "TiledPredictor", "tiled_automask", "segment_volume", "automask_volume",
            "track"]
_VOLUME = ("segment_volume", "automask_volume", "track")


def __getattr__(name):
    # tiling pulls in zarr and dask: load it on first use only
    if name in ("TiledPredictor", "tiled_automask"):
        from . import tiling

        return getattr(tiling, name)
    if name in _VOLUME:  # volumes and time-lapses (napari_sam.volume)
        from . import volume

        return getattr(volume, name)
    raise AttributeError(f"module 'napari_sam' has no attribute {name!r}")
