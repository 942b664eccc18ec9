"""napari layers <-> the Qt-free prompt core: image slices, prompt layers, output layers.

Only public napari API: `Layer.world_to_data`, `Layer.data_to_world`, `scale`, `translate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

import numpy as np
import pandas as pd

from ..prompts import (Prompt, inside, on_slice, rectangle_to_box, region_mask,
                       to_image_coords)

if TYPE_CHECKING:  # pragma: no cover
    import napari

POSITIVE, NEGATIVE = "positive", "negative"
POINT_COLOURS = {POSITIVE: "lime", NEGATIVE: "red"}
# magenta: far from the first 20 colours of napari's default label colormap (cyan was label
# 2's), and from the points' lime and red
PREVIEW_COLOUR = "magenta"
MARKER_MAX = 12.0   # data pixels: a point marker about a nucleus wide on any large layer


def check_image(image) -> Optional[str]:
    """None if the widget can segment `image`, else a message saying what to do."""
    if image is None:
        return "no image layer: open or add an image (File > Open, or a sample from File > Open Sample)"
    if image.ndim not in (2, 3):
        return (f"{image.name!r} has {image.ndim} dimensions; the widget segments 2D images and "
                "3D stacks (Z or T, Y, X). Split the other axes into layers first.")
    return None


def image_data(image):
    """The full-resolution array of an Image layer (level 0 of a multiscale layer)."""
    return image.data[0] if image.multiscale else image.data


def is_kind(layer, kind: str) -> bool:
    """True when `layer` is a napari layer of class `kind` ("Image", "Labels", "Points"...)."""
    import napari.layers

    return isinstance(layer, getattr(napari.layers, kind))


def is_lazy(image) -> bool:
    """True for multiscale layers and layers on dask, zarr...: data never to be read whole."""
    return image.multiscale or not isinstance(image.data, np.ndarray)


def slice_index(viewer: "napari.Viewer", image) -> Tuple[int, ...]:
    """The displayed slice of `image` as data indices of its leading axes (() for 2D)."""
    lead = image.ndim - 2
    if lead == 0:
        return ()
    pos = np.asarray(image.world_to_data(viewer.dims.point), float)[:lead]
    size = np.asarray(image_data(image).shape[:lead])
    return tuple(int(i) for i in np.clip(np.rint(pos), 0, size - 1))


def plane_shape(image) -> Tuple[int, int]:
    """(Y, X) of one 2D slice."""
    shape = image_data(image).shape
    return tuple(shape[-3:-1]) if image.rgb else tuple(shape[-2:])


def transform(image, ndim: Optional[int] = None) -> dict:
    """scale and translate of the image's last `ndim` axes, for layers that overlay it."""
    n = ndim or image.ndim
    return {"scale": tuple(image.scale[-n:]), "translate": tuple(image.translate[-n:])}


def add_prompt_layers(viewer, image, name: str):
    """Preview (2D Labels), Shapes and Points layers overlaying `image`, top to bottom."""
    from napari.utils.colormaps import DirectLabelColormap

    # a lazy layer may be huge: its (tiled) answers come as crops, placed by `translate`
    size = (1, 1) if is_lazy(image) else plane_shape(image)
    preview = viewer.add_labels(
        np.zeros(size, np.uint8), name=f"{name} preview", opacity=0.55,
        colormap=DirectLabelColormap(color_dict={None: "transparent", 1: PREVIEW_COLOUR}),
        **transform(image, 2))
    shapes = viewer.add_shapes(
        ndim=image.ndim, name=f"{name} boxes", edge_color="yellow", face_color="transparent",
        edge_width=min(3.0, max(1.0, min(plane_shape(image)) / 256)), **transform(image))
    # 1/48 of the image on small layers; capped on large ones (a 4000 px layer would get
    # 83 px markers that hide the object), never under 4 px
    size = min(MARKER_MAX, max(4.0, min(plane_shape(image)) / 48))
    points = viewer.add_points(
        ndim=image.ndim, name=f"{name} points", size=size,
        features={"sign": pd.Categorical([], categories=[POSITIVE, NEGATIVE])},
        feature_defaults={"sign": POSITIVE},
        face_color="sign", face_color_cycle=POINT_COLOURS, border_color="white",
        **transform(image))
    points.feature_defaults = {"sign": POSITIVE}
    return preview, shapes, points


def to_image(layer, image):
    """Callable: coordinates in `layer`'s data frame -> `image`'s data frame (via world)."""
    return lambda p: image.world_to_data(layer.data_to_world(p))


def read_prompt(points, shapes, image, index: Tuple[int, ...],
                regions: bool = True) -> Tuple[Prompt, int]:
    """The prompt on slice `index` from the prompt layers -> (Prompt, number of ignored items).

    Points outside the image are ignored; the newest rectangle is the box; polygons and
    ellipses are united into one region mask, or, with `regions=False` (large images: no
    image-sized mask), their joint bounding box is the box when there is no rectangle.
    """
    shape = plane_shape(image)
    lead = len(index)
    ignored = 0
    pts = to_image_coords(points.data, to_image(points, image))
    labels = np.asarray(points.features["sign"] == POSITIVE, int) if len(pts) else np.zeros(0, int)
    keep = on_slice(pts, index) if len(pts) else np.zeros(0, bool)
    pts, labels = pts[keep][:, lead:], labels[keep]
    ok = inside(pts, shape)
    ignored += int((~ok).sum())
    prompt = Prompt(pts[ok], labels[ok])
    conv = to_image(shapes, image)
    extent = None  # bounding box of the polygons and ellipses (regions=False)
    for kind, verts in zip(shapes.shape_type, shapes.data):
        v = to_image_coords(verts, conv)
        if not on_slice(v, index).all():
            continue
        v = v[:, lead:]
        if kind == "rectangle":
            prompt.box = np.clip(rectangle_to_box(v), -0.5, np.tile(shape, 2) - 0.5)
        elif kind in ("polygon", "ellipse") and not regions:
            b = rectangle_to_box(v)
            extent = b if extent is None else np.r_[np.minimum(extent[:2], b[:2]),
                                                    np.maximum(extent[2:], b[2:])]
        elif kind in ("polygon", "ellipse"):
            m = region_mask(kind, v, shape)
            prompt.region = m if prompt.region is None else prompt.region | m
        else:
            ignored += 1
    if prompt.box is None and extent is not None:
        prompt.box = np.clip(extent, -0.5, np.tile(shape, 2) - 0.5)
    if prompt.box is not None and (prompt.box[2] <= prompt.box[0] or prompt.box[3] <= prompt.box[1]):
        prompt.box, ignored = None, ignored + 1
    return prompt, ignored


def remove_on_slice(layer, image, index: Tuple[int, ...]) -> None:
    """Delete the points or shapes of `layer` that lie on slice `index` of `image`."""
    if not len(layer.data):
        return
    from napari.layers import Points

    conv = to_image(layer, image)
    if isinstance(layer, Points):
        drop = on_slice(to_image_coords(layer.data, conv), index)
    else:
        drop = np.array([on_slice(to_image_coords(v, conv), index).all() for v in layer.data])
    if drop.any():
        layer.selected_data = set(np.flatnonzero(drop).tolist())
        layer.remove_selected()


CARRIED_METADATA = ("source", "geo", "georef", "band_names", "nodata")


def carried_metadata(image) -> dict:
    """What a labels layer takes over from its image's metadata (source, GeoTIFF tags and
    georeferencing), so the writers place the labels (polygons) where the image lies."""
    meta = getattr(image, "metadata", None) or {}
    return {k: meta[k] for k in CARRIED_METADATA if meta.get(k) is not None}


def new_labels_layer(viewer, image, name: str):
    """A uint32 Labels layer with the image's spatial shape and transform."""
    lead = image_data(image).shape[: image.ndim - 2]
    data = np.zeros(tuple(lead) + plane_shape(image), np.uint32)
    return viewer.add_labels(data, name=name, metadata=carried_metadata(image),
                             **transform(image))


MAX_LABELS_PIXELS = 2 ** 27   # 512 MiB of uint32: the largest labels layer made in memory
SMALLEST_LEVEL = 1024         # multiscale labels: halve down to about this many pixels


def new_large_labels_layer(viewer, image, name: str):
    """A uint32 Labels layer for a large 2D image: in memory, multiscale when it is big (the
    lower levels are strided views of level 0, so writing level 0 updates them all).
    Raises ValueError, with what to do, above MAX_LABELS_PIXELS."""
    shape = plane_shape(image)
    if shape[0] * shape[1] > MAX_LABELS_PIXELS:
        gib = shape[0] * shape[1] * 4 / 2 ** 30
        raise ValueError(
            f"the image is {shape[0]} x {shape[1]} pixels: a labels layer in memory would take "
            f"{gib:.1f} GiB. Add a Labels layer whose full-resolution level is a zarr array on "
            "disk (see docs/large_images.md, napari) and choose it under 'labels'")
    base = np.zeros(shape, np.uint32)
    levels, step = [base], 2
    while max(shape) // step >= SMALLEST_LEVEL:
        levels.append(base[::step, ::step])
        step *= 2
    data = levels if len(levels) > 1 else base
    return viewer.add_labels(data, name=name, multiscale=len(levels) > 1,
                             metadata=carried_metadata(image), **transform(image))


def writable_level0(labels, image):
    """(level-0 array, None) of a labels layer a tiled commit can write into, or
    (None, message): level 0 must have the image's 2D shape and be numpy or zarr."""
    level0 = labels.data[0] if labels.multiscale else labels.data
    want = plane_shape(image)
    if tuple(level0.shape) != want:
        return None, (f"labels layer {labels.name!r} has shape {tuple(level0.shape)}, but the "
                      f"image needs {want}; choose another labels layer or 'new layer'")
    if isinstance(level0, np.ndarray):
        ok = level0.flags.writeable
    else:
        ok = type(level0).__module__.split(".")[0] == "zarr" and not getattr(
            level0, "read_only", False)
    if not ok:
        return None, (f"labels layer {labels.name!r} cannot be written: its full-resolution "
                      f"data is a read-only {type(level0).__name__}. Commits need a numpy or a "
                      "writable zarr array there; choose 'new layer' or such a layer")
    return level0, None


def check_labels(labels, image) -> Optional[str]:
    want = tuple(image_data(image).shape[: image.ndim - 2]) + plane_shape(image)
    if labels.multiscale or tuple(labels.data.shape) != want:
        return (f"labels layer {labels.name!r} has shape {tuple(np.shape(labels.data))}, "
                f"but the image needs {want}; choose another labels layer or 'new layer'")
    if not isinstance(labels.data, np.ndarray):
        return f"labels layer {labels.name!r} is not an in-memory array; choose 'new layer'"
    return None
