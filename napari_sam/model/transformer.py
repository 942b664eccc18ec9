"""The mask decoder's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
import torch.nn.functional as F

from ..runtime.kernels import caching, linear, stacked_projections
from .common import MLP, MLPBlock


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
        return self._combine(linear(q, self.q_proj), linear(k, self.k_proj),
                             linear(v, self.v_proj))

    def _combine(self, qp: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
        """Attention of projected queries (Bq, nq, C') over projected keys / values
        (Bk, nk, C'), then the output projection (plus `residual`, fused into it where
        possible). Bq and Bk are B or 1 (one image's tokens shared by B prompts; never copied
        B times).

        Between the image (thousands of tokens) and the prompt tokens (a handful) the heads
        are handled as one block-diagonal matrix of the few tokens: each product is then a
        single matmul with the image tokens in their natural (n, C') layout, where splitting
        heads would copy (transpose) every image-side tensor, and softmax runs over rows or
        a second-last axis that vectorise."""
        h = self.num_heads
        b = max(qp.shape[0], kp.shape[0])
        nq, nk, c = qp.shape[1], kp.shape[1], qp.shape[2]
        scale = (c // h) ** -0.5
        if torch.jit.is_tracing():  # ONNX export: plain heads, no in-place block copies
            q, k, v = (self._heads(t.expand(b, -1, -1)) for t in (qp, kp, vp))
            p = torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)
            out = (p @ v).transpose(1, 2).reshape(b, nq, c)
        elif nk <= 32 < nq:  # image tokens attending to the prompt tokens
            kb = _block_diag(kp * scale, h)  # (B, h*nk, C')
            vb = _block_diag(vp, h)
            if qp.shape[0] == 1:  # x @ W.T natively: no transposed copy of the image side
                s = F.linear(kb, qp[0])
            else:
                s = kb @ qp.transpose(-2, -1)
            p = torch.softmax(s.view(b, h, nk, nq), dim=-2).view(b, h * nk, nq)
            out = _like(p, vb).transpose(-2, -1) @ vb  # (B, nq, C'), token-major
        elif nq <= 32 < nk:  # prompt tokens attending to the image
            qb = _block_diag(qp * scale, h)  # (B, h*nq, C')
            if kp.shape[0] == 1:
                p = torch.softmax(F.linear(qb, kp[0]), dim=-1)
                ob = _like(p, vp) @ vp[0]
            else:
                p = torch.softmax(qb @ kp.transpose(-2, -1), dim=-1)
                ob = _like(p, vp) @ vp
            out = _diagonal_blocks(ob, h)  # (B, nq, C')
        else:  # among the prompt tokens: a few rows, fp32 (see `common.linear`)
            q, k, v = (self._heads(t.expand(b, -1, -1).float()) for t in (qp, kp, vp))
            with torch.autocast(q.device.type, enabled=False):
                out = F.scaled_dot_product_attention(q, k, v)
            out = out.transpose(1, 2).reshape(b, nq, c)
        return linear(out, self.out_proj, residual=residual)


def _like(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`p` ready to multiply `v`: as it is under autocast (the matmul casts both), else in
    `v`'s dtype."""
    if p.dtype == v.dtype or torch.is_autocast_enabled(p.device.type):
        return p
    return p.to(v.dtype)


def _block_diag(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, n, h*d) -> (B, h*n, h*d): row block i holds head i's slice of x, zeros elsewhere."""
    b, n, c = x.shape
    out = x.new_zeros(b, h, n, h, c // h)
    out.diagonal(0, 1, 3).copy_(x.view(b, n, h, c // h).permute(0, 1, 3, 2))
    return out.view(b, h * n, c)


def _diagonal_blocks(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, h*n, h*d) -> (B, n, h*d): for each head i, row block i's column block i."""
    b, hn, c = x.shape
    n = hn // h
    return x.view(b, h, n, h, c // h).diagonal(0, 1, 3).permute(0, 1, 3, 2).reshape(b, n, c)


def _autocast_dtype(x: torch.Tensor):
    """The dtype autocast would cast `x` to for a matmul, or None outside autocast."""
    dev = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        return dt if dt != x.dtype else None
    return None


def _low(x: torch.Tensor) -> torch.Tensor:
    """`x` in the autocast dtype (if autocast is on), i.e. as the next matmul reads it."""
    dt = _autocast_dtype(x)
    return x if dt is None else x.to(dt)


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image, MLP, image->token; post-norm after each step."""

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

    def image_side(self, keys: torch.Tensor, key_pe: torch.Tensor,
                   image_pe: torch.Tensor | None = None) -> tuple:
        """The projections of this block that read only the image tokens: keys and values of
        token->image, queries of image->token (heads split), at the batch size of `keys`.

        keys + key_pe feeds two of them: it is computed once and cast once (under autocast
        every projection would cast its (hw, C) input again). With `image_pe` (the fp32
        (1, C, h, w) encoding that key_pe comes from) all three may run as one matmul, see
        `kernels.stacked_projections`."""
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        fused = stacked_projections(self, keys, image_pe, (t2i.k_proj, i2t.q_proj),
                                    (t2i.v_proj,))
        if fused is not None:
            return fused[0], fused[2], fused[1]
        k, kv = _low(keys + key_pe), _low(keys)
        return linear(k, t2i.k_proj), linear(kv, t2i.v_proj), linear(k, i2t.q_proj)

    def forward(self, queries, keys, query_pe, key_pe, image_side: tuple | None = None,
                image_pe: torch.Tensor | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """queries (B, N, C); keys (1 or B, hw, C): one image's tokens are shared by all B
        prompts until this block mixes the prompts in, so its image-side projections run
        once (or come precomputed in `image_side`)."""
        if self.skip_first_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        k_t2i, v_t2i, q_i2t = image_side if image_side is not None else self.image_side(
            keys, key_pe, image_pe)
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        q = linear(queries + query_pe, t2i.q_proj)
        queries = self.norm2(queries + t2i._combine(q, k_t2i, v_t2i))
        queries = self.norm3(queries + self.mlp(queries))
        q = queries + query_pe
        # keys + attention: a shared (1, hw, C) keys broadcasts to (B, hw, C)
        keys = self.norm4(i2t._combine(q_i2t, linear(q, i2t.k_proj), linear(queries, i2t.v_proj),
                                       residual=keys))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, heads: int, mlp_dim: int,
                 mlp_layers_keys: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, heads, mlp_dim, skip_first_pe=(i == 0),
                        mlp_layers_keys=mlp_layers_keys) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, heads, downsample=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def cached(self, cache_key) -> bool:
        """True when `forward` with this `cache_key` will reuse the image tokens kept by the
        active session (then `image` may be None)."""
        s = caching()
        return (cache_key is not None and s is not None
                and s.image_cache("first_block", cache_key) is not None)

    def forward(self, image: torch.Tensor | None, image_pe: torch.Tensor, tokens: torch.Tensor,
                cache_key: tuple | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """image: (1 or B, C, h, w) -- batch 1 when all prompts share one image and dense
        embedding; image_pe: (1, C, h, w); tokens: (B, N, C) -> (tokens, image tokens
        (B, hw, C)).

        cache_key: identifies the image (see `MaskDecoder`): the first block's image-side
        projections are then kept by the active session (per thread, for the image last
        prompted) and reused by later calls with the same key, e.g. every click on one
        embedded image."""
        first = None
        s = caching() if cache_key is not None else None
        hit = None if s is None else s.image_cache("first_block", cache_key)
        if hit is not None:
            keys, key_pe, first = hit
        else:
            # token-major (B, hw, C): in the (B, C, h, w) layout's transposed view every add
            # and projection of the first layer reads memory with a stride of hw. Under
            # autocast the image tokens and their positional encoding go to the autocast
            # dtype once, here: they are the decoder's big tensors, and in bf16 every add,
            # norm (accumulating in fp32) and projection of them moves half the bytes with
            # nothing casting them again.
            keys = _low(image.flatten(2).transpose(1, 2).contiguous())
            key_pe = _low(image_pe.flatten(2).transpose(1, 2).contiguous())
            if s is not None:
                first = self.layers[0].image_side(keys, key_pe, image_pe)
                s.image_cache("first_block", cache_key, lambda: (keys, key_pe, first))
        queries = tokens
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, tokens, key_pe,
                                  first if i == 0 else None, image_pe)
        if keys.shape[0] != queries.shape[0]:  # no blocks
            keys = keys.expand(queries.shape[0], -1, -1)
        final = self.final_attn_token_to_image
        kv = stacked_projections(self, keys, image_pe, (final.k_proj,), (final.v_proj,))
        if kv is None:
            attn = final(queries + tokens, _low(keys + key_pe), _low(keys))
        else:
            attn = final._combine(linear(queries + tokens, final.q_proj), *kv)
        return self.norm_final_attn(queries + attn), keys
