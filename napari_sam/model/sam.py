"""Sam: image encoder, prompt encoder and mask decoder behind one small interface.

`encode` is the expensive step (once per image); `decode` is cheap and batched over prompts.
All coordinates here are SAM's (x, y) in the model's input frame; the Predictor converts
from the user's image.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from ..runtime.kernels import constant
from ..runtime.two_way import image_key
from .config import SamConfig, TinyViTConfig
from .image_encoder import ImageEncoderViT
from .instance_head import InstanceHead
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .signature import WeightsSignature
from .tiny_vit import TinyViT
from .unetr_decoder import UNETRDecoder


class Sam(WeightsSignature, nn.Module):
    """A Segment Anything model: image encoder, prompt encoder, mask decoder and, for some
    variants, an instance decoder; the modules are built from `config`, the weights are
    loaded separately (`load_model`).

    Parameters
    ----------
    config : SamConfig
        The variant: encoder kind and sizes, input side, decoder sizes, instance decoder.
    """

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        self.config = config
        enc = config.encoder
        d = config.prompt_embed_dim
        if isinstance(enc, TinyViTConfig):
            self.image_encoder = TinyViT(enc, config.image_size, d)
        else:
            self.image_encoder = ImageEncoderViT(enc, config.image_size, d)
        self.prompt_encoder = PromptEncoder(d, config.embed_grid, config.image_size)
        self.mask_decoder = MaskDecoder(
            d, config.decoder_depth, config.decoder_heads, config.decoder_mlp_dim,
            config.num_multimask_outputs, config.iou_head_hidden_dim)
        if config.instance_head:
            self.instance_head = InstanceHead(d, config.instance_head, enc.stride)
        if config.instance_decoder:
            self.instance_decoder = UNETRDecoder(d, config.instance_decoder_features,
                                                 config.instance_decoder)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), False)
        # automask thresholds calibrated for these weights (napari-sam checkpoints may carry
        # them, see `napari_sam.automask.default_thresholds`); empty = SAM's
        self.automask_defaults: dict = {}

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # the one attribute the model keeps beside its weights is the memo of `signature`
    # (`signature.WeightsSignature`). The speed state (low-precision weights, tables, scratch
    # buffers, per-image caches) lives in an `InferenceSession` (napari_sam.runtime.session),
    # held by the predictors.

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def preprocess(self, x: torch.Tensor, size: Optional[int] = None) -> torch.Tensor:
        """Normalise pixels and pad them to the model's square input.

        Parameters
        ----------
        x : Tensor (B, 3, h, w) float
            Pixels in 0-255, longest side at most the square's side.
        size : int, optional
            The square's side (None: `image_size`; another side only for a model with
            `flexible_input`).

        Returns
        -------
        Tensor (B, 3, size, size)
            Normalised by the model's pixel mean and std, zero-padded at the bottom and
            right.
        """
        x = (x - self.pixel_mean) / self.pixel_std
        s = self.input_side(size)
        return F.pad(x, (0, s - x.shape[-1], 0, s - x.shape[-2]))

    def input_side(self, size: Optional[int]) -> int:
        """The side of the square input for a requested size.

        Parameters
        ----------
        size : int, optional
            The side asked for (None: `image_size`).

        Returns
        -------
        int
            The side; ValueError for one the model cannot take (other than `image_size`
            without `flexible_input`, or not a multiple of 64 at least `image_size`).
        """
        s = self.config.image_size
        if size is None or size == s:
            return s
        if not self.flexible_input:
            raise ValueError(f"the model {self.config.name!r} takes {s} x {s} inputs only "
                             f"(asked for {size}); its encoder's positions are fixed")
        if size % 64 or size < s:
            raise ValueError(f"input side {size}: must be a multiple of 64, at least {s}")
        return int(size)

    @property
    def flexible_input(self) -> bool:
        """Whether encoder and instance head run on squares larger than `image_size` (a
        multiple of 64): true for the bundled model (TinyViT's windowed attention and a
        convolutional head have no fixed positions). Prompts still need `image_size`."""
        return isinstance(self.image_encoder, TinyViT) and hasattr(self, "instance_head")

    def encode(self, x: torch.Tensor, encoder=None, size: Optional[int] = None) -> torch.Tensor:
        """Run the image encoder: the expensive step, once per image.

        Parameters
        ----------
        x : Tensor (B, 3, h, w) float
            Pixels in 0-255 (see `preprocess`).
        encoder : module, optional
            A replacement for `image_encoder` (e.g. a compiled one).
        size : int, optional
            The padded input's side (None: `image_size`).

        Returns
        -------
        Tensor (B, C, g, g)
            Image embeddings, g = size / the encoder's stride.
        """
        return (encoder or self.image_encoder)(self.preprocess(x, size))

    def input_hw(self, h: int, w: int, zoom: Optional[float] = None) -> Tuple[int, int]:
        """The size an image takes inside the model's square input.

        Parameters
        ----------
        h, w : int
            The image's rows and columns.
        zoom : float, optional
            Resize factor (`transforms.zoomed_shape`); None: the longest side becomes
            `image_size`.

        Returns
        -------
        (int, int)
            (rows, cols) of the resized image in the model's input frame.
        """
        from ..transforms import target_shape, zoomed_shape

        s = self.config.image_size
        return target_shape(h, w, s) if zoom is None else zoomed_shape(h, w, zoom, s)

    def to_input(self, pixels, device=None, zoom: Optional[float] = None) -> torch.Tensor:
        """Resize an image for the model, as `input_hw` says.

        Parameters
        ----------
        pixels : ndarray (Y, X, 3) float
            Pixels in 0-255.
        device : torch.device or str, optional
            Where the tensor goes.
        zoom : float, optional
            Resize factor (None: longest side `image_size`).

        Returns
        -------
        Tensor (1, 3, h, w) float
            (h, w) = `input_hw(Y, X, zoom)`, not yet normalised or padded.
        """
        from ..transforms import resize_for_model

        return resize_for_model(pixels, self.config.image_size, device, zoom)

    @property
    def embedding_shape(self) -> Tuple[int, int, int]:
        """(C, g, g) of one image's embedding."""
        g = self.config.embed_grid
        return (self.config.prompt_embed_dim, g, g)

    @property
    def has_instance_head(self) -> bool:
        """Whether the model predicts instance maps: the bundled model's own head or
        micro-sam's UNETR decoder (see `instance_decoder_kind`)."""
        return hasattr(self, "instance_head") or hasattr(self, "instance_decoder")

    @property
    def instance_decoder_kind(self) -> str:
        """Which instance decoder the model carries: "head" (the bundled model's),
        "unetr" / "unetr_transpose" (micro-sam's, bilinear or transposed-conv upsampling), or
        "" (none)."""
        if hasattr(self, "instance_decoder"):
            return self.config.instance_decoder
        return "head" if hasattr(self, "instance_head") else ""

    def instance_logits(self, embeddings: torch.Tensor, x: torch.Tensor,
                        size: Optional[int] = None) -> torch.Tensor:
        """The instance decoder's maps, before the sigmoid.

        Parameters
        ----------
        embeddings : Tensor (B, C, g, g)
            From `encode`.
        x : Tensor (B, 3, h, w) float
            The 0-255 pixels `encode` was given (micro-sam's decoder reads only the
            embeddings).
        size : int, optional
            The side `encode` was called with (S; None: `image_size`).

        Returns
        -------
        Tensor (B, 3, S, S)
            Foreground, centre-distance and boundary-distance logits in the padded
            model-input frame; ValueError for a model without an instance decoder.
        """
        self.input_side(size)
        if hasattr(self, "instance_decoder"):
            y = self.instance_decoder(embeddings)
            s = self.config.image_size
            if tuple(y.shape[-2:]) != (s, s):  # never for SAM / MobileSAM (16 g == S)
                y = F.interpolate(y, (s, s), mode="bilinear", align_corners=False)
            return y
        if not self.has_instance_head:
            raise ValueError(f"the model {self.config.name!r} has no instance head")
        return self.instance_head(embeddings, self.preprocess(x, size))

    def decode(
        self,
        embeddings: torch.Tensor,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask: bool = True,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Decode prompts into low-resolution masks; cheap, batched over prompts.

        Parameters
        ----------
        embeddings : Tensor (1 or B, C, g, g)
            Image embeddings (one image shared by all prompts, or one per prompt).
        points : (Tensor (B, N, 2), Tensor (B, N)), optional
            Point coordinates as (x, y) in the model-input frame, and their labels
            (1 foreground, 0 background, -1 padding).
        boxes : Tensor (B, 4), optional
            Boxes as (x0, y0, x1, y1) in the model-input frame.
        mask_input : Tensor (B, 1, 4g, 4g), optional
            Mask logits from an earlier call.
        multimask : bool
            Three masks per prompt (K = 3) instead of one (K = 1).

        Returns
        -------
        logits : Tensor (B, K, 4g, 4g)
            Low-resolution mask logits.
        iou : Tensor (B, K)
            The predicted IoU of each mask.
        """
        sparse, dense = self.prompt_encoder(points, boxes, mask_input)
        shared = mask_input is None and embeddings.shape[0] == 1
        # inside a session: the key under which it keeps this image's first-block work
        key = image_key(embeddings, self) if shared else None
        return self.mask_decoder(embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense,
                                 multimask, shared_dense=shared, cache_key=key)

    def upscale_logits(self, logits: torch.Tensor, input_hw: Tuple[int, int],
                       original_hw: Tuple[int, int]) -> torch.Tensor:
        """Bring low-resolution mask logits to the original image's size.

        Parameters
        ----------
        logits : Tensor (..., 4g, 4g) or (..., S, S)
            Mask logits from `decode`.
        input_hw : (int, int)
            (rows, cols) of the image inside the padded input (`input_hw`).
        original_hw : (int, int)
            (rows, cols) of the original image.

        Returns
        -------
        Tensor (..., rows, cols)
            Logits at the original size: resized to the input square, the padding cut off,
            resized again (bilinear).
        """
        s = self.config.image_size
        x = logits
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False)
        x = x[..., : input_hw[0], : input_hw[1]]
        if tuple(x.shape[-2:]) == tuple(original_hw):
            return x  # resizing to the same size is the identity
        return F.interpolate(x, tuple(original_hw), mode="bilinear", align_corners=False)

    def mask_upscaler(self, input_hw: Tuple[int, int], original_hw: Tuple[int, int]):
        """A `MaskUpscaler` for these sizes, kept by the active session: full-resolution
        masks computed inside each mask's box only, as `upscale_logits(...) > threshold`
        would give them.

        Parameters
        ----------
        input_hw : (int, int)
            (rows, cols) of the image inside the padded input.
        original_hw : (int, int)
            (rows, cols) of the original image.

        Returns
        -------
        MaskUpscaler
        """
        from .upscale import MaskUpscaler

        key = ("upscaler", tuple(input_hw), tuple(original_hw), str(self.device))
        return constant(key, lambda: MaskUpscaler(self.config.image_size, self.config.mask_size,
                                                  input_hw, original_hw, self.device))
