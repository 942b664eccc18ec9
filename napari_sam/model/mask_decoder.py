"""Mask decoder: turns an image embedding and prompt embeddings into mask logits and IoU scores."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
import torch.nn.functional as F

from ..runtime.kernels import derived, linear
from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class _Linear:
    """Weight and bias of a linear layer derived from other parameters (for `linear`)."""

    def __init__(self, weight: torch.Tensor, bias) -> None:
        self.weight, self.bias = weight, bias


class MaskDecoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int,
                 num_multimask_outputs: int = 3, iou_head_hidden_dim: int = 256,
                 iou_head_depth: int = 3) -> None:
        super().__init__()
        self.num_mask_tokens = num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(depth, dim, heads, mlp_dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, stride=2), LayerNorm2d(dim // 4), nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, stride=2), nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse: torch.Tensor, dense: torch.Tensor, multimask: bool,
                shared_dense: bool = False, cache_key=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings: (1 or B, C, g, g); sparse (B, N, C); dense (B, C, g, g).

        shared_dense: every row of `dense` is the same (no mask prompt): with one image the
        prompts then share the image tokens until the first block mixes them in, and that
        work runs once, not B times. cache_key: identifies the image and weights (see
        `Sam.decode`) so the first block's image-side projections are reused across calls.

        Returns mask logits (B, K, 4g, 4g) and IoU predictions (B, K); K = 3 with
        `multimask`, else 1.
        """
        which = slice(1, None) if multimask else slice(0, 1)
        masks, iou = self.predict_masks(image_embeddings, image_pe, sparse, dense,
                                        shared_dense, cache_key, which)
        return masks, iou[:, which]

    def predict_masks(self, image_embeddings, image_pe, sparse, dense, shared_dense=False,
                      cache_key=None, which: slice = slice(None)):
        """Mask logits of the mask tokens `which` (all by default) and IoU predictions of
        all tokens; the other masks are never computed."""
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens[None].expand(b, -1, -1).to(sparse.dtype), sparse], dim=1)
        if image_embeddings.shape[0] not in (1, b):
            raise ValueError(f"{image_embeddings.shape[0]} image embeddings for {b} prompts")
        _, c, h, w = image_embeddings.shape
        if shared_dense and image_embeddings.shape[0] == 1:
            # one image for all prompts; nothing to add when the transformer has its tokens
            src = None if self.transformer.cached(cache_key) else image_embeddings + dense[:1]
        else:
            src = image_embeddings + dense  # broadcasts one image over many prompts
            if src.shape[0] != b:
                src = src.expand(b, -1, -1, -1)
            cache_key = None
        hs, keys = self.transformer(src, image_pe[:1], tokens, cache_key)
        iou_out = hs[:, 0]
        mask_out = hs[:, 1:1 + self.num_mask_tokens]
        mlps = self.output_hypernetworks_mlps
        hyper = torch.stack([mlps[i](mask_out[:, i])
                             for i in range(self.num_mask_tokens)[which]], dim=1)
        if self._plain_upscaling():
            masks = self._upscale(keys, h, w, hyper)
        else:
            up = self.output_upscaling(keys.transpose(1, 2).reshape(b, c, h, w))
            _, cu, hu, wu = up.shape
            masks = (hyper @ up.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
        return masks, self.iou_prediction_head(iou_out)

    def _plain_upscaling(self) -> bool:
        """True for SAM's upscaling: two 2x2 stride-2 transposed convolutions, LayerNorm2d
        and GELU between them, GELU after."""
        seq = self.output_upscaling
        return (len(seq) == 5 and isinstance(seq[1], LayerNorm2d)
                and all(isinstance(seq[i], nn.ConvTranspose2d) and seq[i].kernel_size == (2, 2)
                        and seq[i].stride == (2, 2) and seq[i].padding == (0, 0)
                        and seq[i].groups == 1 for i in (0, 3))
                and all(isinstance(seq[i], nn.GELU) and seq[i].approximate == "none"
                        for i in (2, 4)))

    def _upscale(self, keys: torch.Tensor, h: int, w: int, hyper: torch.Tensor) -> torch.Tensor:
        """`output_upscaling` followed by the hypernetwork product, on the token-major
        (B, hw, C) keys without leaving that layout.

        A 2x2 stride-2 transposed convolution maps each input pixel to its own 2x2 block:
        it is a linear layer C -> 4 C' per pixel. So both convolutions run as linear layers
        (GELU fused into the second) on pixels kept in (B, h, w, 2, 2, 2, 2, C') order, the
        norm is a LayerNorm over the last axis, the hypernetwork product reduces C'' to the
        K mask channels per pixel, and only those K channels are shuffled to (B, K, 4h, 4w).
        """
        b = keys.shape[0]
        seq = self.output_upscaling
        lin1, lin2 = self._conv_as_linear(0), self._conv_as_linear(3)
        c1, c2 = seq[0].out_channels, seq[3].out_channels
        x = linear(keys, lin1).view(b, h, w, 2, 2, c1)
        x = F.gelu(F.layer_norm(x, (c1,), seq[1].weight, seq[1].bias, seq[1].eps))
        x = linear(x, lin2, "gelu")  # (b, h, w, 2, 2, 4 * c2)
        k = hyper.shape[1]
        m = x.reshape(b, -1, c2) @ hyper.transpose(1, 2).to(x.dtype)  # (b, h*w*16, K)
        # pixels (h, w, a, b', c, d) -> rows 4h + 2a + c, columns 4w + 2b' + d: first into
        # raster order with K innermost, then K to the front (a plain transpose); 2.5 x
        # faster than one 8-dimensional permute
        m = m.view(b, h, w, 2, 2, 2, 2, k).permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, k)
        return m.transpose(1, 2).reshape(b, k, 4 * h, 4 * w)

    def _conv_as_linear(self, i: int):
        """Transposed conv `output_upscaling[i]` as a linear layer C -> (2, 2, C')."""
        conv = self.output_upscaling[i]
        wt, bs = conv.weight, conv.bias  # (C, C', 2, 2), (C',)

        def make():
            weight = wt.permute(2, 3, 1, 0).reshape(-1, wt.shape[0])  # (4 C', C)
            bias = None if bs is None else bs.repeat(4)
            return _Linear(weight, bias)

        return derived(conv, "as_linear", make, wt, bs)
