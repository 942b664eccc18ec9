"""Mask decoder: turns an image embedding and prompt embeddings into mask logits and IoU scores."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


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
        masks, iou = self.predict_masks(image_embeddings, image_pe, sparse, dense,
                                        shared_dense, cache_key)
        if multimask:
            return masks[:, 1:], iou[:, 1:]
        return masks[:, :1], iou[:, :1]

    def predict_masks(self, image_embeddings, image_pe, sparse, dense, shared_dense=False,
                      cache_key=None):
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens[None].expand(b, -1, -1).to(sparse.dtype), sparse], dim=1)
        if image_embeddings.shape[0] not in (1, b):
            raise ValueError(f"{image_embeddings.shape[0]} image embeddings for {b} prompts")
        if shared_dense and image_embeddings.shape[0] == 1:
            src = image_embeddings + dense[:1]  # one image for all prompts
        else:
            src = image_embeddings + dense  # broadcasts one image over many prompts
            if src.shape[0] != b:
                src = src.expand(b, -1, -1, -1)
            cache_key = None
        _, c, h, w = src.shape
        hs, keys = self.transformer(src, image_pe[:1], tokens, cache_key)
        iou_out = hs[:, 0]
        mask_out = hs[:, 1:1 + self.num_mask_tokens]
        # channels-last view of the (B, hw, C) tokens: no transposing copy; the transposed
        # convolutions keep that layout, so the upscaled features are read as (B, HW, C')
        up = self.output_upscaling(keys.view(b, h, w, c).permute(0, 3, 1, 2))
        hyper = torch.stack(
            [mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        _, cu, hu, wu = up.shape
        if up.is_contiguous(memory_format=torch.channels_last):
            masks = (up.permute(0, 2, 3, 1).reshape(b, hu * wu, cu) @ hyper.transpose(1, 2))
            masks = masks.transpose(1, 2).reshape(b, -1, hu, wu)
        else:
            masks = (hyper @ up.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
        return masks, self.iou_prediction_head(iou_out)
