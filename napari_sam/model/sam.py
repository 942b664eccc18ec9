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
        """(B, 3, h, w) pixels in 0-255, longest side <= `size` -> normalised, zero-padded
        (B, 3, size, size). size: the square's side, default `image_size`; another side only
        for a model with `flexible_input`."""
        x = (x - self.pixel_mean) / self.pixel_std
        s = self.input_side(size)
        return F.pad(x, (0, s - x.shape[-1], 0, s - x.shape[-2]))

    def input_side(self, size: Optional[int]) -> int:
        """The side of the square input for a requested `size` (None: `image_size`); raises
        ValueError for a side this model cannot take."""
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
        """(B, 3, h, w) 0-255 pixels -> (B, C, g, g) image embeddings (g = size / stride).
        `encoder`: a replacement for `image_encoder` (e.g. a compiled one); size: the padded
        input's side (`preprocess`)."""
        return (encoder or self.image_encoder)(self.preprocess(x, size))

    def input_hw(self, h: int, w: int, zoom: Optional[float] = None) -> Tuple[int, int]:
        """Size of an (h, w) image inside the model's square: longest side `image_size`, or
        resized by `zoom` (`transforms.zoomed_shape`)."""
        from ..transforms import target_shape, zoomed_shape

        s = self.config.image_size
        return target_shape(h, w, s) if zoom is None else zoomed_shape(h, w, zoom, s)

    def to_input(self, pixels, device=None, zoom: Optional[float] = None) -> torch.Tensor:
        """(Y, X, 3) float pixels in 0-255 -> (1, 3, h, w) of `input_hw`."""
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
        """Instance logits (B, 3, S, S) in the padded model-input frame (foreground, centre
        and boundary distances, before the sigmoid; see `instance_head`) from embeddings
        (B, C, g, g) and the (B, 3, h, w) 0-255 pixels that `encode` was given (micro-sam's
        decoder reads only the embeddings); size: the `encode` call's (S; default
        `image_size`)."""
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
        """Low-resolution mask logits (B, K, 4g, 4g) and predicted IoU (B, K).

        embeddings: (1 or B, C, g, g); points: (BxNx2 xy, BxN labels); boxes: Bx4 xyxy;
        mask_input: Bx1x4gx4g logits from an earlier call.
        """
        sparse, dense = self.prompt_encoder(points, boxes, mask_input)
        shared = mask_input is None and embeddings.shape[0] == 1
        # inside a session: the key under which it keeps this image's first-block work
        key = image_key(embeddings, self) if shared else None
        return self.mask_decoder(embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense,
                                 multimask, shared_dense=shared, cache_key=key)

    def upscale_logits(self, logits: torch.Tensor, input_hw: Tuple[int, int],
                       original_hw: Tuple[int, int]) -> torch.Tensor:
        """Low-res logits -> logits at the original image size (unpadding on the way)."""
        s = self.config.image_size
        x = logits
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False)
        x = x[..., : input_hw[0], : input_hw[1]]
        if tuple(x.shape[-2:]) == tuple(original_hw):
            return x  # resizing to the same size is the identity
        return F.interpolate(x, tuple(original_hw), mode="bilinear", align_corners=False)

    def mask_upscaler(self, input_hw: Tuple[int, int], original_hw: Tuple[int, int]):
        """`MaskUpscaler` for these sizes (kept by the active session): full-resolution
        masks computed inside each mask's box only, as `upscale_logits(...) > threshold`
        would give them."""
        from .upscale import MaskUpscaler

        key = ("upscaler", tuple(input_hw), tuple(original_hw), str(self.device))
        return constant(key, lambda: MaskUpscaler(self.config.image_size, self.config.mask_size,
                                                  input_hw, original_hw, self.device))
