"""SAM's ViT image encoder (ViT-B/L/H): windowed attention, a few global blocks, a conv neck.

Input (B, 3, S, S) normalised pixels with S = config.image_size; output (B, D, S/16, S/16)
with D = prompt_embed_dim (256 for SAM). State-dict keys follow Meta's checkpoints
(`patch_embed.proj`, `pos_embed`, `blocks.i.attn.qkv`, `rel_pos_h`, `neck.0` ...).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..runtime.kernels import constant
from ..runtime.session import current
from ..runtime.vit_attention import windowed_attention
from .common import MLPBlock, from_windows, neck, pad_to_multiple, to_windows
from .config import ViTConfig


def _rel_index(size: int, device: torch.device) -> torch.Tensor:
    def make():
        r = torch.arange(size, device=device)
        return r[:, None] - r[None, :] + (size - 1)

    return constant(("rel_index", size, str(device)), make)


def relative_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Expand a (2*L-1, C) relative-position table to (size, size, C) for query/key index pairs.

    A table learnt for another size is resampled linearly first.

    Parameters
    ----------
    table : Tensor, (2*L-1, C) float
        Embedding per relative offset, offset -(L-1) first.
    size : int
        Grid length along the axis (rows or columns).

    Returns
    -------
    Tensor, (size, size, C)
        [query index, key index] -> embedding of their offset.
    """
    n = 2 * size - 1
    if table.shape[0] != n:
        table = F.interpolate(table.t()[None], size=n, mode="linear")[0].t()
    return table[_rel_index(size, table.device)]


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) grid with decomposed relative positions.

    Parameters
    ----------
    dim : int
        C, the channels.
    num_heads : int
        Heads (dim // num_heads channels each).
    rel_size : int
        Grid side the relative-position tables are learnt for (window size, or the whole
        patch grid for global attention).
    """

    def __init__(self, dim: int, num_heads: int, rel_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_size - 1, head_dim))

    def rel_tables(self, h: int, w: int) -> tuple:
        """The relative-position tables of an (h, w) grid: (h, h, head_dim) over (query row,
        key row) and (w, w, head_dim) over (query column, key column).

        Parameters
        ----------
        h, w : int
            Grid rows and columns.

        Returns
        -------
        tuple of Tensor
            (h, h, head_dim) and (w, w, head_dim), the parameters' dtype.
        """
        return relative_table(self.rel_pos_h, h), relative_table(self.rel_pos_w, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention among all cells of each (B, H, W, C) grid, with the relative-position
        term q.Rh[y, ky] + q.Rw[x, kx] added to the scores.

        Parameters
        ----------
        x : Tensor, (B, H, W, C) float
            B windows (or images) of H x W tokens, (row, col) order.

        Returns
        -------
        Tensor, (B, H, W, C), dtype of `x`
        """
        b, h, w, c = x.shape
        nh = self.num_heads
        qkv = self.qkv(x).reshape(b, h * w, 3, nh, c // nh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, hw, head_dim)
        rh, rw = self.rel_tables(h, w)
        qg = q.unflatten(2, (h, w))
        bias_h = torch.einsum("bnyxc,ykc->bnyxk", qg, rh.to(q.dtype))  # (.., y, x, ky)
        bias_w = torch.einsum("bnyxc,xkc->bnyxk", qg, rw.to(q.dtype))  # (.., y, x, kx)
        bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(b, nh, h * w, h * w)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


class Block(nn.Module):
    """Pre-norm transformer block; window_size 0 means global attention.

    Parameters
    ----------
    dim, num_heads : int
        Channels and attention heads.
    mlp_ratio : float
        MLP hidden features per channel.
    window_size : int
        Side of the attention windows; 0 for global attention.
    grid : int
        Side of the patch grid (the relative-position size of a global block).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int,
                 grid: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, window_size or grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention (windowed, the grid zero-padded to whole windows) then MLP, each residual.

        Parameters
        ----------
        x : Tensor, (B, H, W, C) float
            Token grid, (row, col) order.

        Returns
        -------
        Tensor, (B, H, W, C), dtype of `x`
        """
        if current() is not None:  # the session's fused form (runtime.vit_attention)
            x = x + windowed_attention(self.attn, self.norm1(x), self.window_size)
            if torch.is_grad_enabled():
                return x + self.mlp(self.norm2(x))
            return x.add_(self.mlp(self.norm2(x)))  # x is this block's own tensor here
        shortcut = x
        x = self.norm1(x)
        if self.window_size:
            b, h, w, _ = x.shape
            x, hp, wp = pad_to_multiple(x, self.window_size)
            x = self.attn(to_windows(x, self.window_size))
            x = from_windows(x, self.window_size, b, hp, wp)[:, :h, :w]
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: one strided convolution (key `proj`).

    Parameters
    ----------
    patch_size : int
        Patch side in pixels (kernel and stride).
    dim : int
        Channels per token.
    """

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed the patches.

        Parameters
        ----------
        x : Tensor, (B, 3, H, W) float
            Normalised pixels; H, W multiples of the patch size.

        Returns
        -------
        Tensor, (B, H / patch, W / patch, dim)
            Channels-last, contiguous.
        """
        # (B, H, W, C), contiguous: the residual stream of every block keeps the layout of
        # this tensor, and a channels-first stride there makes each add and norm several
        # times slower
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class ImageEncoderViT(nn.Module):
    """Patch embedding, absolute positions, the transformer blocks and the conv neck.

    Parameters
    ----------
    cfg : ViTConfig
        Width, depth, heads, window size and global-attention blocks.
    image_size : int
        S, the square input side in pixels.
    out_dim : int
        D, the embedding channels (the prompt encoder's width).
    """

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
        """Encode preprocessed images.

        Parameters
        ----------
        x : Tensor, (B, 3, S, S) float
            Normalised, padded pixels at the model's input size.

        Returns
        -------
        Tensor, (B, D, S/16, S/16)
            Image embedding, dtype of the computation (float32 or the autocast dtype).

        Raises
        ------
        ValueError
            If the patch grid differs from the one the model was built for.
        """
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
