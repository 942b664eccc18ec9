"""Sample images shipped inside the package (napari's File > Open Sample > napari-sam).

Small synthetic images made by `sample_data/make_samples.py` with the project's generator.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

PIXEL_SIZE_UM = 0.65  # of nuclei.tif


def _read(name: str) -> np.ndarray:
    import tifffile

    with resources.as_file(resources.files("napari_sam") / "data" / name) as path:
        return tifffile.imread(path)


def nuclei():
    """512 x 512 uint16 fluorescence nuclei, 0.65 um pixels."""
    return [(_read("nuclei.tif"), {"name": "nuclei", "colormap": "gray",
                                   "scale": (PIXEL_SIZE_UM, PIXEL_SIZE_UM)}, "image")]


def nuclei_stack():
    """(5, 256, 256) uint16 stack of nuclei fields (Z)."""
    return [(_read("nuclei_stack.tif"), {"name": "nuclei stack", "colormap": "gray"}, "image")]


def rgb_shapes():
    """256 x 256 RGB uint8 image of coloured shapes."""
    return [(_read("shapes_rgb.tif"), {"name": "shapes (RGB)", "rgb": True}, "image")]


def geo_scene():
    """256 x 256 4-band (red, green, blue, NIR) uint16 GeoTIFF in UTM 33N with 10 m pixels
    and a nodata border, as napari-sam reads GeoTIFFs: scale and translate in metres, the
    georeferencing in the layer's metadata (so exported polygons land in the right place)."""
    from .large_image import geo_image_layers

    with resources.as_file(resources.files("napari_sam") / "data" / "geo_scene.tif") as path:
        return geo_image_layers(path, name="satellite scene")
