"""Large images in napari: multiscale lazy layers and tiled prompts (no napari import here).

napari draws a multiscale layer from the level that matches the zoom, so a 20k x 20k
slide opens at once and stays responsive: only the visible tiles of one level are read.

- `image_layer_data(path)`: napari LayerData for a large TIFF, as a list of lazy (dask)
  levels: the file's own pyramid when it has one (OME-TIFF, SVS-like), otherwise
  level 0 and strided views of it, halving down to about 1024 pixels (reading a strided
  level decodes the level-0 tiles under the view, once, then napari caches it).
- `labels_layer_data(labels)`: the same for a label image on disk (zarr, from
  `tiled_automask`), nearest-neighbour levels, so ids are never mixed.
- `reader(path)`: an npe2 reader for TIFFs above `LARGE` pixels on a side (images, and
  `*_labels.tif` as labels), else None.
- `tiled_predictor(layer_data, model, ...)`: a `TiledPredictor` on level 0 of such a
  layer, the widget's answer to prompts on large layers (`TiledMask.paint` writes the
  answer into a labels layer's level 0 without a full-size mask).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

LARGE = 8192      # pixels on the longer side above which `reader` claims a TIFF
SMALLEST = 1024   # stop halving below this


def _as_dask(arr):
    import dask.array as da

    if isinstance(arr, da.Array):
        return arr
    try:
        from napari_sam.io.images import as_dask

        return as_dask(arr)
    except (ImportError, TypeError, ValueError):
        return da.from_array(arr, chunks=(1024, 1024) + tuple(arr.shape[2:]))


def levels_for(arr, smallest: int = SMALLEST) -> List[Any]:
    """Level 0 and strided views halving down to `smallest` pixels (lazy, dask)."""
    base = _as_dask(arr)
    out = [base]
    step = 2
    while max(base.shape[:2]) // step >= smallest:
        out.append(base[::step, ::step])
        step *= 2
    return out


def image_layer_data(path, channels=None, name: Optional[str] = None):
    """napari LayerData (data, kwargs, "image") for a large image file, multiscale."""
    from napari_sam.io.images import open_lazy

    from .io_hooks import layer_kwargs

    arr, meta = open_lazy(path, channels=channels)
    levels = []
    n = getattr(meta, "levels", 1) or 1
    if n > 1:
        levels = [_as_dask(open_lazy(path, level=i, channels=channels)[0]) for i in range(n)]
    else:
        levels = levels_for(arr)
    kwargs = layer_kwargs(meta, name or Path(path).stem)
    kwargs["multiscale"] = len(levels) > 1
    if "C" in meta.axes:
        kwargs["rgb"] = meta.shape[-1] in (3, 4) and meta.dtype == "uint8"
    data = levels if len(levels) > 1 else levels[0]
    return data, kwargs, "image"


def labels_layer_data(labels, name: str = "labels", **kwargs):
    """napari LayerData for a (Y, X) label image on disk (zarr/memmap), multiscale."""
    import dask.array as da

    base = da.from_zarr(labels) if hasattr(labels, "chunks") and hasattr(labels, "store") \
        else _as_dask(labels)
    levels = levels_for(base)
    kw = dict(kwargs, name=name, multiscale=len(levels) > 1)
    return (levels if len(levels) > 1 else levels[0]), kw, "labels"


def reader(path):
    """npe2 reader: a large TIFF as a multiscale image layer; None for anything else."""
    from napari_sam.io.images import is_tiff, read_meta

    if isinstance(path, (list, tuple)) or not is_tiff(path):
        return None
    try:
        meta = read_meta(path)
    except Exception:  # noqa: BLE001 - not ours to report: another reader may take it
        return None
    if meta.axes not in ("YX", "YXC"):
        return None
    if meta.georef is not None and max(meta.shape[:2]) <= LARGE:
        return lambda p: geo_image_layers(p)
    if max(meta.shape[:2]) <= LARGE:
        return None
    if str(path).lower().endswith(("_labels.tif", "_labels.tiff")) and meta.axes == "YX":
        return lambda p: [label_file_layer_data(p)]
    return lambda p: [image_layer_data(p)]


def geo_image_layers(path, name: Optional[str] = None) -> List[tuple]:
    """A georeferenced (Y, X[, C]) image as napari Image layers in map units (scale and
    translate from its GeoRef).

    One band, or uint8 RGB(A), is one layer. Otherwise a true-colour composite: the red,
    green and blue bands (by name, else the first three) as three layers in additive red /
    green / blue colormaps, contrast from the 1-99 % percentiles of valid pixels. Every
    layer carries the image's metadata (georef, band names, nodata, source), so widgets and
    writers find it."""
    import numpy as np
    from napari_sam.io.images import read_image

    from .io_hooks import layer_kwargs

    image, meta = read_image(path)
    kwargs = layer_kwargs(meta, name or Path(path).stem)
    if image.ndim == 2 or (image.shape[-1] in (3, 4) and image.dtype == np.uint8):
        kwargs["rgb"] = image.ndim == 3
        return [(image, kwargs, "image")]
    names = [str(n).lower() for n in (meta.band_names or ())]
    pick = [names.index(c) for c in ("red", "green", "blue") if c in names]
    pick = pick if len(pick) == 3 else list(range(min(3, image.shape[-1])))
    out = []
    for b, colour in zip(pick, ("red", "green", "blue")):
        band = image[..., b]
        lo, hi = np.percentile(band[band != (meta.nodata or 0)] if band.any() else band,
                               (1, 99))
        kw = dict(kwargs, name=f"{kwargs['name']} [{names[b] if names else b}]",
                  colormap=colour, blending="additive", contrast_limits=(float(lo), float(hi)),
                  metadata=dict(kwargs["metadata"], band=int(b)))
        out.append((band, kw, "image"))
    return out


def label_file_layer_data(path):
    """A large label TIFF (e.g. `<stem>_labels.tif` of a tiled run) as multiscale labels."""
    from napari_sam.io.images import open_lazy

    from .io_hooks import layer_kwargs

    arr, meta = open_lazy(path)
    data, kwargs, kind = labels_layer_data(arr, name=Path(path).stem)
    kwargs.update({k: v for k, v in layer_kwargs(meta).items() if k != "name"})
    return data, kwargs, kind


def tiled_predictor(layer_data, model, path=None, channels=None, cache="auto",
                    predictor_class=None, **kwargs):
    """A TiledPredictor on level 0 of an image layer's data (array or list of levels).

    The pixels always come from the layer (what the user sees), never from re-reading
    `path`: a file opened as one layer per channel shows other pixels than the file. `path`
    (the layer's source file) only says where the embedding cache goes: beside the file
    with cache="auto" (or the per-user cache folder when that folder is read-only); a cache
    there made from other pixels (another channel of the same file, an edited layer) makes
    it fall back to the per-user cache, whose folder name holds a hash of the pixels.
    Without a path the embeddings live in memory. `predictor_class`: a TiledPredictor
    subclass (the widget's on-demand one); the other keyword arguments go to it.
    """
    from napari_sam.tiled.cache import CacheMismatchError
    from napari_sam.tiled.source import ImageSource
    from napari_sam.tiled import TiledPredictor

    cls = predictor_class or TiledPredictor
    level0 = layer_data[0] if isinstance(layer_data, (list, tuple)) else layer_data
    source = ImageSource(level0, channels)
    if path is None:
        return cls(model, source, cache=None, **kwargs)
    source.path = Path(path)
    try:
        return cls(model, source, cache=cache, **kwargs)
    except CacheMismatchError:
        if cache not in ("auto", "beside"):
            raise
        return cls(model, source, cache="user", **kwargs)
