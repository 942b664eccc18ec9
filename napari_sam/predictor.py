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
Results are always in the image's pixel grid. The batched tensor API in the model's input
frame (`predict_lowres`, `points_to_input`, `upscale_masks`, ...) is in `predictor_lowres.py`.
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
from .predictor_lowres import LowResPrompts
from .prompt_check import check_prompt
from .runtime.session import InferenceSession
from .scale import Diameter, ZoomPlan, plan_zoom, resolve_diameter
from .transforms import to_model_pixels

_UNSET = object()


@dataclass
class ImageEmbedding:
    """What `set_image` computes; store it and give it back with `set_embedding`.

    Parameters
    ----------
    features : Tensor, (1, C, g, g) float32
        The image encoder's output (g: the model's embedding grid side).
    original_size : (int, int)
        (Y, X) of the image.
    input_size : (int, int)
        (h, w) of the resized image inside the model's square input.
    model_signature : str
        `Sam.signature()` of the weights that computed it.
    """

    features: torch.Tensor
    original_size: Tuple[int, int]
    input_size: Tuple[int, int]
    model_signature: str


class Predictor(LowResPrompts):
    """A model and one embedded image, answering prompts in the image's (row, col) pixels.

    Creating or using a Predictor changes nothing in the process (only `num_threads`, when
    given, sets torch's process-wide thread count); for CPU tuning see `napari_sam.tune_cpu`.

    Parameters
    ----------
    model : Sam, str or Path, optional
        A loaded model, a registry name or a checkpoint path; None: the bundled model.
    device : str or torch.device
        "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", ...
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast dtype of the encoder and decoder. "auto": the encoder in bf16 on CUDA and
        on CPUs with AMX / AVX-512 bf16, else fp32; the decoder likewise, except small
        decoders on CPU (the bundled model's), which stay fp32 (as fast there, closer to
        fp32 results). `dtype` and `decoder_dtype` hold the choice; embeddings are float32.
    compile : bool
        Run the image encoder through `torch.compile` (the first `set_image` compiles; on
        failure a warning and the eager encoder).
    num_threads : int, optional
        Sets `torch.set_num_threads` (process-wide).
    decode_chunk : int, None or "auto"
        Prompts per model call in `predict_lowres`: None all at once, "auto" on CPU
        `device.cpu_decode_chunk(model.config)`, elsewhere all at once.
    diameter : None, "off" or float
        The default object diameter of `set_image` (see the module docstring).
    session : InferenceSession, optional
        Keeps the speed state (derived weights, scratch buffers, per-image caches) of the
        model calls; default a new one. Predictors of one model may share one. It notices
        weight changes made through torch; after writes torch cannot see, `invalidate()`.
    """

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
    def instance_maps(self, at_input: bool = False) -> dict:
        """The instance decoder's maps for the image set by `set_image` (no second encoder
        pass; for micro-sam's decoder also after `set_embedding`).

        Parameters
        ----------
        at_input : bool
            Return the maps at the zoomed model-input size (h, w) instead of the image's.

        Returns
        -------
        maps : dict of str to ndarray
            "foreground", "center_distances", "boundary_distances": (Y, X) float32 in 0..1
            ((h, w) with `at_input`).

        Raises
        ------
        ValueError
            When the model has no instance decoder.
        """
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
        return maps_from_logits(logits, emb.input_size,
                                emb.input_size if at_input else emb.original_size)

    def get_embedding(self) -> ImageEmbedding:
        """The embedding of the current image.

        Returns
        -------
        ImageEmbedding

        Raises
        ------
        RuntimeError
            No image is set, or the image is answered tile by tile (no single embedding).
        """
        if self._emb is None:
            if self._tiled is not None:
                raise RuntimeError(
                    "this image is answered tile by tile (its objects are small for the "
                    "model's input), so there is no single embedding; use predict(), or "
                    "set_image(..., diameter='off') for one embedding of the whole image")
            raise RuntimeError("no image is set: call set_image(image) first")
        return self._emb

    def set_embedding(self, emb: ImageEmbedding) -> None:
        """Restore an embedding from `set_image` / `get_embedding` instead of encoding again.

        Parameters
        ----------
        emb : ImageEmbedding
            Computed by this model's current weights (else a ValueError).
        """
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

    # ---- prompts (numpy, image pixels) -----------------------------------------------
    def _image_shape(self) -> Tuple[int, int]:
        if self._tiled is not None:
            return self._tiled.grid.shape
        return self.get_embedding().original_size

    def _check(self, points, labels, box, mask_input):
        return check_prompt(points, labels, box, mask_input, self._image_shape(),
                            self.model.config.mask_size, self.device)

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
