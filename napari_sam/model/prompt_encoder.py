"""Prompt encoder: points, boxes and a dense mask become sparse and dense embeddings.

Coordinates here are SAM's (x, y) in the model's input frame (pixels of the resized,
padded image of side `image_size`). Keys follow Meta's checkpoints.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from ..runtime.kernels import derived
from .common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of (x, y) positions normalised to [0, 1].

    Parameters
    ----------
    num_feats : int
        Random frequencies; each position gets 2 * num_feats features (sin, cos).
    """

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """Fourier features of normalised positions.

        Parameters
        ----------
        coords : Tensor, (..., 2) float
            (x, y) in [0, 1] (x first, as in SAM).

        Returns
        -------
        Tensor, (..., 2 * num_feats)
            sin features then cos features, the Fourier matrix's dtype.
        """
        g = self.positional_encoding_gaussian_matrix
        proj = (2 * math.pi) * ((2 * coords - 1).to(g.dtype) @ g)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """(C, h, w) encoding of the cell centres of an h x w grid.

        Parameters
        ----------
        h, w : int
            Grid rows and columns.

        Returns
        -------
        Tensor, (2 * num_feats, h, w)
            The Fourier matrix's dtype (float32 for checkpoints).
        """
        dev = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return self.encode(torch.stack([xx, yy], dim=-1)).permute(2, 0, 1)

    def points(self, xy: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """Encode (..., 2) pixel coordinates (x, y) of an image of `size` (h, w).

        Parameters
        ----------
        xy : Tensor, (..., 2)
            Pixel coordinates, (x, y) order (SAM's), not (row, col).
        size : (int, int)
            (h, w) of the image the coordinates refer to.

        Returns
        -------
        Tensor, (..., 2 * num_feats)
        """
        scale = torch.tensor([1.0 / size[1], 1.0 / size[0]], device=xy.device)
        return self.encode(xy.float() * scale)


class PromptEncoder(nn.Module):
    """SAM's prompt encoder (Meta's keys).

    Parameters
    ----------
    embed_dim : int
        C, the channels of the prompt tokens and of the dense embedding.
    grid : int
        g, the side of the image embedding grid.
    image_size : int
        Side of the model's square input frame, in pixels.
    mask_in_chans : int
        Hidden channels of the mask-prompt downscaling.
    """

    def __init__(self, embed_dim: int, grid: int, image_size: int, mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.grid = grid
        self.input_image_size = (image_size, image_size)
        self.mask_input_size = (4 * grid, 4 * grid)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        c = mask_in_chans
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, c // 4, 2, stride=2), LayerNorm2d(c // 4), nn.GELU(),
            nn.Conv2d(c // 4, c, 2, stride=2), LayerNorm2d(c), nn.GELU(),
            nn.Conv2d(c, embed_dim, 1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """(1, C, g, g) positional encoding of the image embedding grid (a channels-last view,
        kept by the session while the Fourier matrix is unchanged).

        Returns
        -------
        Tensor, (1, C, g, g)
            The Fourier matrix's dtype, whatever autocast is active.
        """
        g = self.pe_layer.positional_encoding_gaussian_matrix
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and g.requires_grad):
            return self.pe_layer.grid(self.grid, self.grid)[None]

        def make():
            # a constant: always in the buffer's precision, never in an autocast dtype that
            # happens to be active on the first call
            with torch.autocast(g.device.type, enabled=False):
                return self.pe_layer.grid(self.grid, self.grid)[None]

        return derived(self, "dense_pe", make, g)

    def _points(self, xy: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        if pad:  # without a box the decoder expects one "not a point" token
            xy = torch.cat([xy, xy.new_zeros(xy.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        emb = self.pe_layer.points(xy + 0.5, self.input_image_size)
        lab = labels[..., None]
        emb = torch.where(lab == -1, self.not_a_point_embed.weight.to(emb.dtype), emb)
        emb = emb + (lab == 0) * self.point_embeddings[0].weight
        emb = emb + (lab == 1) * self.point_embeddings[1].weight
        # box corners given as points (labels 2, 3), as SAM 2 gives boxes
        emb = emb + (lab == 2) * self.point_embeddings[2].weight
        emb = emb + (lab == 3) * self.point_embeddings[3].weight
        return emb

    def _boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = self.pe_layer.points(boxes.reshape(-1, 2, 2) + 0.5, self.input_image_size)
        tl = corners[:, 0] + self.point_embeddings[2].weight
        br = corners[:, 1] + self.point_embeddings[3].weight
        return torch.stack([tl, br], dim=1)

    def forward(
        self,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        boxes: Optional[torch.Tensor] = None,
        masks: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """points: (BxNx2 xy, BxN labels 1/0/-1, or 2/3 for a box's corners); boxes: Bx4 xyxy; masks: Bx1xMxM logits.

        Parameters
        ----------
        points : (Tensor, Tensor), optional
            Coordinates (B, N, 2) float, (x, y) in the input frame's pixels, and labels
            (B, N) int: 1 positive, 0 negative, -1 padding, 2/3 a box's top-left/bottom-right.
        boxes : Tensor, (B, 4) float, optional
            (x0, y0, x1, y1) in the input frame's pixels.
        masks : Tensor, (B, 1, 4g, 4g) float, optional
            Mask-prompt logits; None uses the learnt no-mask embedding.

        Returns
        -------
        sparse : Tensor, (B, N', C)
            N' = N (+1 padding token without boxes) + 2 with boxes; (B, 0, C) without either.
        dense : Tensor, (B, C, g, g)
        """
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        dev = self.no_mask_embed.weight.device
        parts = []
        if points is not None:
            parts.append(self._points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            parts.append(self._boxes(boxes))
        sparse = torch.cat(parts, dim=1) if parts else torch.empty(bs, 0, self.embed_dim, device=dev)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                bs, -1, self.grid, self.grid)
        return sparse, dense
