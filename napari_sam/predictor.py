"""Predictor: embed an image once, then answer many prompts cheaply.

    pred = Predictor(load_model("bundled"))
    pred.set_image(image)                       # expensive: runs the image encoder
    masks, scores, logits = pred.predict(points=[[row, col]], point_labels=[1])

Coordinates are napari's (row, col) in pixels of the image given to `set_image`.

Object size: `diameter` (of `Predictor` or `set_image`) says how large the objects are in
image pixels: None (the default, as in `automask`, the CLI and the widgets) estimates it
(`scale.estimate_diameter`), a number is taken as given, "off" resizes the whole image to
the model's input (SAM's rule, one embedding). The image then reaches the model zoomed so
that objects have the model's preferred size (`scale.plan_zoom`); when the zoomed image is
larger than the model's input, prompts are answered tile by tile by a
`tiled.TiledPredictor` at that zoom (`plan.tiled`: one mask per prompt, no low-res logits,
no `get_embedding`; pass diameter="off" for SAM's single embedding and its three masks).
Results are always in the image's pixel grid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .device import (autocast, configure_threads, cpu_decode_chunk,  # noqa: F401 (public)
                     resolve_decoder_precision, resolve_device, resolve_precision)
from .model import Sam, is_model, load_model
from .runtime.session import InferenceSession
from .scale import Diameter, ZoomPlan, plan_zoom, resolve_diameter
from .transforms import box_rc_to_xyxy, rc_to_xy, to_model_pixels

_UNSET = object()


@dataclass
class ImageEmbedding:
    """What `set_image` computes; store it and give it back with `set_embedding`."""

    features: torch.Tensor          # (1, C, g, g) float32
    original_size: Tuple[int, int]  # (Y, X) of the image
    input_size: Tuple[int, int]     # (h, w) of the resized image inside the model's square
    model_signature: str


class Predictor:
    """precision: "fp32", "bf16" or "fp16": encoder and decoder run under autocast to it;
    "auto": the encoder in bf16 on CUDA and on CPUs with AMX / AVX-512 bf16 (else fp32), the
    decoder likewise except on CPU for small decoders (the bundled model's), which run in fp32,
    as fast there and closer to the fp32 results (`device.resolve_decoder_precision`).
    `dtype` (the encoder's) and `decoder_dtype` say what was chosen; embeddings are stored as
    float32. compile: run the image encoder through `torch.compile` (the first `set_image`
    compiles, minutes on a small CPU; on failure a warning and the eager encoder).
    decode_chunk: prompts decoded per model call in `predict_lowres`: an int, None (all at
    once) or "auto" (on CPU `cpu_decode_chunk(model.config)`, elsewhere all at once).

    session: the `InferenceSession` that keeps the speed state (derived weights, scratch
    buffers, per-image caches) of every model call; default a new one for this model.
    Predictors of one model may share one (e.g. one per thread). It notices weight changes
    made through torch by itself; after writes torch cannot see call `invalidate()`.

    Creating or using a Predictor changes nothing in the process; num_threads, when given,
    sets torch's thread count (`torch.set_num_threads`, process-wide). For the tuning of
    threads, OpenMP and the allocator together see `napari_sam.tune_cpu`."""

    def __init__(self, model: Union[Sam, str, None] = None, device="auto", precision="auto",
                 compile: bool = False, num_threads: Optional[int] = None,
                 decode_chunk: Union[int, str, None] = "auto", diameter: Diameter = None,
                 session: Optional[InferenceSession] = None):
        self.device = resolve_device(device)
        self.precision = precision
        self.diameter = diameter  # the default for set_image (see the module docstring)
        self.plan: ZoomPlan = ZoomPlan(None)
        self._tiled = None  # a TiledPredictor when the zoomed image needs tiles
        self.model = (model.to(self.device) if is_model(model)
                      else load_model(model, self.device))
        self.model.eval()
        if session is not None and session.model is not self.model:
            raise ValueError("the session belongs to another model")
        self.session = session or InferenceSession(self.model)
        self.dtype = resolve_precision(precision, self.device)  # the encoder's
        self.decoder_dtype = resolve_decoder_precision(precision, self.device, self.model.config)
        if num_threads is not None:
            configure_threads(num_threads)
        if decode_chunk == "auto":
            decode_chunk = (cpu_decode_chunk(self.model.config)
                            if self.device.type == "cpu" else None)
        elif decode_chunk is not None:
            if (isinstance(decode_chunk, bool) or not hasattr(decode_chunk, "__index__")
                    or decode_chunk < 1):
                raise ValueError(f"decode_chunk must be a positive int, None or 'auto', "
                                 f"got {decode_chunk!r}")
            decode_chunk = int(decode_chunk)
        # prompts decoded per call of the model in `predict_lowres` (None: all at once)
        self.decode_chunk: Optional[int] = decode_chunk
        self.compile = bool(compile)
        self._compiled = None  # the compiled encoder; False once compiling has failed
        self._emb: Optional[ImageEmbedding] = None

    def invalidate(self) -> None:
        """Drop the speed state derived from the weights (`session`) and the model's
        signature memo: needed only after writes to the weights that torch cannot see
        (through `.data`, or into their memory from numpy)."""
        self.session.invalidate()
        invalidate = getattr(self.model, "invalidate_caches", None)
        if invalidate is not None:
            invalidate()

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.compile and self._compiled is not False:
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(self.model.image_encoder, dynamic=False)
                return self.model.encode(x, encoder=self._compiled)
            except Exception as err:  # no compiler, unsupported op, backend failure ...
                warnings.warn(f"torch.compile of the image encoder failed "
                              f"({type(err).__name__}: {str(err)[:200]}); using the eager "
                              "encoder", RuntimeWarning, stacklevel=3)
                self._compiled = False
        return self.model.encode(x)

    # ---- embedding -------------------------------------------------------------------
    @torch.no_grad()
    def set_image(self, image: np.ndarray, channels: Optional[Sequence[int]] = None,
                  value_range=None, diameter: Diameter = _UNSET,
                  zoom: Optional[float] = None) -> Optional[ImageEmbedding]:
        """Embed an image (the expensive step); prompts are then answered by `predict`.

        Parameters
        ----------
        image : ndarray, (Y, X) or (Y, X, C), any dtype and size
            uint8 RGB reaches the model unchanged; other dtypes are contrast-normalised with
            robust percentiles (`transforms.to_model_pixels`).
        channels : sequence of int, optional
            Up to 3 channels of a (Y, X, C) image to use; required for more than 4 channels.
        value_range : (float, float), optional
            The intensity range mapped to 0..255 (default: the image's robust percentiles).
        diameter : None, "off" or float, optional
            The objects' diameter in image pixels: None estimates it, "off" resizes the whole
            image to the model's input (no zoom). Default: the Predictor's.
        zoom : float, optional
            Model-input pixels per image pixel, overriding `diameter` (the zoomed image
            must fit the model's input).

        Returns
        -------
        ImageEmbedding or None
            The embedding (features (1, C, g, g) float32), or None when the image is answered
            tile by tile (`self.plan.tiled`).
        """
        self._tiled, self._emb = None, None
        if getattr(self.model, "square_input", False):
            # SAM 2.1 always sees the whole image resized to its square input (its own
            # predictor's rule); object-size zoom is not applied
            self.plan = ZoomPlan(None)
        elif zoom is None:
            d = resolve_diameter(image, self.diameter if diameter is _UNSET else diameter,
                                 channels, self.model)
            self.plan = plan_zoom(np.shape(image), self.model, d)
        else:
            self.plan = ZoomPlan(float(zoom))
        if self.plan.tiled:
            from .tiled import TiledPredictor

            self._tiled = TiledPredictor(
                self.model, image, tile_size=self.plan.tile, overlap=self.plan.overlap,
                channels=channels, device=self.device, precision=self.precision,
                session=self.session)
            return None
        pixels = to_model_pixels(image, channels, value_range)
        x = self.model.to_input(pixels, self.device, self.plan.zoom)
        self.session.refresh()  # a new image: drop state of weights changed since the last
        with self.session, autocast(self.device, self.dtype):
            feats = self._encode(x).float()
        if feats.is_inference():  # called under inference_mode: keep a normal tensor, whose
            with torch.inference_mode(False):  # version counter lets the decoder cache
                feats = feats.clone()  # per-image work safely
        self._emb = ImageEmbedding(feats, tuple(pixels.shape[:2]), tuple(x.shape[-2:]),
                                   self.model.signature())
        # the input pixels, for the instance head (cheap: (1, 3, h, w) floats)
        self._input = x if self.model.has_instance_head else None
        return self._emb

    @torch.no_grad()
    def instance_maps(self) -> dict:
        """The instance decoder's maps for the image set by `set_image` (or, for micro-sam's
        decoder, restored by `set_embedding`): dict of (Y, X) float32 arrays in 0..1
        (`foreground`, `center_distances`, `boundary_distances`); no second encoder pass."""
        from .model.instance_head import maps_from_logits

        emb = self.get_embedding()
        x = getattr(self, "_input", None)
        if not self.model.has_instance_head:
            raise ValueError(f"the model {self.model.config.name!r} has no instance decoder")
        if x is None and self.model.instance_decoder_kind == "head":
            raise RuntimeError("instance maps need the image: call set_image(image) (an "
                               "embedding restored with set_embedding has no pixels)")
        with self.session, autocast(self.device, self.dtype):
            logits = self.model.instance_logits(emb.features, x)
        return maps_from_logits(logits, emb.input_size, emb.original_size)

    def get_embedding(self) -> ImageEmbedding:
        if self._emb is None:
            if self._tiled is not None:
                raise RuntimeError(
                    "this image is answered tile by tile (its objects are small for the "
                    "model's input), so there is no single embedding; use predict(), or "
                    "set_image(..., diameter='off') for one embedding of the whole image")
            raise RuntimeError("no image is set: call set_image(image) first")
        return self._emb

    def set_embedding(self, emb: ImageEmbedding) -> None:
        if emb.model_signature != self.model.signature():
            raise ValueError("this embedding was computed with another model; "
                             "call set_image again with the current model")
        self.session.refresh()
        self._emb = ImageEmbedding(emb.features.to(self.device), tuple(emb.original_size),
                                   tuple(emb.input_size), emb.model_signature)
        self._input, self._tiled = None, None

    @property
    def is_image_set(self) -> bool:
        return self._emb is not None or self._tiled is not None

    # ---- prompts ---------------------------------------------------------------------
    def _scale(self) -> np.ndarray:
        emb = self.get_embedding()
        return np.array([emb.input_size[1] / emb.original_size[1],
                         emb.input_size[0] / emb.original_size[0]])

    def points_to_input(self, points_rc) -> torch.Tensor:
        """(N, 2) (row, col) image pixels -> (N, 2) (x, y) in the model's input frame."""
        return torch.as_tensor(rc_to_xy(points_rc) * self._scale(), dtype=torch.float32,
                               device=self.device)

    def box_to_input(self, box_rc) -> torch.Tensor:
        xyxy = box_rc_to_xyxy(box_rc) * np.tile(self._scale(), 2)
        return torch.as_tensor(xyxy, dtype=torch.float32, device=self.device)

    def _image_shape(self) -> Tuple[int, int]:
        if self._tiled is not None:
            return self._tiled.grid.shape
        return self.get_embedding().original_size

    def _check(self, points, labels, box, mask_input):
        h, w = self._image_shape()
        if points is None and box is None and mask_input is None:
            raise ValueError("empty prompt: give at least one point, a box or a mask_input")
        if points is not None:
            p = np.asarray(points, dtype=np.float64)
            if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
                raise ValueError(f"points must be a list of [row, col] pairs, got shape {p.shape}")
            if not np.isfinite(p).all():
                raise ValueError("points contain NaN or infinite coordinates")
            bad = (p[:, 0] < -0.5) | (p[:, 0] > h - 0.5) | (p[:, 1] < -0.5) | (p[:, 1] > w - 0.5)
            if bad.any():
                raise ValueError(f"point {p[bad][0].tolist()} lies outside the image of shape {(h, w)}")
            lab = np.ones(len(p), int) if labels is None else np.asarray(labels).reshape(-1)
            if len(lab) != len(p):
                raise ValueError(f"{len(p)} points but {len(lab)} point_labels")
            if not np.isin(lab, (0, 1)).all():
                raise ValueError("point_labels must be 1 (object) or 0 (background)")
            labels = lab
        elif labels is not None:
            raise ValueError("point_labels given without points")
        if box is not None:
            b = np.asarray(box, dtype=np.float64).reshape(-1)
            if b.shape != (4,) or not np.isfinite(b).all():
                raise ValueError("box must be [row0, col0, row1, col1] with finite numbers")
            if b[0] == b[2] or b[1] == b[3]:
                raise ValueError(f"box {b.tolist()} has zero area")
            r0, r1 = sorted((b[0], b[2]))
            c0, c1 = sorted((b[1], b[3]))
            if r1 <= -0.5 or r0 >= h - 0.5 or c1 <= -0.5 or c0 >= w - 0.5:
                raise ValueError(f"box {b.tolist()} (row0, col0, row1, col1) lies wholly "
                                 f"outside the image of shape {(h, w)}; draw it over the object")
            box = b
        if mask_input is not None:
            m = torch.as_tensor(np.asarray(mask_input), dtype=torch.float32)
            s = self.model.config.mask_size
            if m.shape[-2:] != (s, s) or m.numel() != s * s:
                raise ValueError(f"mask_input must be low-res logits of shape ({s}, {s}) "
                                 f"(the logits of an earlier predict), got {tuple(m.shape)}")
            if not torch.isfinite(m).all():
                raise ValueError("mask_input contains NaN or infinite values; pass the logits "
                                 "of an earlier predict unchanged (or no mask_input)")
            mask_input = m.reshape(1, 1, s, s).to(self.device)
        return points, labels, box, mask_input

    @torch.no_grad()
    def predict_lowres(self, xy: Optional[torch.Tensor], labels: Optional[torch.Tensor],
                       boxes: Optional[torch.Tensor] = None, mask_input=None, multimask=True
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Batched prompts in the input frame -> low-res logits (B, K, m, m), scores (B, K).

        On CPU the prompts are decoded `decode_chunk` at a time (`cpu_decode_chunk`): every
        prompt carries its own (hw, C) copy of the image tokens through the decoder."""
        emb = self.get_embedding()
        n = next((t.shape[0] for t in (xy, boxes, mask_input) if t is not None), 1)
        step = self.decode_chunk or n

        def part(t, s):  # a batch-1 tensor is shared by all prompts (broadcast), as before
            return None if t is None else t if t.shape[0] == 1 else t[s:s + step]

        outs = []
        with self.session, autocast(self.device, self.decoder_dtype):
            for s in range(0, n, step):
                pts = None if xy is None else (part(xy, s), part(labels, s))
                outs.append(self.model.decode(emb.features, pts, part(boxes, s),
                                              part(mask_input, s), multimask))
        if len(outs) == 1:
            return outs[0][0].float(), outs[0][1].float()
        return torch.cat([o[0] for o in outs]).float(), torch.cat([o[1] for o in outs]).float()

    def upscale(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K, m, m) low-res logits -> (B, K, Y, X) logits at the image's size."""
        emb = self.get_embedding()
        return self.model.upscale_logits(logits, emb.input_size, emb.original_size)

    def predict(self, points=None, point_labels=None, box=None, mask_input=None,
                multimask: bool = True):
        """Masks for one object from point, box and mask prompts.

        Parameters
        ----------
        points : array-like, (N, 2) float, optional
            (row, col) in image pixels.
        point_labels : array-like, (N,) int, optional
            1 (object) or 0 (background) per point; default all 1.
        box : array-like, (4,), optional
            (row0, col0, row1, col1) in image pixels.
        mask_input : ndarray, (m, m) float, optional
            The low-res logits of an earlier call (refinement); m = `model.config.mask_size`.
        multimask : bool
            Three candidates (True) or one.

        Returns
        -------
        masks : ndarray, (K, Y, X) bool
            K = 3 with `multimask`, else 1, in the model's order; on an image answered tile
            by tile (`self.plan.tiled`) K = 1 (the best candidate).
        scores : ndarray, (K,) float32
            Predicted IoU per mask.
        logits : ndarray, (K, m, m) float32, or None
            Low-res logits (for `mask_input`); None on a tiled image, where `mask_input` is
            refused.
        """
        points, labels, box, mask_input = self._check(points, point_labels, box, mask_input)
        if self._tiled is not None:
            return self._predict_tiled(points, labels, box, mask_input, multimask)
        xy = lab = bx = None
        if points is not None:
            xy = self.points_to_input(points)[None]
            lab = torch.as_tensor(labels, dtype=torch.long, device=self.device)[None]
        if box is not None:
            bx = self.box_to_input(box)
        logits, scores = self.predict_lowres(xy, lab, bx, mask_input, multimask)
        if logits.device.type == "cpu":
            masks = self._masks_numpy(logits[0])
        else:
            masks = self.upscale_masks(logits[0]).cpu().numpy()
        out = logits[0]
        clamp = getattr(self.model, "logit_clamp", None)
        if clamp:  # SAM 2 returns its low-res logits clamped (masks come from the raw ones)
            out = out.clamp(-clamp, clamp)
        return masks, scores[0].cpu().numpy(), out.cpu().numpy()

    def _predict_tiled(self, points, labels, box, mask_input, multimask):
        """`predict` on a tiled image: one mask (1, Y, X), its score (1,), logits None."""
        if mask_input is not None:
            raise ValueError(
                "mask_input cannot be used on an image answered tile by tile; refine with "
                "more points instead, or set_image(..., diameter='off') for one embedding")
        m = self._tiled.predict(points, labels, box, multimask=None if multimask else False)
        return m.to_full(self._tiled.grid.shape)[None], np.array([m.score], np.float32), None

    def upscale_masks(self, logits: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
        """(..., m, m) low-res logits -> (..., Y, X) bool masks at the image's size: the
        same as `upscale(logits) > threshold`, computed only inside each mask's box."""
        return self._upscaler().masks(logits, threshold)

    def _upscaler(self):
        emb = self.get_embedding()
        with self.session:
            return self.model.mask_upscaler(emb.input_size, emb.original_size)

    def _masks_numpy(self, logits: torch.Tensor, threshold: float = 0.0) -> np.ndarray:
        """`upscale_masks(logits, threshold)` as a numpy array, for (K, m, m) logits on the
        CPU: the same upsampled block (`MaskUpscaler.crop`, inside the box of the low-res
        positives), thresholded by numpy straight into the output. numpy's comparison
        writes booleans about four times as fast as torch's here, and no torch bool
        intermediate is copied into the frame afterwards."""
        up = self._upscaler()
        out = np.zeros((logits.shape[0],) + tuple(up.out_hw), dtype=bool)
        for g, (r0, r1), (c0, c1), block in up.blocks(logits, threshold):
            np.greater(block.numpy(), threshold, out=out[g, r0:r1, c0:c1])
        return out
