"""The mask decoder's two-way transformer: prompt tokens and image tokens attend to each other.

The modules compute in SAM's plain form; inside an `InferenceSession` they run the fast
form of `napari_sam.runtime.two_way` instead (same results, see there).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ..runtime import two_way
from ..runtime.session import current
from .common import MLP, MLPBlock


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections, optionally to a smaller width.

    Parameters
    ----------
    dim, num_heads : int
        Channels of the inputs and output, attention heads.
    downsample : int
        The projections' width is dim // downsample.
    """

    def __init__(self, dim: int, num_heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, C') -> (B, heads, n, C' / heads)."""
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Queries (B, nq, C) attend over keys and values (B, nk, C): (B, nq, C).

        Parameters
        ----------
        q : Tensor, (B, nq, C) float
        k, v : Tensor, (B, nk, C)

        Returns
        -------
        Tensor, (B, nq, C)
        """
        if current() is not None:
            return two_way.attention(self, q, k, v)
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
        out = torch.softmax(scores, dim=-1) @ v  # (B, heads, nq, C' / heads)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image, MLP, image->token; post-norm after each step.

    Parameters
    ----------
    dim, heads, mlp_dim : int
        Channels, attention heads, MLP hidden features.
    skip_first_pe : bool
        First block: self-attention without the token encoding and without a residual.
    mlp_layers_keys : bool
        Name the MLP's layers `mlp.layers.0/1` (SAM 2) instead of `mlp.lin1/lin2`.
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, skip_first_pe: bool,
                 mlp_layers_keys: bool = False) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, heads, downsample=2)
        self.norm2 = nn.LayerNorm(dim)
        # the same ReLU MLP; SAM 2's checkpoints name its layers mlp.layers.0/1
        self.mlp = MLP(dim, mlp_dim, dim, 2) if mlp_layers_keys else MLPBlock(dim, mlp_dim, act=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, heads, downsample=2)
        self.skip_first_pe = skip_first_pe

    def forward(self, queries, keys, query_pe, key_pe) -> Tuple[torch.Tensor, torch.Tensor]:
        """queries (B, N, C) and their encoding query_pe; keys (B, hw, C) and key_pe.

        Parameters
        ----------
        queries, query_pe : Tensor, (B, N, C)
            Prompt tokens and their encoding (the input tokens).
        keys : Tensor, (B, hw, C)
            Image tokens in raster (row, col) order ((1, hw, C) shared in a session).
        key_pe : Tensor, (1, hw, C)

        Returns
        -------
        queries : Tensor, (B, N, C)
        keys : Tensor, (B, hw, C)
        """
        if current() is not None:
            return two_way.block_forward(self, queries, keys, query_pe, key_pe)
        if self.skip_first_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """`depth` TwoWayBlocks and a final token->image attention.

    Parameters
    ----------
    depth, dim, heads, mlp_dim : int
        Blocks, channels, attention heads, MLP hidden features.
    mlp_layers_keys : bool
        SAM 2's key names for the MLPs (see `TwoWayBlock`).
    """

    def __init__(self, depth: int, dim: int, heads: int, mlp_dim: int,
                 mlp_layers_keys: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, heads, mlp_dim, skip_first_pe=(i == 0),
                        mlp_layers_keys=mlp_layers_keys) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, heads, downsample=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor | None, image_pe: torch.Tensor, tokens: torch.Tensor,
                cache_key=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """image: (1 or B, C, h, w) (batch 1: one image shared by all prompts); image_pe:
        (1, C, h, w); tokens: (B, N, C) -> (tokens, image tokens (B, hw, C)).

        cache_key: inside a session, identifies the image (`two_way.image_key`) so that the
        first block's image-side work is kept and reused (then `image` may be None when
        `two_way.first_block_kept(cache_key)`); ignored by the plain form.

        Parameters
        ----------
        image : Tensor, (1 or B, C, h, w) float, or None
        image_pe : Tensor, (1, C, h, w)
        tokens : Tensor, (B, N, C)
            Output and prompt tokens.
        cache_key : hashable, optional

        Returns
        -------
        tokens : Tensor, (B, N, C)
        keys : Tensor, (B, hw, C)
            Image tokens in raster (row, col) order (bfloat16 in a bf16 session).
        """
        if current() is not None:
            return two_way.transformer_forward(self, image, image_pe, tokens, cache_key)
        b = tokens.shape[0]
        keys = image.flatten(2).transpose(1, 2).expand(b, -1, -1)  # (B, hw, C)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        q, k = queries + tokens, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
