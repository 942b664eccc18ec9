"""Automatic mask generation: a grid of point prompts -> a uint32 label image.

(`napari_sam.automask.segmenter.automask` is the entry point that chooses the zoom, mode and tiling;
this module is the grid-of-prompts machinery it uses.)

    gen = AutoMaskGenerator(load_model("bundled"), points_per_side=32)
    gen.initialize(image, progress)                     # expensive: embed + decode the grid
    result = gen.generate()                             # cheap: filter, NMS, paint
    result = gen.generate(pred_iou_thresh=0.8)          # again, nothing is recomputed
    result.labels, result.records

`initialize` embeds the image (and, with `crop_n_layers`, overlapping crops of it) and
decodes the point grid in batches into *compact candidates* (`decode.decode_batch`: scores,
box, prompt point, low-res logits cut to the mask's box; stability on the low-res logits, or
exactly on the full-resolution masks with `stability="full"`). Candidates below the loose
floors `min_candidate_iou` / `min_candidate_stability` are dropped there; they are the
lowest thresholds `generate` can use.

Thresholds left out (None) are the model's: `default_thresholds(model)` -- SAM's 0.88 (predicted
IoU) and 0.95 (stability), unless the checkpoint carries thresholds calibrated for its weights
(the bundled model does: its IoU head is calibrated differently from SAM's).

`generate` filters by thresholds, removes duplicates by box NMS, and only then upsamples the
survivors to full resolution, each inside its own box: the model's upsampling (bilinear to
the padded square, unpad, bilinear to the image) is linear and separable, so it is applied
as two small matrices `rows @ logits @ cols.T` restricted to the mask's box -- the same
values as upsampling the whole frame. Holes and islands are cleaned, then overlaps are
resolved by the rule in `automask.candidates` (smaller masks on top).

For tiles, call `initialize` on the tile (pass the whole image's `value_range` so all tiles
are normalised alike, or a cached `embedding`) and `generate(offset=(row0, col0))` to get
records in the whole image's coordinates; `select_masks` gives the masks before painting.
"""

from __future__ import annotations

import inspect
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .grid import GridUpscaler, crop_boxes, point_grid  # noqa: F401 (public)
from .candidates import Candidates, clean_mask, label_boxes, nms, paint_labels, trim
from .decode import decode_batch
from ..predictor import Predictor
from ..progress import null_progress
from ..transforms import intensity_range, select_channels
from .results import (SAM_THRESHOLDS, AutoMaskResult, MaskSet,  # noqa: F401 (public here)
                      default_thresholds)


class AutoMaskGenerator:
    """A grid of point prompts decoded once per image, then filtered as often as wanted.

    Parameters
    ----------
    model_or_predictor : Predictor, Sam, str or Path, optional
        A Predictor to share, or a model / registry name / checkpoint (None: bundled).
    points_per_side : int
        The grid is points_per_side x points_per_side points per crop.
    points_per_batch : int
        Prompts decoded per model call.
    crop_n_layers, crop_overlap_ratio, crop_points_downscale : int, float, int
        Layers of overlapping crops (0: none), their overlap, the grid's shrink per layer.
    min_candidate_iou, min_candidate_stability : float
        Candidate floors at `initialize` (the lowest thresholds `generate` can use).
    stability_offset, mask_threshold : float
        Logit offset of the stability score; logit cut-off of a mask.
    stability : {"lowres", "full"}
        Stability score on the low-res logits (fast) or the full-resolution masks.
    device, precision : str
        For the Predictor made when a model is given.
    """

    def __init__(self, model_or_predictor=None, points_per_side: int = 32,
                 points_per_batch: int = 64, crop_n_layers: int = 0,
                 crop_overlap_ratio: float = 512 / 1500, crop_points_downscale: int = 1,
                 min_candidate_iou: float = 0.5, min_candidate_stability: float = 0.5,
                 stability_offset: float = 1.0, mask_threshold: float = 0.0,
                 stability: str = "lowres", device="auto", precision="auto") -> None:
        if isinstance(model_or_predictor, Predictor):
            self.predictor = model_or_predictor
        else:
            self.predictor = Predictor(model_or_predictor, device=device, precision=precision)
        if points_per_side < 1 or points_per_batch < 1:
            raise ValueError("points_per_side and points_per_batch must be at least 1")
        self.points_per_side = int(points_per_side)
        self.points_per_batch = int(points_per_batch)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_points_downscale = int(crop_points_downscale)
        self.min_candidate_iou = float(min_candidate_iou)
        self.min_candidate_stability = float(min_candidate_stability)
        self.stability_offset = float(stability_offset)
        self.mask_threshold = float(mask_threshold)
        if stability not in ("lowres", "full"):
            raise ValueError(f"stability must be 'lowres' or 'full', got {stability!r}")
        self.stability = stability
        self.candidates: Optional[Candidates] = None
        self.image_shape: Optional[Tuple[int, int]] = None
        self.crops: List[Tuple[int, Tuple[int, int, int, int]]] = []
        self._up: List[GridUpscaler] = []
        self._cache: Dict[tuple, object] = {}  # upsampled masks and selections

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    # ---- the expensive step ------------------------------------------------------------
    def initialize(self, image: np.ndarray, progress=null_progress, channels=None,
                   value_range=None, embedding=None, zoom: Optional[float] = None
                   ) -> "AutoMaskGenerator":
        """Embed the image (and its crops) and decode the point grid; keep candidates.

        Parameters
        ----------
        image : ndarray, (Y, X) or (Y, X, C), any dtype
        progress : callable(done, total, message), optional
        channels : sequence of int, optional
            Up to 3 channels of a (Y, X, C) image.
        value_range : (float, float), optional
            Intensity range mapped to 0..255 (tiles: the whole image's).
        embedding : ImageEmbedding, optional
            A cached embedding of `image` (its original_size must be (Y, X)).
        zoom : float, optional
            Model-input px per image px for the whole image (`scale.plan_zoom`; the zoomed
            image must fit the input); None resizes it to the input (SAM's rule), as always
            for the crops.

        Returns
        -------
        self : AutoMaskGenerator
        """
        image = np.asarray(image)
        if image.ndim not in (2, 3):
            raise ValueError(f"automask takes one 2D image (Y, X) or (Y, X, C), got shape "
                             f"{image.shape}; for stacks use napari_sam.automask.automask_stack")
        if image.ndim == 3 and image.shape[-1] > 4 and channels is None:
            raise ValueError(
                f"automask got an image of shape {image.shape}: {image.shape[-1]} channels "
                "(last axis), and the model takes up to 3. Choose them with channels=[i, j, k] "
                "(e.g. channels=[0]; on the command line --channels 0,1,2); if the first axis "
                "is a stack of 2D images instead, use napari_sam.automask.automask_stack")
        h, w = image.shape[:2]
        self.image_shape = (h, w)
        self.crops = crop_boxes((h, w), self.crop_n_layers, self.crop_overlap_ratio)
        if len(self.crops) > 1 and value_range is None:
            px = select_channels(image, channels)
            if px.dtype != np.uint8:  # crops are normalised like the whole image
                value_range = intensity_range(px)
        plans = []
        for layer, box in self.crops:
            n = max(1, self.points_per_side // self.crop_points_downscale ** layer)
            plans.append((layer, box, point_grid(box[2] - box[0], box[3] - box[1], n)))
        total = sum(1 + math.ceil(len(p[2]) / self.points_per_batch) for p in plans)
        done = 0
        progress(done, total, "embedding")
        parts, self._up, self._cache = [], [], {}
        for ci, (layer, box, points) in enumerate(plans):
            r0, c0, r1, c1 = box
            if embedding is not None and ci == 0:
                if tuple(embedding.original_size) != (h, w):
                    raise ValueError(f"the embedding is of an image of shape "
                                     f"{tuple(embedding.original_size)}, not {(h, w)}")
                self.predictor.set_embedding(embedding)
            else:
                self.predictor.set_image(image[r0:r1, c0:c1], channels, value_range,
                                         diameter="off", zoom=zoom if ci == 0 else None)
            emb = self.predictor.get_embedding()
            model = self.predictor.model
            up = GridUpscaler(model.mask_upscaler(emb.input_size, (r1 - r0, c1 - c0)),
                              emb.input_size)
            self._up.append(up)
            done += 1
            progress(done, total, f"decoding {len(points)} points" +
                     (f" in crop {ci}/{len(plans) - 1}" if ci else ""))
            xy = self.predictor.points_to_input(points)
            pts = torch.as_tensor(points, dtype=torch.float32, device=self.device)
            for s in range(0, len(points), self.points_per_batch):
                parts.append(decode_batch(self, xy[s:s + self.points_per_batch],
                                          pts[s:s + self.points_per_batch], ci, up))
                done += 1
                progress(done, total, "decoding")
        self.candidates = Candidates.cat(parts)
        return self

    # ---- the cheap step ----------------------------------------------------------------
    def thresholds(self, pred_iou_thresh: Optional[float] = None,
                   stability_thresh: Optional[float] = None) -> Tuple[float, float]:
        """The given thresholds, with the model's defaults for those left as None.

        Parameters
        ----------
        pred_iou_thresh, stability_thresh : float, optional

        Returns
        -------
        (pred_iou_thresh, stability_thresh) : tuple of float
        """
        d = default_thresholds(self.predictor.model)
        return (d["pred_iou_thresh"] if pred_iou_thresh is None else float(pred_iou_thresh),
                d["stability_thresh"] if stability_thresh is None else float(stability_thresh))

    def _require(self) -> Candidates:
        if self.candidates is None:
            raise RuntimeError("call initialize(image) before generate()")
        return self.candidates

    def select(self, pred_iou_thresh: Optional[float] = None,
               stability_thresh: Optional[float] = None, nms_thresh: float = 0.7) -> torch.Tensor:
        """Rows of `candidates` passing the thresholds and box NMS, best first (memoised).

        Parameters
        ----------
        pred_iou_thresh, stability_thresh : float, optional
            None: the model's.
        nms_thresh : float
            Box IoU above which the lower-scored of two candidates is dropped.

        Returns
        -------
        rows : Tensor, (N,) int64
        """
        c = self._require()
        pred_iou_thresh, stability_thresh = self.thresholds(pred_iou_thresh, stability_thresh)
        key = ("select", pred_iou_thresh, stability_thresh, float(nms_thresh))
        if key not in self._cache:
            self._cache[key] = self._select(c, *key[1:])
        return self._cache[key]

    def _select(self, c: Candidates, pred_iou_thresh, stability_thresh, nms_thresh):
        idx = ((c.iou >= pred_iou_thresh) & (c.stability >= stability_thresh)).nonzero().flatten()
        if len(self.crops) > 1 and len(idx):
            per_crop = [idx[c.crop[idx] == ci] for ci in range(len(self.crops))]
            idx = torch.cat([i[nms(c.box[i], c.iou[i], nms_thresh)] for i in per_crop])
            # across crops, masks from smaller (deeper) crops are preferred: they saw more
            layer = torch.tensor([lay for lay, _ in self.crops], device=self.device)[c.crop[idx]]
            prio = layer.float() * 16 + c.iou[idx].clamp(-4, 4)
            keep = nms(c.box[idx], prio, nms_thresh)
            idx = idx[keep]
            return idx[torch.argsort(c.iou[idx], descending=True, stable=True)]
        return idx[nms(c.box[idx], c.iou[idx], nms_thresh)]

    def select_masks(self, pred_iou_thresh: Optional[float] = None,
                     stability_thresh: Optional[float] = None, nms_thresh: float = 0.7, min_region_area: int = 16,
                     min_area: int = 0) -> MaskSet:
        """Survivors of `select`, upsampled inside their boxes and cleaned (cached).

        Parameters
        ----------
        pred_iou_thresh, stability_thresh, nms_thresh : float
            As in `select`.
        min_region_area : int
            Holes and islands smaller than this (pixels) are filled / removed.
        min_area : int
            Masks with fewer pixels are dropped.

        Returns
        -------
        MaskSet
            masks[i]: (h, w) bool crop whose top-left pixel is boxes[i][:2]; boxes[i]:
            (row0, col0, row1, col1) in the image, exclusive ends; index[i]: its row.
        """
        c = self._require()
        rows = self.select(pred_iou_thresh, stability_thresh, nms_thresh).tolist()
        todo = [i for i in rows if (i, min_region_area) not in self._cache]
        if todo:
            meta = torch.cat([c.region[todo], c.origin[todo], c.crop[todo, None]], 1).tolist()
            flat, shapes = [], []
            for i, (rs, cs, re, ce, o_r, o_c, ci) in zip(todo, meta):
                m = self._up[ci].crop(c.logits[i], (rs, cs, re, ce), (o_r, o_c))
                flat.append((m > self.mask_threshold).flatten())
                shapes.append((re - rs, ce - cs, rs + self.crops[ci][1][0],
                               cs + self.crops[ci][1][1]))
            bits = torch.cat(flat).cpu().numpy()  # one transfer for all survivors
            pos = 0
            for i, (hh, ww, top, left) in zip(todo, shapes):
                mask = bits[pos:pos + hh * ww].reshape(hh, ww)
                pos += hh * ww
                t = trim(mask, (top, left))
                if t is not None and min_region_area > 0:
                    t = trim(clean_mask(t[0], min_region_area, min_region_area), t[1][:2])
                self._cache[(i, min_region_area)] = t
        out = MaskSet([], [], [])
        for i in rows:
            t = self._cache[(i, min_region_area)]
            if t is not None and t[0].sum() >= max(min_area, 1):
                out.masks.append(t[0])
                out.boxes.append(tuple(int(v) for v in t[1]))
                out.index.append(i)
        return out

    def generate(self, pred_iou_thresh: Optional[float] = None,
                 stability_thresh: Optional[float] = None, min_area: int = 0, nms_thresh: float = 0.7, min_region_area: int = 16,
                 min_visible: float = 0.5, offset: Sequence[int] = (0, 0)) -> AutoMaskResult:
        """Filter, de-duplicate, clean and paint the candidates (re-callable, cheap).

        Parameters
        ----------
        pred_iou_thresh, stability_thresh : float, optional
            None: the model's.
        min_area : int
            Smallest object kept (visible pixels).
        nms_thresh, min_region_area : float, int
            As in `select_masks`.
        min_visible : float
            See `candidates.paint_labels`.
        offset : (int, int)
            (row, col) added to the records' bbox and point (for tiles).

        Returns
        -------
        AutoMaskResult
            labels (Y, X) uint32 of the initialized image, and the records.
        """
        c = self._require()
        ms = self.select_masks(pred_iou_thresh, stability_thresh, nms_thresh,
                               min_region_area, min_area)
        scores = c.iou[ms.index].tolist() if ms.index else []
        labels, kept = paint_labels(ms.masks, ms.boxes, scores, self.image_shape,
                                    min_visible, min_area)
        if not kept:
            return AutoMaskResult(labels, [])
        rows = [ms.index[k] for k in kept]
        areas = np.bincount(labels.ravel(), minlength=len(kept) + 1)[1:]
        boxes = label_boxes(labels, len(kept)) + np.tile(np.asarray(offset, np.int64), 2)
        iou, stab = c.iou[rows].tolist(), c.stability[rows].tolist()
        pts = (c.point[rows].cpu().numpy() + np.asarray(offset, np.float64)).tolist()
        crop = c.crop[rows].tolist()
        records = [{"id": k + 1, "area": int(areas[k]), "bbox": [int(v) for v in boxes[k]],
                    "predicted_iou": float(iou[k]), "stability": float(stab[k]),
                    "point": [float(v) for v in pts[k]],
                    "crop_box": list(self.crops[crop[k]][1])}
                   for k in range(len(kept))]
        return AutoMaskResult(labels, records)


_INIT_KEYS = set(inspect.signature(AutoMaskGenerator.__init__).parameters) - {"self"}
_RUN_KEYS = {"channels", "value_range", "embedding"}
_GEN_KEYS = set(inspect.signature(AutoMaskGenerator.generate).parameters) - {"self"}


def split_kwargs(kw: dict) -> Tuple[dict, dict, dict]:
    """Split keyword arguments into (constructor, initialize, generate) ones.

    Parameters
    ----------
    kw : dict
        Automask options (TypeError for an unknown one).

    Returns
    -------
    init, run, generate : dict
        The options of `AutoMaskGenerator(...)`, of `initialize` and of `generate`.
    """
    bad = set(kw) - _INIT_KEYS - _RUN_KEYS - _GEN_KEYS
    if bad:
        raise TypeError(f"unknown automask option(s): {', '.join(sorted(bad))}")
    pick = lambda keys: {k: v for k, v in kw.items() if k in keys}  # noqa: E731
    return pick(_INIT_KEYS), pick(_RUN_KEYS), pick(_GEN_KEYS)


def fixed_thresholds(generator: AutoMaskGenerator, init: dict, pred_iou_thresh=None,
                     stability_thresh=None) -> AutoMaskGenerator:
    """For runs whose thresholds are known up front (no sliders): the candidate floors
    become the thresholds, unless `init` (the constructor's keywords) set them.

    Parameters
    ----------
    generator : AutoMaskGenerator
        Changed in place.
    init : dict
        The constructor's keywords.
    pred_iou_thresh, stability_thresh : float, optional
        The thresholds (None: the generator's defaults).

    Returns
    -------
    AutoMaskGenerator
        `generator`.
    """
    a, b = generator.thresholds(pred_iou_thresh, stability_thresh)
    if "min_candidate_iou" not in init:
        generator.min_candidate_iou = a
    if "min_candidate_stability" not in init:
        generator.min_candidate_stability = b
    return generator
