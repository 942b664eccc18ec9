"""Mask decoder: turns an image embedding and prompt embeddings into mask logits and IoU scores."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ..runtime import two_way
from ..runtime.session import current
from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """SAM's mask decoder (Meta's keys): two-way transformer, upscaling, hypernetwork MLPs.

    Parameters
    ----------
    dim : int
        C, the token and embedding channels.
    depth, heads, mlp_dim : int
        Two-way transformer blocks, attention heads and MLP hidden features.
    num_multimask_outputs : int
        Masks in multimask mode; one more token gives the single mask.
    iou_head_hidden_dim, iou_head_depth : int
        Hidden features and layers of the IoU prediction MLP.
    """

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

        Parameters
        ----------
        image_embeddings : Tensor, (1 or B, C, g, g) float
        image_pe : Tensor, (1, C, g, g)
            Dense positional encoding of the embedding grid.
        sparse : Tensor, (B, N, C)
            Point and box tokens, one row per prompt.
        dense : Tensor, (B, C, g, g)
            Mask-prompt (or no-mask) embedding.
        multimask : bool
            Return the multimask outputs instead of the single mask.
        shared_dense : bool
        cache_key : hashable, optional

        Returns
        -------
        masks : Tensor, (B, K, 4g, 4g)
            Low-res mask logits; K = 3 with `multimask`, else 1.
        iou : Tensor, (B, K)
            IoU predictions.
        """
        which = slice(1, None) if multimask else slice(0, 1)
        masks, iou = self.predict_masks(image_embeddings, image_pe, sparse, dense,
                                        shared_dense, cache_key, which)
        return masks, iou[:, which]

    def predict_masks(self, image_embeddings, image_pe, sparse, dense, shared_dense=False,
                      cache_key=None, which: slice = slice(None)):
        """Mask logits of the mask tokens `which` (all by default) and IoU predictions of
        all tokens; the other masks are never computed.

        Parameters
        ----------
        image_embeddings, image_pe, sparse, dense, shared_dense, cache_key
            As in `forward`.
        which : slice
            Which of the 1 + num_multimask_outputs mask tokens to decode.

        Returns
        -------
        masks : Tensor, (B, k, 4g, 4g)
            Logits of the k tokens selected by `which`.
        iou : Tensor, (B, 1 + num_multimask_outputs)
            IoU predictions of all tokens.

        Raises
        ------
        ValueError
            If there are neither 1 nor B image embeddings.
        """
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens[None].expand(b, -1, -1).to(sparse.dtype), sparse], dim=1)
        if image_embeddings.shape[0] not in (1, b):
            raise ValueError(f"{image_embeddings.shape[0]} image embeddings for {b} prompts")
        _, c, h, w = image_embeddings.shape
        fast = current() is not None
        if not fast:  # SAM's plain form: every prompt with its image tokens
            hs, keys = self.transformer(image_embeddings + dense, image_pe[:1], tokens)
        elif shared_dense and image_embeddings.shape[0] == 1:
            # one image for all prompts; nothing to add when the session kept its tokens
            src = (None if two_way.first_block_kept(cache_key)
                   else image_embeddings + dense[:1])
            hs, keys = self.transformer(src, image_pe[:1], tokens, cache_key)
        else:
            src = image_embeddings + dense  # broadcasts one image over many prompts
            if src.shape[0] != b:
                src = src.expand(b, -1, -1, -1)
            hs, keys = self.transformer(src, image_pe[:1], tokens)
        iou_out = hs[:, 0]
        mask_out = hs[:, 1:1 + self.num_mask_tokens]
        mlps = self.output_hypernetworks_mlps
        hyper = torch.stack([mlps[i](mask_out[:, i])
                             for i in range(self.num_mask_tokens)[which]], dim=1)
        if fast and two_way.upscaling_is_plain(self.output_upscaling):
            masks = two_way.upscale_masks(self.output_upscaling, keys, h, w, hyper)
        else:
            up = self.output_upscaling(keys.transpose(1, 2).reshape(b, c, h, w))
            _, cu, hu, wu = up.shape
            masks = (hyper @ up.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
        return masks, self.iou_prediction_head(iou_out)
