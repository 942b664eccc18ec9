"""The mask decoder's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
import torch.nn.functional as F

from .common import MLPBlock


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections, optionally to a smaller width."""

    def __init__(self, dim: int, num_heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        return self._combine(q, k, v)

    def _combine(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if k.shape[2] <= 32 < q.shape[2]:
            # image tokens attending to a few prompt tokens: plain matmuls beat the fused
            # kernel's blocking by far for a handful of keys
            # scores as (keys, queries): softmax over a short axis of size n_k is slow when
            # that axis is the last one (no vectorisation), fast as the second-last
            attn = torch.softmax(k @ (q * q.shape[-1] ** -0.5).transpose(-2, -1), dim=-2)
            out = attn.to(v.dtype).transpose(-2, -1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


def _autocast_dtype(x: torch.Tensor):
    """The dtype autocast would cast `x` to for a matmul, or None outside autocast."""
    dev = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        return dt if dt != x.dtype else None
    return None


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image, MLP, image->token; post-norm after each step."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, heads, downsample=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, act=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, heads, downsample=2)
        self.skip_first_pe = skip_first_pe

    def forward(self, queries, keys, query_pe, key_pe) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        # keys + key_pe feeds two projections of two attentions: computed once, cast once
        # (under autocast every projection would cast its (hw, C) input again)
        k = keys + key_pe
        kv = keys
        dt = _autocast_dtype(keys)
        if dt is not None:
            k, kv = k.to(dt), keys.to(dt)
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        q = queries + query_pe
        queries = self.norm2(queries + t2i(q, k, kv))
        queries = self.norm3(queries + self.mlp(queries))
        q = queries + query_pe
        keys = self.norm4(keys + i2t(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, heads, mlp_dim, skip_first_pe=(i == 0)) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, heads, downsample=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor,
                tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe: (B, C, h, w); tokens: (B, N, C) -> (tokens, image tokens (B, hw, C))."""
        # token-major (B, hw, C) copies: in the (B, C, h, w) layout's transposed view every
        # add and projection of the first layer reads memory with a stride of hw
        keys = image.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2)
        if key_pe.stride(-1) != 1:
            key_pe = key_pe.contiguous()
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        k, kv = keys + key_pe, keys
        dt = _autocast_dtype(keys)
        if dt is not None:
            k, kv = k.to(dt), keys.to(dt)
        attn = self.final_attn_token_to_image(queries + tokens, k, kv)
        return self.norm_final_attn(queries + attn), keys
