"""The automask widget's decoder modes (AIS, APG), without Qt: the instance decoder's maps
of one image kept in a `DecoderSession`, re-thresholded by the sliders without the encoder."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..automask.amg import AutoMaskResult, default_thresholds
from ..automask.stack import automask_stack
from .automask_job import CHANNELS, CURRENT, LINKED, JobResult, Request, floors_for, request_plane


DECODER_KEYS = ("center_distance_threshold", "boundary_distance_threshold",
                "foreground_threshold")


class DecoderSession:
    """The instance decoder's maps of one 2D image (or slice) and the predictor holding its
    embedding; `result` re-thresholds them (AIS: the watershed only; APG: the prompts on
    the held embedding), never the encoder. `key` identifies image, model and size."""

    def __init__(self, shape: Tuple[int, ...], index: Tuple[int, ...], predictor, maps: dict,
                 method: str, key=None, zoom: Optional[float] = None) -> None:
        self.shape, self.index, self.predictor, self.maps = tuple(shape), tuple(index), \
            predictor, maps
        self.method, self.key = method, key
        self.zoom = zoom  # model-input px per image px of maps made tile by tile
        self.mode = CURRENT
        self.lineage: Optional[dict] = None
        self.last: Optional[AutoMaskResult] = None

    def result(self, pred_iou_thresh=None, stability_thresh=None, min_area: int = 0,
               first=None, **decoder_kw) -> AutoMaskResult:
        """Labels (the image's or the stack's shape) and records for these thresholds
        (decoder keys left out or None: the model's); the grid thresholds are ignored."""
        from ..automask import ais, apg

        kw = {k: float(v) for k, v in decoder_kw.items() if k in DECODER_KEYS and v is not None}
        if self.method == "apg":
            res = apg.labels_and_records(self.predictor, int(min_area), maps=self.maps, **kw)
        else:
            res = ais.labels_and_records(self.predictor, int(min_area), maps=self.maps,
                                         zoom=self.zoom, **kw)
        if self.index:
            full = np.zeros(self.shape, np.uint32)
            full[self.index] = res.labels
            res = AutoMaskResult(full, [dict(r, index=list(self.index)) for r in res.records])
        self.last = res
        return res


def decoder_defaults(model) -> dict:
    """The decoder thresholds a model uses when none are given (its calibrated AIS ones)."""
    from ..automask.ais import ais_defaults

    d = ais_defaults(model)
    return {k: float(d[k]) for k in DECODER_KEYS}


def _tiled_maps(plane, req: Request, model, predictor, plan):
    """(maps, zoom): the AIS maps of a whole 2D plane from tiles at `plan`'s zoom, as large
    as the model takes them (`scale.instance_tile_input`), in the predictor's session."""
    from ..automask.ais import tiled_maps
    from ..scale import instance_tile_input, tiled_plan
    from ..tiled import TiledEmbeddings

    big = tiled_plan(model, plan.diameter, instance_tile_input(model, "ais"), plane.shape[:2])
    emb = TiledEmbeddings(model, plane, tile_size=big.tile, overlap=big.overlap,
                          tile_input=big.tile_input, channels=req.channels,
                          device=predictor.device, precision=predictor.precision,
                          session=predictor.session)
    return tiled_maps(emb), emb.zoom


def run_decoder(req: Request, model, predictor, plan, lead: int, method: str, report,
                 thresholds: dict) -> "JobResult":
    """A decoder-mode run: a `DecoderSession` for 2D images and one slice (its maps
    re-thresholded by the sliders; for AIS also when the object size makes the image run
    tile by tile: the tiles' maps make one image-sized map), else one pass of
    `automask.AutoSegmenter` (stacks, APG on tiles: the sliders apply at the next Run)."""
    from ..automask.segmenter import AutoSegmenter

    kw = {k: v for k, v in req.ais.items() if k in DECODER_KEYS and v is not None}
    floors = floors_for(default_thresholds(model))
    one_plane = lead == 0 or req.mode == CURRENT or (req.mode == CHANNELS and lead == 1)
    if one_plane and (method == "ais" or not plan.tiled):
        plane, shape = request_plane(req)
        index = req.index if lead and req.mode != CHANNELS else ()
        session = req.cached
        if session is None or session.method != method or session.predictor.model is not model:
            report(0, 2, "embedding the image")
            if plan.tiled:  # the decoder tile by tile, one map of the whole image
                maps, zoom = _tiled_maps(plane, req, model, predictor, plan)
                session = DecoderSession(shape, index, predictor, maps, method, zoom=zoom)
            else:
                predictor.set_image(plane, req.channels, diameter="off", zoom=plan.zoom)
                report(1, 2, "running the instance decoder")
                session = DecoderSession(shape, index, predictor, predictor.instance_maps(),
                                         method)
        else:
            report(1, 2, "re-thresholding the kept decoder maps")
        report(2, 2, "watershed" if method == "ais" else "prompting the mask decoder")
        res = session.result(**thresholds, **kw)
        return JobResult(model, session, res, thresholds, floors)
    seg = AutoSegmenter(predictor, mode=method, diameter=plan.diameter or "off",
                        min_area=int(thresholds["min_area"]), **kw)
    if lead == 0:
        res = seg(request_plane(req)[0], req.channels, progress=report)
    else:
        stack = np.asarray(req.data)
        axes = "Z" * lead + "YX" + ("C" if req.rgb else "")
        res = automask_stack(stack, seg, axes, progress=report, channels=req.channels)
        if req.mode in LINKED and res.labels.ndim == 3:
            from ..automask.volume import link_stack_result

            res, _ = link_stack_result(res, divisions=LINKED[req.mode])
    return JobResult(model, None, res, thresholds, floors)
