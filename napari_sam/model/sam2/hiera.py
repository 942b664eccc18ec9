"""SAM 2's image encoder: a Hiera trunk (hierarchical windowed ViT) and an FPN neck.

Hiera runs four stages on a (B, H/4, W/4, C) token grid; the first block of stages 2-4
max-pools its queries by 2 (halving the grid) and doubles the width. The neck projects
each stage's output to `d_model` channels and adds the upsampled coarser level to the two
coarsest ones. Keys follow Meta's checkpoints (`image_encoder.trunk.*`,
`image_encoder.neck.*`).
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from ...runtime.kernels import attention, derived
from ..common import from_windows, linear, pad_to_multiple, to_windows
from .config import HieraConfig


class GeluMLP(nn.Module):
    """Linear layers with GELU between them (keys layers.0 ... layers.N-1).

    Parameters
    ----------
    dims : list of int
        Features of the input, of each hidden layer and of the output.
    """

    def __init__(self, dims: List[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the layers (GELU after all but the last).

        Parameters
        ----------
        x : Tensor, (..., dims[0]) float

        Returns
        -------
        Tensor, (..., dims[-1])
        """
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = linear(x, layer, "gelu" if i < last else "")
        return x


def _pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pooling of a channels-last (B, H, W, C) grid (odd edges dropped)."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), 2, 2).permute(0, 2, 3, 1)


def _pool_queries(q: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """`_pool` of queries (B, h * w, heads, d) (a strided view of the qkv projection) laid
    out as (B, h, w, heads * d): the maximum of the four 2x2 corners, one copy in all
    (max_pool2d needs a contiguous copy first and is 3x slower on many small windows)."""
    x = q.reshape(q.shape[0], h, w, -1)[:, :h - h % 2, :w - w % 2]  # a view
    x = x.unflatten(1, (h // 2, 2)).unflatten(3, (w // 2, 2))
    return torch.maximum(torch.maximum(x[:, :, 0, :, 0], x[:, :, 0, :, 1]),
                         torch.maximum(x[:, :, 1, :, 0], x[:, :, 1, :, 1]))


class MultiScaleAttention(nn.Module):
    """Self-attention on (B, H, W, C) windows, queries optionally max-pooled 2x2.

    Parameters
    ----------
    dim, dim_out : int
        Channels in and out.
    num_heads : int
    q_pool : bool
        Max-pool the queries 2x2 (the output grid is then halved).
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention among the cells of each window.

        Parameters
        ----------
        x : Tensor, (B, H, W, dim) float
            B windows (or images), (row, col) order.

        Returns
        -------
        Tensor, (B, H', W', dim_out)
            H' = H // 2, W' = W // 2 with `q_pool`, else H, W.
        """
        b, h, w, _ = x.shape
        qkv = linear(x, self.qkv).view(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # (B, hw, heads, d)
        if self.q_pool:
            q = _pool_queries(q, h, w)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return linear(out, self.proj)


class MultiScaleBlock(nn.Module):
    """Pre-norm block: (windowed) attention then MLP. A block that changes the width
    projects and pools its shortcut too.

    Parameters
    ----------
    dim, dim_out, num_heads : int
        Channels in and out, attention heads.
    window : int
        Side of the attention windows on the input grid; 0 for global attention.
    q_pool : bool
        Halve the grid (the first block of stages 2-4).
    mlp_ratio : float
        MLP hidden features over `dim_out`.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, window: int, q_pool: bool,
                 mlp_ratio: float) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window = window
        self.q_pool = q_pool
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = GeluMLP([dim_out, int(dim_out * mlp_ratio), dim_out])
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention (the grid zero-padded to whole windows) then MLP, each residual.

        Parameters
        ----------
        x : Tensor, (B, H, W, dim) float

        Returns
        -------
        Tensor, (B, H', W', dim_out)
            H' = H // 2, W' = W // 2 with `q_pool`, else H, W.
        """
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = linear(x, self.proj)
            if self.q_pool:
                shortcut = _pool(shortcut)
        b, h, w = shortcut.shape[:3]  # the output grid (after pooling)
        win = self.window
        if win > 0:
            x, hp, wp = pad_to_multiple(x, win)
            x = self.attn(to_windows(x, win))
            if self.q_pool:  # each window's queries were pooled: windows of half the side
                win //= 2
                hp, wp = hp // 2, wp // 2
            x = from_windows(x, win, b, hp, wp)[:, :h, :w]
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """7x7 stride-4 convolution: (B, 3, H, W) -> (B, H/4, W/4, C).

    Parameters
    ----------
    dim : int
        C, the channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed the pixels.

        Parameters
        ----------
        x : Tensor, (B, 3, H, W) float
            Normalised pixels.

        Returns
        -------
        Tensor, (B, H/4, W/4, C)
            A channels-last view (not contiguous).
        """
        return self.proj(x).permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """The Hiera trunk: patch embedding, position embeddings, the four stages' blocks.

    Parameters
    ----------
    cfg : HieraConfig
    """

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        dim, heads = cfg.embed_dim, cfg.num_heads
        self.patch_embed = PatchEmbed(dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *cfg.pos_embed_size))
        w0 = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, dim, w0, w0))
        ends = [sum(cfg.stages[:i + 1]) - 1 for i in range(len(cfg.stages))]
        self.stage_ends = ends
        self.blocks = nn.ModuleList()
        stage = 0
        for i in range(sum(cfg.stages)):
            # the first block of a stage still uses the previous stage's window (for its
            # input grid), then pools to the new stage's grid
            window = 0 if i in cfg.global_blocks else cfg.window_spec[stage]
            dim_out = dim
            first = i - 1 in ends[:-1]
            if first:
                dim_out, heads = dim * 2, heads * 2
                stage += 1
            self.blocks.append(MultiScaleBlock(dim, dim_out, heads, window, first, cfg.mlp_ratio))
            dim = dim_out

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """(1, h, w, C): the background embedding resized (bicubic) to the grid plus the
        window embedding tiled over it; kept by the active session per grid size (remade
        when the embeddings change)."""
        return derived(self, "pos_embed", lambda: self._make_pos_embed(h, w), self.pos_embed,
                       self.pos_embed_window, key=(h, w))

    def _make_pos_embed(self, h: int, w: int) -> torch.Tensor:
        pe = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        pe = pe + win.tile(1, 1, h // win.shape[-2], w // win.shape[-1])
        return pe.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, S, S) normalised pixels -> the four stages' outputs (B, C_i, S/4/2^i, ...).

        Parameters
        ----------
        x : Tensor, (B, 3, S, S) float

        Returns
        -------
        list of 4 Tensor
            (B, C_i, S/4/2^i, S/4/2^i) channels-first views, C_i = cfg.channels[i], finest
            first.
        """
        x = self.patch_embed(x)
        x = x + self._pos_embed(*x.shape[1:3])
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outs.append(x.permute(0, 3, 1, 2))
        return outs


def sine_position_encoding(h: int, w: int, channels: int, device=None,
                           temperature: float = 10000.0) -> torch.Tensor:
    """(1, channels, h, w) DETR-style sine encoding of normalised (y, x) cell positions
    (first half of the channels y, second half x; sin/cos alternating).

    Parameters
    ----------
    h, w : int
        Grid rows and columns.
    channels : int
        Output channels (even).
    device : torch.device, optional
    temperature : float
        Base of the geometric frequency series.

    Returns
    -------
    Tensor, (1, channels, h, w) float32
    """
    half = channels // 2
    eps, scale = 1e-6, 2 * math.pi
    ys = torch.arange(1, h + 1, dtype=torch.float32, device=device) / (h + eps) * scale
    xs = torch.arange(1, w + 1, dtype=torch.float32, device=device) / (w + eps) * scale
    i = torch.arange(half, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)

    def enc(p):  # (n,) -> (n, half): sin on even, cos on odd frequencies, interleaved
        a = p[:, None] / dim_t
        return torch.stack([a[:, 0::2].sin(), a[:, 1::2].cos()], dim=2).flatten(1)

    py, px = enc(ys), enc(xs)  # (h, half), (w, half)
    pos = torch.cat([py[:, None, :].expand(h, w, half), px[None, :, :].expand(h, w, half)], -1)
    return pos.permute(2, 0, 1)[None]


class _Lateral(nn.Module):
    """Holds the neck's 1x1 convolution under the checkpoint's key `convs.i.conv`."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)


class FpnNeck(nn.Module):
    """1x1 lateral convolutions to `d_model` channels, plus a nearest-upsampled top-down path.

    Parameters
    ----------
    channels : tuple of int
        Channels of the trunk's levels, finest first.
    d_model : int
        Output channels of every level.
    top_down_levels : tuple of int
        Levels that get the upsampled coarser output added.
    """

    def __init__(self, channels: Tuple[int, ...], d_model: int,
                 top_down_levels: Tuple[int, ...] = (2, 3)) -> None:
        super().__init__()
        # convs[0] reads the coarsest stage (Meta's order)
        self.convs = nn.ModuleList(_Lateral(c, d_model) for c in reversed(channels))
        self.top_down_levels = top_down_levels

    def forward(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        """Project each level and run the top-down path.

        Parameters
        ----------
        xs : list of Tensor
            (B, channels[i], H_i, W_i) per level, finest first, each coarser one half the side.

        Returns
        -------
        list of Tensor
            (B, d_model, H_i, W_i) per level, finest first (float32 where the top-down
            path was added).
        """
        n = len(xs)
        out: List[torch.Tensor] = [None] * n  # type: ignore[list-item]
        prev = None
        for i in range(n - 1, -1, -1):
            lateral = self.convs[n - 1 - i].conv(xs[i])
            if prev is not None and i in self.top_down_levels:
                up = F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
                prev = lateral + up
            else:
                prev = lateral
            out[i] = prev
        return out


class ImageEncoder(nn.Module):
    """Trunk + neck; the coarsest level (stride 32) only feeds the neck's top-down path.

    Parameters
    ----------
    cfg : HieraConfig
    d_model : int
        The neck's output channels (prompt_embed_dim).
    """

    def __init__(self, cfg: HieraConfig, d_model: int) -> None:
        super().__init__()
        self.trunk = Hiera(cfg)
        self.neck = FpnNeck(cfg.channels, d_model)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, S, S) normalised pixels -> features at strides 4, 8, 16, each (B, d, ., .).

        Parameters
        ----------
        x : Tensor, (B, 3, S, S) float

        Returns
        -------
        list of 3 Tensor
            (B, d_model, S/4, S/4), (B, d_model, S/8, S/8), (B, d_model, S/16, S/16).
        """
        return self.neck(self.trunk(x))[:-1]
