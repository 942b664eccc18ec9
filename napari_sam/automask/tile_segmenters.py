"""Per-tile segmenters for `tiled.tiled_automask`: one tile in, (labels, records) out.

Each is called as `segmenter(embeddings, tile) -> (labels, records)`, labels a (h, w)
uint32 image of the tile and records one dict per object in image coordinates (row, col).
They keep their per-thread state (generator, predictor) out of pickling, so one instance
can be sent to Dask workers and run in a thread pool.

- `AutomaskSegmenter`: the grid of point prompts (`amg.AutoMaskGenerator`), any model;
- `AISSegmenter`: the instance decoder's maps and the seeded watershed (`ais`);
- `APGSegmenter`: the instance decoder's seeds as point prompts (`apg`).
"""

from __future__ import annotations

import threading
from typing import Optional

from ..tiled.embed import TiledEmbeddings
from ..tiled.grid import Tile
from ..transforms import select_channels


class AutomaskSegmenter:
    """The default tile segmenter: `AutoMaskGenerator` on one tile's embedding.

    Called as `segmenter(embeddings, tile) -> (labels uint32 (h, w), records)`; one
    generator per thread, so it can run in a thread pool.

    Parameters
    ----------
    points_per_side : int
        Side of the grid of point prompts on each tile.
    pred_iou_thresh, stability_thresh : float, optional
        The thresholds a mask must pass (None: the model's defaults).
    min_area : int
        Smallest object kept, in pixels.
    **kw
        Other keywords of `napari_sam.automask.automask` that apply per tile
        (points_per_batch, crop_n_layers, nms_thresh, ...); those that set up a whole-image
        run are refused with a TypeError.
    """

    def __init__(self, points_per_side: int = 32, pred_iou_thresh: Optional[float] = None,
                 stability_thresh: Optional[float] = None, min_area: int = 0, **kw) -> None:
        from .amg import split_kwargs

        init, run, gen = split_kwargs(kw)
        if run:
            raise TypeError(f"{', '.join(run)}: set these on the tiled run, not per tile")
        self.init_kw = dict(init, points_per_side=points_per_side)
        self.gen_kw = dict(gen, pred_iou_thresh=pred_iou_thresh,
                           stability_thresh=stability_thresh, min_area=min_area)
        self._local = threading.local()

    def settings(self) -> dict:
        """The settings that change the result (part of a work folder's signature).

        Returns
        -------
        dict
            "segmenter": "automask", then the generator's keywords sorted by name (without
            device and precision).
        """
        return {"segmenter": "automask", **{k: v for k, v in sorted(self.init_kw.items())
                                            if k not in ("device", "precision")},
                **dict(sorted(self.gen_kw.items()))}

    def __getstate__(self):
        return {"init_kw": self.init_kw, "gen_kw": self.gen_kw}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def _generator(self, emb: TiledEmbeddings):
        from .amg import AutoMaskGenerator, fixed_thresholds
        from ..predictor import Predictor

        gens = getattr(self._local, "gens", None)
        if gens is None:
            gens = self._local.gens = {}
        gen = gens.get(id(emb))
        if gen is None:
            pred = Predictor(emb.model, emb.device, emb.precision, session=emb.session)
            kw = {k: v for k, v in self.init_kw.items() if k not in ("device", "precision")}
            gen = gens[id(emb)] = AutoMaskGenerator(pred, **kw)
            # thresholds are fixed for a tiled run (None: the model's): keep only the
            # candidates that can pass them
            fixed_thresholds(gen, kw, self.gen_kw["pred_iou_thresh"],
                             self.gen_kw["stability_thresh"])
        return gen

    def __call__(self, emb: TiledEmbeddings, tile: Tile):
        """Segment everything in one tile.

        Parameters
        ----------
        emb : TiledEmbeddings
            The image, its tile grid and its tile embeddings (read from the cache or
            computed).
        tile : Tile
            The tile to segment; its `window` is (row0, col0, row1, col1) in the image.

        Returns
        -------
        labels : ndarray (h, w) uint32
            The tile's objects, 0 = background, (h, w) the tile's shape.
        records : list of dict
            One per object (id, area, bbox, centroid, ...) in image coordinates (row, col);
            nodata pixels of the source never belong to an object.
        """
        gen = self._generator(emb)
        pixels = emb.source.read(tile.window)
        gen.initialize(pixels, channels=emb.source.channels, value_range=emb.value_range,
                       embedding=emb.embedding(tile, keep=emb.cache_dir is not None))
        res = gen.generate(offset=tile.window[:2], **self.gen_kw)
        nodata = getattr(emb.source, "nodata", None)
        if nodata is not None or emb.source.dtype.kind == "f":  # nodata never becomes objects
            from ..io.bands import mask_nodata, valid_mask

            valid = valid_mask(select_channels(pixels, emb.source.channels), nodata)
            return mask_nodata(res.labels, res.records, valid, offset=tile.window[:2])
        return res.labels, res.records


class AISSegmenter:
    """Tile segmenter for models with an instance decoder: the decoder's maps on one tile
    and the seeded watershed (`automask.ais`); same call as `AutomaskSegmenter`.

    Parameters
    ----------
    min_area : int
        Smallest object kept, in pixels.
    **params
        Keywords of `instance_labels.watershed_from_maps` (thresholds, smoothing; a value
        of None or a missing one: the model's).
    """

    def __init__(self, min_area: int = 0, **params) -> None:
        self.min_area, self.params = int(min_area), dict(params)
        self._local = threading.local()

    def settings(self) -> dict:
        """The settings that change the result (part of a work folder's signature).

        Returns
        -------
        dict
            "segmenter": "ais", min_area and the watershed keywords sorted by name.
        """
        return {"segmenter": "ais", "min_area": self.min_area, **dict(sorted(self.params.items()))}

    def __getstate__(self):
        return {"min_area": self.min_area, "params": self.params}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def __call__(self, emb: TiledEmbeddings, tile: Tile):
        """Segment one tile: the instance decoder's maps, then the seeded watershed.

        Parameters
        ----------
        emb : TiledEmbeddings
            The image, its tile grid and its tile embeddings.
        tile : Tile
            The tile to segment; its `window` is (row0, col0, row1, col1) in the image.

        Returns
        -------
        labels : ndarray (h, w) uint32
            The tile's objects, 0 = background.
        records : list of dict
            One per object, in image coordinates (row, col).
        """
        from .ais import labels_and_records, tile_maps

        _, maps = tile_maps(emb, tile)
        res = labels_and_records(emb.model, self.min_area, tile.window[:2], maps,
                                 zoom=emb.zoom, **self.params)
        return res.labels, res.records


class APGSegmenter(AISSegmenter):
    """Tile segmenter for APG (`automask.apg`): the decoder's seeds on one tile as point
    prompts for the mask decoder, on the tile's embedding.

    Parameters
    ----------
    min_area : int
        Smallest object kept, in pixels.
    **params
        Keywords of `automask.apg.apg` (min_size, thresholds, multimasking, batch_size,
        nms_threshold, ...).
    """

    def settings(self) -> dict:
        """The settings that change the result (part of a work folder's signature).

        Returns
        -------
        dict
            "segmenter": "apg", min_area and the APG keywords sorted by name.
        """
        return {**super().settings(), "segmenter": "apg"}

    def __call__(self, emb: TiledEmbeddings, tile: Tile):
        """Segment one tile: seeds from the instance decoder, decoded as point prompts.

        Parameters
        ----------
        emb : TiledEmbeddings
            The image, its tile grid and its tile embeddings.
        tile : Tile
            The tile to segment; its `window` is (row0, col0, row1, col1) in the image.

        Returns
        -------
        labels : ndarray (h, w) uint32
            The tile's objects, 0 = background.
        records : list of dict
            One per object, in image coordinates (row, col).
        """
        from .ais import tile_maps
        from .apg import labels_and_records
        from ..predictor import Predictor

        pred = getattr(self._local, "pred", None)
        if pred is None or pred.model is not emb.model:
            pred = self._local.pred = Predictor(emb.model, emb.device, emb.precision)
        e, maps = tile_maps(emb, tile)
        pred.set_embedding(e)
        res = labels_and_records(pred, self.min_area, tile.window[:2], maps, **self.params)
        return res.labels, res.records
