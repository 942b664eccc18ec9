"""The mask decoder's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
import torch.nn.functional as F

from .common import MLPBlock, linear


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
        q = self._heads(linear(q, self.q_proj))
        k = self._heads(linear(k, self.k_proj))
        v = self._heads(linear(v, self.v_proj))
        return self._combine(q, k, v)

    def _combine(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if k.shape[2] <= 32 < q.shape[2]:
            # image tokens attending to a few prompt tokens: plain matmuls beat the fused
            # kernel's blocking by far for a handful of keys
            # scores as (keys, queries): softmax over a short axis of size n_k is slow when
            # that axis is the last one (no vectorisation), fast as the second-last
            attn = torch.softmax((k * q.shape[-1] ** -0.5) @ q.transpose(-2, -1), dim=-2)
            out = attn.to(v.dtype).transpose(-2, -1) @ v
        elif q.shape[2] <= 32 < k.shape[2]:
            # a few prompt tokens attending to the image: matmuls and one softmax over the
            # long axis, cheaper than the fused kernel's blocking for so few queries
            attn = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)
            out = attn.to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, c = out.shape
        return linear(out.transpose(1, 2).reshape(b, n, h * c), self.out_proj)


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

    def image_side(self, keys: torch.Tensor, key_pe: torch.Tensor) -> tuple:
        """The projections of this block that read only the image tokens: keys and values of
        token->image, queries of image->token (heads split), at the batch size of `keys`.

        keys + key_pe feeds two of them: it is computed once and cast once (under autocast
        every projection would cast its (hw, C) input again)."""
        k, kv = keys + key_pe, keys
        dt = _autocast_dtype(keys)
        if dt is not None:
            k, kv = k.to(dt), keys.to(dt)
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return (t2i._heads(linear(k, t2i.k_proj)), t2i._heads(linear(kv, t2i.v_proj)),
                i2t._heads(linear(k, i2t.q_proj)))

    def forward(self, queries, keys, query_pe, key_pe,
                image_side: tuple | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """queries (B, N, C); keys (1 or B, hw, C): one image's tokens are shared by all B
        prompts until this block mixes the prompts in, so its image-side projections run
        once (or come precomputed in `image_side`)."""
        if self.skip_first_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        b = queries.shape[0]
        k_t2i, v_t2i, q_i2t = image_side if image_side is not None else self.image_side(
            keys, key_pe)
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        q = t2i._heads(linear(queries + query_pe, t2i.q_proj))
        queries = self.norm2(queries + t2i._combine(q, _batch(k_t2i, b), _batch(v_t2i, b)))
        queries = self.norm3(queries + self.mlp(queries))
        q = queries + query_pe
        attn = i2t._combine(_batch(q_i2t, b), i2t._heads(linear(q, i2t.k_proj)),
                            i2t._heads(linear(queries, i2t.v_proj)))
        keys = self.norm4(keys + attn)  # broadcasts a shared (1, hw, C) to (B, hw, C)
        return queries, keys


def _batch(x: torch.Tensor, b: int) -> torch.Tensor:
    return x if x.shape[0] == b else x.expand(b, *x.shape[1:])


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, heads, mlp_dim, skip_first_pe=(i == 0)) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, heads, downsample=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor,
                cache_key: tuple | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """image: (1 or B, C, h, w) -- batch 1 when all prompts share one image and dense
        embedding; image_pe: (1, C, h, w); tokens: (B, N, C) -> (tokens, image tokens
        (B, hw, C)).

        cache_key: identifies the image (see `MaskDecoder`): the first block's image-side
        projections are then kept and reused by later calls with the same key (inference
        only), e.g. every click on one embedded image."""
        key_pe = image_pe.flatten(2).transpose(1, 2)
        if key_pe.stride(-1) != 1:
            key_pe = key_pe.contiguous()
        first = None
        hit = self.__dict__.get("_first_block")
        if cache_key is not None and hit is not None and hit[0] == cache_key:
            keys, first = hit[1], hit[2]
        else:
            # token-major (B, hw, C): in the (B, C, h, w) layout's transposed view every add
            # and projection of the first layer reads memory with a stride of hw
            keys = image.flatten(2).transpose(1, 2).contiguous()
            if cache_key is not None:
                first = self.layers[0].image_side(keys, key_pe)
                self.__dict__["_first_block"] = (cache_key, keys, first)
        queries = tokens
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, tokens, key_pe, first if i == 0 else None)
        if keys.shape[0] != queries.shape[0]:  # no blocks
            keys = keys.expand(queries.shape[0], -1, -1)
        k, kv = keys + key_pe, keys
        dt = _autocast_dtype(keys)
        if dt is not None:
            k, kv = k.to(dt), keys.to(dt)
        attn = self.final_attn_token_to_image(queries + tokens, k, kv)
        return self.norm_final_attn(queries + attn), keys
