"""Image embeddings for the interactive widget: the worker job and a small cache.

Qt-free: `embed_job` is a generator run by a napari worker (it yields progress and is
cancelled between steps); the cache keeps one embedding per (layer, slice, model, channels)
so going back to a slice is instant. For a large 2D layer (`TiledSetup`, see
`tiled_jobs.TilingRule`) the job embeds nothing: it prepares an `OnDemandPredictor` (the
whole image's contrast range, the on-disk cache beside the layer's file) whose tiles are
embedded later, under the prompts.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Optional, Sequence, Tuple

import numpy as np

from ..model import load_model
from ..predictor import ImageEmbedding, Predictor
from .tiled_jobs import OnDemandPredictor, TilingRule


EXPECTED_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


@dataclass
class EmbedResult:
    model: Optional[object] = None         # the Sam model (loaded here if it was not given)
    embedding: Optional[ImageEmbedding] = None
    error: str = ""                        # what went wrong, for a notification
    tiled: Optional[OnDemandPredictor] = None  # instead of `embedding`, for a large layer
    diameter: Optional[float] = None       # the objects' diameter used (image px; None: no zoom)


@dataclass(frozen=True)
class TiledSetup:
    """What decides whether a layer is tiled, known before the model is loaded."""

    rule: TilingRule
    plane_shape: Tuple[int, int]
    lazy: bool                  # multiscale, dask, zarr...: never read whole
    ndim: int                   # the layer's (2 for 2D and RGB images)
    path: Optional[str] = None  # the layer's source file: the embedding cache goes beside it

    def wanted(self, model) -> bool:
        return self.rule.applies(self.plane_shape, self.lazy, self.ndim, model.image_size)


def embed_job(model, model_name: str, device: str, data, index: Tuple[int, ...],
              channels: Optional[Sequence[int]] = None, tiled: Optional[TiledSetup] = None,
              diameter=None):
    """Load the model if needed, then embed `data[index]`, or, when `tiled` wants the layer
    tiled, prepare a predictor that embeds tiles on demand.

    diameter: the objects' diameter in image px (None: estimated from the slice, or from a
    central window of a large layer; "off": no zoom). The image reaches the model zoomed so
    objects have the model's preferred size (`scale.plan_zoom`); a slice that is larger
    than the model input at that zoom is answered tile by tile at that zoom.

    Yields (done, total, message); returns an EmbedResult. Expected failures (a missing or
    broken model file, an unknown name, an unsupported image) come back as `error` text.
    """
    if model is None:
        yield 0, 3, f"loading model {model_name}"
        try:
            model = load_model(model_name, device)
        except EXPECTED_ERRORS as err:
            return EmbedResult(error=f"could not load the model {model_name!r}: {_text(err)}")
    from ..scale import plan_zoom, resolve_diameter

    large = tiled is not None and tiled.wanted(model)
    try:
        sample = _central_window(data, index, 2048 if large else None)
        d = resolve_diameter(sample, diameter, channels, model)
    except EXPECTED_ERRORS as err:
        return EmbedResult(model, error=f"could not estimate the object size: {_text(err)}")
    shape = tiled.plane_shape if tiled is not None else np.shape(sample)[:2]
    plan = plan_zoom(shape, model, d)
    if plan.tiled and (tiled is None or tiled.ndim != 2 or tiled.rule.mode == "off"):
        # the tiled mode serves 2D layers only: a slice of a stack (or tiling switched
        # off) gets one embedding, as close to the wanted zoom as the model input allows
        plan = plan_zoom(shape, model, None)
    if large or plan.tiled:
        yield 1, 3, "large image: whole-image contrast (tiles are embedded under the prompts)"
        from .large_image import tiled_predictor

        zoomed = {} if not plan.tiled else {"tile_size": plan.tile, "overlap": plan.overlap}
        try:
            tp = tiled_predictor(data if tiled is not None else sample, model,
                                 path=tiled.path if tiled is not None else None,
                                 channels=channels, device=device,
                                 predictor_class=OnDemandPredictor, **zoomed)
        except EXPECTED_ERRORS as err:
            return EmbedResult(model, error=f"could not prepare the tiled image: {_text(err)}")
        yield 3, 3, "ready (tiled)"
        return EmbedResult(model, tiled=tp, diameter=d)
    yield 2, 3, "embedding (runs the image encoder)"
    try:
        emb = Predictor(model, device).set_image(sample, channels, diameter="off",
                                                 zoom=plan.zoom)
    except EXPECTED_ERRORS as err:
        return EmbedResult(model, error=f"could not embed the image: {_text(err)}")
    yield 3, 3, "embedded"
    return EmbedResult(model, emb, diameter=d)


def _central_window(data, index, side: Optional[int]) -> np.ndarray:
    """`data[index]` as numpy; with `side`, only a central window of at most side x side
    (for estimating the object size of a large or lazy layer without reading it whole)."""
    level0 = data[0] if isinstance(data, (list, tuple)) else data
    plane = level0[index] if index else level0
    if side is not None:
        h, w = plane.shape[:2]
        r0, c0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
        plane = plane[r0:r0 + side, c0:c0 + side]
    return np.asarray(plane.compute() if hasattr(plane, "compute") else plane)


def _text(err: Exception) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


class EmbeddingCache:
    """Least-recently-used embeddings keyed by (layer unique_id, slice, model key, channels)."""

    def __init__(self, max_items: int = 32) -> None:
        self.max_items = max_items
        self._items: "OrderedDict[Hashable, ImageEmbedding]" = OrderedDict()

    def get(self, key) -> Optional[ImageEmbedding]:
        emb = self._items.get(key)
        if emb is not None:
            self._items.move_to_end(key)
        return emb

    def put(self, key, emb: ImageEmbedding) -> None:
        self._items[key] = emb
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def drop_layer(self, layer_id) -> None:
        for key in [k for k in self._items if k[0] == layer_id]:
            del self._items[key]

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items
