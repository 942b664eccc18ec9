"""SAM's ViT image encoder (ViT-B/L/H): windowed attention, a few global blocks, a conv neck.

Input (B, 3, S, S) normalised pixels with S = config.image_size; output (B, D, S/16, S/16)
with D = prompt_embed_dim (256 for SAM). State-dict keys follow Meta's checkpoints
(`patch_embed.proj`, `pos_embed`, `blocks.i.attn.qkv`, `rel_pos_h`, `neck.0` ...).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..runtime.kernels import linear, scratch, tensor_state, zero_bordered
from .common import MLPBlock, neck
from .config import ViTConfig

# Above this many query x key pairs per head, the additive-bias path of global attention runs
# in row chunks so the relative-position bias never exists for the whole image at once.
_CHUNK_PAIRS = 1024 * 4096
# Largest combined relative-position table (cells x head_dim x (wh + ww) elements) that is
# precomputed; windows use it, a global 64 x 64 grid (33 M elements) does not.
_COMBINED_TABLE_MAX = 1 << 22

# How attention adds the decomposed relative-position term (see `Attention.attend`):
# "auto": "augmented" for bf16/fp16 (matmul units are cheap, memory traffic is not),
# "bias" for fp32; "bias" / "augmented" force one path (tests compare them).
ATTENTION_PATH = "auto"

_INDEX_CACHE: dict = {}
_ONEHOT_CACHE: dict = {}


def _rel_index(size: int, device: torch.device) -> torch.Tensor:
    if torch.compiler.is_compiling():
        r = torch.arange(size, device=device)
        return r[:, None] - r[None, :] + (size - 1)
    key = (size, str(device))
    idx = _INDEX_CACHE.get(key)
    if idx is None:
        r = torch.arange(size, device=device)
        idx = _INDEX_CACHE[key] = r[:, None] - r[None, :] + (size - 1)
    return idx


def relative_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Expand a (2*L-1, C) relative-position table to (size, size, C) for query/key index pairs.

    A table learnt for another size is resampled linearly first.
    """
    n = 2 * size - 1
    if table.shape[0] != n:
        table = F.interpolate(table.t()[None], size=n, mode="linear")[0].t()
    return table[_rel_index(size, table.device)]


def _key_positions(wh: int, ww: int, width: int, dtype, device) -> torch.Tensor:
    """(wh*ww, width) keys' extra features for the augmented path: one-hot of the key's
    row (first wh columns) and column (next ww), zeros after."""
    key = (wh, ww, width, dtype, str(device))
    t = None if torch.compiler.is_compiling() else _ONEHOT_CACHE.get(key)
    if t is None:
        t = torch.zeros(wh, ww, width, dtype=dtype, device=device)
        t[torch.arange(wh), :, torch.arange(wh)] = 1
        t[:, torch.arange(ww), wh + torch.arange(ww)] = 1
        t = t.reshape(wh * ww, width)
        if not torch.compiler.is_compiling():
            _ONEHOT_CACHE[key] = t
    return t


def _augmented_buffer(nb: int, n: int, nh: int, e: int, hd: int, wh: int, ww: int,
                      dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The (3, windows, cells, heads, E) q/k/v buffer of the augmented path with its
    constant parts in place: the keys' one-hot positions and the zero padding of q and v.

    In inference the buffer is kept (`kernels.scratch`: per thread, per shape) and reused
    by every block and every image: the parts that never change are written once, and the
    buffer -- 57 MB for a ViT-B global block -- is not allocated and page-faulted in again
    for each block. Under autograd (or torch.compile) a fresh one is made each call.
    """
    def make():
        buf = torch.empty(3, nb, n, nh, e, dtype=dtype, device=device)
        buf[0, ..., hd + wh + ww:] = 0
        buf[1, ..., hd:] = _key_positions(wh, ww, e - hd, dtype, device)[:, None]
        buf[2, ..., hd:] = 0
        return buf

    return scratch("buffers", (nb, n, nh, e, hd, wh, ww, dtype, str(device)), make)


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer will compute `x` in (autocast's, if on)."""
    dev = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _use_augmented(dtype: torch.dtype) -> bool:
    if ATTENTION_PATH == "auto":
        return dtype in (torch.bfloat16, torch.float16)
    return ATTENTION_PATH == "augmented"


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) grid with decomposed relative positions."""

    def __init__(self, dim: int, num_heads: int, rel_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_size - 1, head_dim))

    def _table(self, param, size, dtype: torch.dtype, factor: float):
        """`relative_table(param, size) * factor` in `dtype`, cached while the weights do not
        change (inference only: with autograd on it is recomputed every call).

        param None, size (wh, ww): the combined (wh*ww, head_dim, wh + ww) table of cell
        t = (y, x): [Rh[y].T | Rw[x].T], for computing both terms in one batched matmul."""
        ph, pw = self.rel_pos_h, self.rel_pos_w
        state = tensor_state(ph, pw)
        if (torch.is_grad_enabled() and ph.requires_grad) or torch.compiler.is_compiling():
            return self._make_table(param, size, dtype, factor)
        key = (param is pw, size, dtype, factor)
        tables = self.__dict__.setdefault("_tables", {})  # not in the state dict
        hit = tables.get(key)
        if hit is not None and hit[0] == state:
            return hit[1]
        with torch.no_grad():
            t = self._make_table(param, size, dtype, factor)
        tables[key] = (state, t)
        return t

    def _make_table(self, param, size, dtype, factor):
        if param is not None:
            return (relative_table(param, size) * factor).to(dtype)
        wh, ww = size
        th = relative_table(self.rel_pos_h, wh).transpose(1, 2)  # (y, hd, ky)
        tw = relative_table(self.rel_pos_w, ww).transpose(1, 2)  # (x, hd, kx)
        hd = th.shape[1]
        t = torch.cat([th[:, None].expand(wh, ww, hd, wh), tw[None].expand(wh, ww, hd, ww)], -1)
        return (t.reshape(wh * ww, hd, wh + ww) * factor).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global attention over a (B, H, W, C) grid."""
        return self.attend(x, 0)

    def attend(self, x: torch.Tensor, window: int) -> torch.Tensor:
        """Attention inside `window` x `window` windows of a (B, h, w, C) grid (0: global).

        The grid is zero-padded to whole windows before the qkv projection, as in SAM; since
        qkv(0) is the projection's bias, the projection runs on the h*w real cells only and
        the padded cells get the bias. q, k and v go straight from the projection's output
        into one (3, windows, heads, cells, E) buffer (partition, padding and head split in
        one copy) and come back with one copy, cropped.

        The relative-position term q.Rh[y, ky] + q.Rw[x, kx] is added in one of two ways:
        "bias": as an additive mask to `scaled_dot_product_attention` (the (cells x cells)
        bias exists in memory, in row chunks for large grids); "augmented": folded into the
        dot product -- q' = [q, q.Rh/s, q.Rw/s], k' = [k, onehot(ky), onehot(kx)], v padded
        with zeros to the same width -- so the fused attention kernel runs with no mask and
        nothing of size cells x cells is ever stored.
        """
        b, h, w, c = x.shape
        nh = self.num_heads
        hd = c // nh
        wh, ww = (window, window) if window else (h, w)
        nH, nW = -(-h // wh), -(-w // ww)
        hp, wp = nH * wh, nW * ww
        n, nb = wh * ww, b * nH * nW
        padded = (hp, wp) != (h, w)
        if padded:
            # SAM pads the normalised grid with zeros: one copy into a zero-bordered grid
            # (which also casts to the matmul dtype) instead of a copy per window edge
            xp = zero_bordered(b, hp, wp, c, _matmul_dtype(x), x.device)
            xp[:, :h, :w] = x
            x = xp
        qkv = linear(x, self.qkv)  # (b, hp, wp, 3c)
        dt = qkv.dtype
        aug = _use_augmented(dt)
        # the fused CPU kernel is much slower for head widths that are not multiples of 16
        e = -(-(hd + wh + ww) // 16) * 16 if aug else hd
        # token-major (3, windows, cells, heads, E): the copies below move whole tokens;
        # the attention kernel takes the (windows, heads, cells, E) views as they are
        if aug:
            buf = _augmented_buffer(nb, n, nh, e, hd, wh, ww, dt, qkv.device)
        else:
            buf = qkv.new_empty(3, nb, n, nh, e)
        dst = buf[..., :hd].unflatten(1, (b, nH, nW)).unflatten(4, (wh, ww))
        dst = dst.permute(1, 2, 4, 3, 5, 0, 6, 7)  # (b, nH, wh, nW, ww, 3, nh, hd)
        dst.copy_(qkv.view(b, nH, wh, nW, ww, 3, nh, hd))
        # (nb, nh, n, e) each; by indexing, not unbind: autograd allows in-place writes to
        # these views only when each comes from a single-output view op
        q, k, v = (buf[i].transpose(1, 2) for i in range(3))
        qh = q[..., :hd]
        if torch.is_grad_enabled():  # autograd saves it, and `buf` is written to below
            qh = qh.clone()
        qs = qh.unflatten(2, (wh, ww))  # (nb, nh, wh, ww, hd)
        scale = hd ** -0.5
        if aug:
            if n * hd * (wh + ww) <= _COMBINED_TABLE_MAX:
                # both terms in one batched matmul over the cells of a window
                t = self._table(None, (wh, ww), dt, 1 / scale)  # (n, hd, wh + ww)
                qc = qh.permute(2, 0, 1, 3).reshape(n, nb * nh, hd)
                rel = torch.bmm(qc, t).view(n, nb, nh, wh + ww)
                buf[0, ..., hd:hd + wh + ww].transpose(0, 1).copy_(rel)
            else:
                rh = self._table(self.rel_pos_h, wh, dt, 1 / scale)
                rw = self._table(self.rel_pos_w, ww, dt, 1 / scale)
                q[..., hd:hd + wh].unflatten(2, (wh, ww)).copy_(
                    torch.einsum("bnyxc,ykc->bnyxk", qs, rh))
                q[..., hd + wh:hd + wh + ww].unflatten(2, (wh, ww)).copy_(
                    torch.einsum("bnyxc,xkc->bnyxk", qs, rw))
            out = F.scaled_dot_product_attention(q, k, v, scale=scale)[..., :hd]
        else:
            rh = self._table(self.rel_pos_h, wh, dt, 1.0)
            rw = self._table(self.rel_pos_w, ww, dt, 1.0)
            rows = wh if n * n <= _CHUNK_PAIRS else max(1, _CHUNK_PAIRS // (ww * n))
            outs = []
            for y0 in range(0, wh, rows):
                qc = qs[:, :, y0:y0 + rows]
                bias_h = torch.einsum("bnyxc,ykc->bnyxk", qc, rh[y0:y0 + rows])
                bias_w = torch.einsum("bnyxc,xkc->bnyxk", qc, rw)
                nq = qc.shape[2] * ww
                bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(nb, nh, nq, n)
                outs.append(F.scaled_dot_product_attention(
                    q[:, :, y0 * ww:y0 * ww + nq], k, v, attn_mask=bias, scale=scale))
            out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        src = out.unflatten(0, (b, nH, nW)).unflatten(4, (wh, ww)).permute(0, 1, 4, 2, 5, 3, 6)
        res = qkv.new_empty(b, hp, wp, c)
        res.view(b, nH, wh, nW, ww, nh, hd).copy_(src)
        y = linear(res, self.proj)  # on the padded grid too: one copy back, not four
        return y[:, :h, :w] if padded else y


class Block(nn.Module):
    """Pre-norm transformer block; window_size 0 means global attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int,
                 grid: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, window_size or grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn.attend(self.norm1(x), self.window_size)
        if torch.is_grad_enabled():
            return x + self.mlp(self.norm2(x))
        return x.add_(self.mlp(self.norm2(x)))  # x is this block's own tensor here


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, H, W, C), contiguous: the residual stream of every block keeps the layout of
        # this tensor, and a channels-first stride there makes each add and norm several
        # times slower
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class ImageEncoderViT(nn.Module):
    def __init__(self, cfg: ViTConfig, image_size: int, out_dim: int) -> None:
        super().__init__()
        grid = image_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio,
                  0 if i in cfg.global_attn_indexes else cfg.window_size, grid)
            for i in range(cfg.depth)
        )
        self.neck = neck(cfg.embed_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if x.shape[1:3] != self.pos_embed.shape[1:3]:
            raise ValueError(
                f"input gives a {tuple(x.shape[1:3])} patch grid but the model was built for "
                f"{tuple(self.pos_embed.shape[1:3])}; resize the image to the model's input size")
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = x.permute(0, 3, 1, 2)
        if x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type):
            # plain fp32: the neck's input in SAM's memory layout (its residual stream is
            # channels-first in memory), so that the neck's convolutions and norms round as
            # SAM's do; decoders downstream (micro-sam's UNETR) amplify the difference
            x = x.contiguous()
        return self.neck(x)
