"""Sam2: the SAM 2.1 network behind the same small interface as `Sam`.

`encode` / `decode` / `upscale_logits` / `mask_upscaler` / `signature` behave as `Sam`'s, so
`Predictor`, automask, tiling, the widgets and the CLI take a SAM 2.1 model unchanged. The
differences from SAM 1 that the interface hides:

- The image is resized to the model's square input (no aspect-preserving pad):
  `input_hw(h, w)` is always (S, S), so prompts scale per axis, and the low-res logits
  cover the whole image (upscaled straight to the image size).
- The embedding is packed: the stride-16 features (+ `no_mem_embed`) and the decoder's
  stride-8 and stride-4 features, folded into the stride-16 grid (`decoder.pack`), one
  (B, C', g, g) tensor that caches, pickles and moves like SAM's.
- Boxes are given to the prompt encoder as two corner points (labels 2, 3) before the
  clicks, as SAM 2's predictor does.

The memory modules (`memory_encoder`, `memory_attention`, object pointers) are used by
`napari_sam.model.sam2.video`. Attribute names follow Meta's checkpoints, so their
`"model"` state dicts load strictly.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from ..common import MLP
from ..prompt_encoder import PromptEncoder
from .config import Sam2Config
from .decoder import Sam2MaskDecoder, high_res_from_packed, pack
from .hiera import ImageEncoder, sine_position_encoding
from .memory import MemoryAttention, MemoryEncoder
from ..signature import WeightsSignature

# low-res logits returned to the user are clamped like SAM 2's predictor does
LOGIT_CLAMP = 32.0


class Sam2(WeightsSignature, nn.Module):
    """The SAM 2.1 network with `Sam`'s interface (see the module docstring).

    Parameters
    ----------
    config : Sam2Config
        The architecture; weights start random (load a state dict or use `load_model`).
    """

    def __init__(self, config: Sam2Config) -> None:
        super().__init__()
        self.config = config
        d, m = config.prompt_embed_dim, config.mem_dim
        self.image_encoder = ImageEncoder(config.trunk, d)
        self.memory_attention = MemoryAttention(d, m, config.memory_ffn_dim,
                                                config.memory_layers)
        self.memory_encoder = MemoryEncoder(d, m)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, m))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, d))
        self.mask_downsample = nn.Conv2d(1, 1, 4, stride=4)
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, d))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, m))
        self.sam_prompt_encoder = PromptEncoder(d, config.embed_grid, config.image_size)
        self.sam_mask_decoder = Sam2MaskDecoder(
            d, config.decoder_depth, config.decoder_heads, config.decoder_mlp_dim,
            config.num_multimask_outputs, config.iou_head_hidden_dim)
        self.obj_ptr_proj = MLP(d, d, d, 3)
        self.obj_ptr_tpos_proj = nn.Linear(d, m)
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc,
                  self.no_obj_ptr, self.no_obj_embed_spatial):
            nn.init.trunc_normal_(p, std=0.02)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), False)
        self.automask_defaults: dict = {}

    # ---- the interface shared with `Sam` ------------------------------------------------
    # beside the memo of `signature`: the mask upscalers per image size (`mask_upscaler`)
    _TRANSIENT = WeightsSignature._TRANSIENT + ("_upscalers",)
    has_instance_head = False
    logit_clamp = LOGIT_CLAMP

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def prompt_encoder(self) -> PromptEncoder:
        return self.sam_prompt_encoder

    @property
    def embedding_shape(self) -> Tuple[int, int, int]:
        g = self.config.embed_grid
        return (self.config.embedding_channels, g, g)

    # the whole image is resized to the square input (no aspect ratio kept, no zoom)
    square_input = True

    def input_hw(self, h: int, w: int, zoom: Optional[float] = None) -> Tuple[int, int]:
        """Size of an (h, w) image inside the model: always the square input (a `zoom` is
        ignored: x and y are scaled separately, as SAM 2 does).

        Parameters
        ----------
        h, w : int
            The image's rows and columns.
        zoom : float, optional
            Ignored.

        Returns
        -------
        (int, int)
            (S, S), S = `image_size`.
        """
        s = self.config.image_size
        return s, s

    def to_input(self, pixels, device=None, zoom: Optional[float] = None) -> torch.Tensor:
        """(Y, X, 3) float pixels in 0-255 -> (1, 3, S, S), resized bilinearly with
        antialiasing (as torchvision's Resize in SAM 2's transforms); `zoom` is ignored.

        Parameters
        ----------
        pixels : ndarray, (Y, X, 3) float
            Pixels in 0-255.
        device : torch.device or str, optional
        zoom : float, optional
            Ignored.

        Returns
        -------
        Tensor, (1, 3, S, S)
            dtype of `pixels`, not yet normalised.
        """
        import numpy as np

        t = torch.from_numpy(np.ascontiguousarray(pixels)).to(device).permute(2, 0, 1)[None]
        s = self.config.image_size
        if tuple(t.shape[-2:]) == (s, s):
            return t
        return F.interpolate(t, (s, s), mode="bilinear", align_corners=False, antialias=True)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) pixels in 0-255 -> normalised.

        Parameters
        ----------
        x : Tensor, (B, 3, S, S) float

        Returns
        -------
        Tensor, (B, 3, S, S)
            (x - pixel_mean) / pixel_std per channel.
        """
        return (x - self.pixel_mean) / self.pixel_std

    def backbone(self, x: torch.Tensor, encoder=None) -> List[torch.Tensor]:
        """(B, 3, S, S) 0-255 pixels -> [stride-4 (after conv_s0), stride-8 (after conv_s1),
        stride-16] features, without `no_mem_embed` (the video path's starting point).

        Parameters
        ----------
        x : Tensor, (B, 3, S, S) float
            Pixels in 0-255.
        encoder : module, optional
            A replacement for `image_encoder` (e.g. a compiled one).

        Returns
        -------
        list of 3 Tensor
            (B, C/8, S/4, S/4), (B, C/4, S/8, S/8), (B, C, S/16, S/16); C = prompt_embed_dim.
        """
        enc = encoder if encoder is not None else self.image_encoder
        f0, f1, f2 = enc(self.preprocess(x))
        dec = self.sam_mask_decoder
        return [dec.conv_s0(f0), dec.conv_s1(f1), f2]

    def encode(self, x: torch.Tensor, encoder=None) -> torch.Tensor:
        """(B, 3, S, S) 0-255 pixels -> packed (B, C', g, g) embeddings (see module doc).
        `encoder`: a replacement for `image_encoder` (e.g. a compiled one).

        Parameters
        ----------
        x : Tensor, (B, 3, S, S) float
            Pixels in 0-255.
        encoder : module, optional

        Returns
        -------
        Tensor, (B, C', g, g)
            C' = `config.embedding_channels`, g = S / 16.
        """
        s0, s1, f2 = self.backbone(x, encoder)
        image = f2 + self.no_mem_embed.view(1, -1, 1, 1)
        return pack(image, s0.to(image.dtype), s1.to(image.dtype))

    def vision_pos(self, g: Optional[int] = None) -> torch.Tensor:
        """(1, C, g, g) sine position encoding of the stride-16 grid.

        Parameters
        ----------
        g : int, optional
            Grid side (None: `config.embed_grid`).

        Returns
        -------
        Tensor, (1, C, g, g) float32
            On the model's device; C = prompt_embed_dim.
        """
        g = g or self.config.embed_grid
        return sine_position_encoding(g, g, self.config.prompt_embed_dim, self.device)

    def prompt_tokens(self, points=None, boxes=None, mask_input=None):
        """SAM 2's prompt encoding: box corners (labels 2, 3) first, then the points, then
        one padding point; returns sparse (B, N, C) and dense (B, C, g, g) embeddings.

        Parameters
        ----------
        points : (Tensor (B, N, 2), Tensor (B, N)), optional
            (x, y) in the model-input frame and labels (1 foreground, 0 background, -1 padding).
        boxes : Tensor, (B, 4), optional
            (x0, y0, x1, y1) in the model-input frame.
        mask_input : Tensor, (B, 1, 4g, 4g), optional
            Mask logits from an earlier call.

        Returns
        -------
        sparse : Tensor, (B, N', C)
            N' = 2 (with boxes) + N + 1 padding token; (B, 0, C) without points and boxes.
        dense : Tensor, (B, C, g, g)
        """
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            labels = torch.tensor([[2, 3]], device=boxes.device).expand(corners.shape[0], 2)
            if points is not None:
                xy, lab = points
                n = max(xy.shape[0], corners.shape[0])
                corners, labels = corners.expand(n, -1, -1), labels.expand(n, -1)
                points = (torch.cat([corners, xy.expand(n, -1, -1)], 1),
                          torch.cat([labels, lab.to(labels.dtype).expand(n, -1)], 1))
            else:
                points = (corners, labels)
        return self.sam_prompt_encoder(points, None, mask_input)

    def decode(self, embeddings: torch.Tensor, points=None, boxes=None, mask_input=None,
               multimask: bool = True, return_tokens: bool = False):
        """Low-resolution mask logits (B, K, 4g, 4g) and predicted IoU (B, K).

        embeddings: packed (1 or B, C', g, g); points: (BxNx2 xy, BxN labels) in the
        model's input frame; boxes: Bx4 xyxy; mask_input: Bx1x4gx4g logits. With
        `return_tokens` also the pointer tokens (B, K or 1, C) and object-score logits (B, 1).

        Parameters
        ----------
        embeddings : Tensor, (1 or B, C', g, g)
            Packed, from `encode`.
        points, boxes, mask_input
            As in `prompt_tokens` (x, y order, model-input frame).
        multimask : bool
            Three masks per prompt (K = 3) instead of one (K = 1).
        return_tokens : bool

        Returns
        -------
        logits : Tensor, (B, K, 4g, 4g)
        iou : Tensor, (B, K)
        tokens : Tensor, (B, K or 1, C)
            Only with `return_tokens`.
        obj : Tensor, (B, 1)
            Only with `return_tokens`.
        """
        image, high_res = high_res_from_packed(embeddings, self.config.prompt_embed_dim)
        sparse, dense = self.prompt_tokens(points, boxes, mask_input)
        shared = mask_input is None and image.shape[0] == 1
        masks, iou, tokens, obj = self.sam_mask_decoder(
            image, self.sam_prompt_encoder.get_dense_pe(), sparse, dense, high_res,
            multimask, shared_dense=shared)
        if return_tokens:
            return masks, iou, tokens, obj
        return masks, iou

    def upscale_logits(self, logits: torch.Tensor, input_hw: Tuple[int, int],
                       original_hw: Tuple[int, int]) -> torch.Tensor:
        """Low-res logits (covering the whole image) -> logits at the original size.

        Parameters
        ----------
        logits : Tensor, (..., 4g, 4g)
        input_hw : (int, int)
            Unused (the logits cover the whole image).
        original_hw : (int, int)
            (rows, cols) of the original image.

        Returns
        -------
        Tensor, (..., rows, cols)
            Bilinear resize (`logits` itself when already that size).
        """
        if tuple(logits.shape[-2:]) == tuple(original_hw):
            return logits
        return F.interpolate(logits, tuple(original_hw), mode="bilinear", align_corners=False)

    def mask_upscaler(self, input_hw: Tuple[int, int], original_hw: Tuple[int, int]):
        """`MaskUpscaler` giving `upscale_logits(...) > threshold` inside each mask's box.

        Parameters
        ----------
        input_hw : (int, int)
            Unused.
        original_hw : (int, int)
            (rows, cols) of the original image.

        Returns
        -------
        MaskUpscaler
            Kept on the model per (original_hw, device).
        """
        from ..upscale import MaskUpscaler

        m = self.config.mask_size
        key = (tuple(original_hw), self.device)
        cache = self.__dict__.setdefault("_upscalers", {})
        up = cache.get(key)
        if up is None:
            if len(cache) > 8:
                cache.clear()
            # low-res m x m is the whole image: a "model input" of side m, no crop
            up = cache[key] = MaskUpscaler(m, m, (m, m), original_hw, self.device)
        return up
