"""MobileSAM's TinyViT image encoder.

A stride-4 conv stem, an MBConv stage, then windowed-attention stages joined by
patch-merging convs; the same conv neck as SAM's ViT. Input (B, 3, S, S), output
(B, D, S/stride, S/stride) where stride = 4 * prod(merge_strides) (16 for MobileSAM).
Keys follow MobileSAM's `mobile_sam.pt` (`layers.0.blocks.0.conv1.c`, `.bn`, `attn.attention_biases`).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
import torch.nn.functional as F

from ..runtime.kernels import biased_attention
from .common import from_windows, neck, pad_to_multiple, to_windows
from .config import TinyViTConfig


class ConvBN(nn.Sequential):
    """Bias-free convolution followed by BatchNorm (keys `c`, `bn`).

    Parameters
    ----------
    cin, cout : int
        Channels in and out.
    k, stride, pad, groups : int
        Kernel side, stride, zero padding and groups of the convolution.
    """

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, pad: int = 0,
                 groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class Stem(nn.Module):
    """Two stride-2 3x3 ConvBNs with GELU between them (total stride 4).

    Parameters
    ----------
    dim : int
        Output channels (the first conv has dim // 2).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(3, dim // 2, 3, 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed the pixels.

        Parameters
        ----------
        x : Tensor, (B, 3, H, W) float
            Normalised pixels.

        Returns
        -------
        Tensor, (B, dim, H/4, W/4)
        """
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise 3x3, 1x1 project, GELUs, residual.

    Parameters
    ----------
    dim : int
        Channels in and out.
    expand : float
        Hidden channels over `dim`.
    """

    def __init__(self, dim: int, expand: float) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Parameters
        ----------
        x : Tensor, (B, dim, H, W) float

        Returns
        -------
        Tensor, (B, dim, H, W)
        """
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 ConvBN, depthwise strided 3x3 ConvBN, 1x1 ConvBN (GELUs between).

    Parameters
    ----------
    dim, out_dim : int
        Channels in and out.
    stride : int
        Of the depthwise conv (1 keeps the grid).
    """

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        """Merge patches.

        Parameters
        ----------
        x : Tensor, (B, dim, H, W) float

        Returns
        -------
        Tensor, (B, out_dim, ceil(H / stride), ceil(W / stride))
        """
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class WindowAttention(nn.Module):
    """Attention inside one window with a learnt bias per head and |offset| (LeViT style).

    Parameters
    ----------
    dim, num_heads : int
        Channels and attention heads.
    window : int
        Window side in tokens.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        cells = list(itertools.product(range(window), range(window)))
        offsets: dict = {}
        idx = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets))
               for a in cells for b in cells]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs",
                             torch.tensor(idx, dtype=torch.long).view(len(cells), len(cells)),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        """Pre-norm attention within each window (no residual).

        Parameters
        ----------
        x : Tensor, (B, N, C) float
            B windows of N = window**2 tokens in raster (row, col) order.

        Returns
        -------
        Tensor, (B, N, C)
        """
        b, n, c = x.shape
        nh = self.num_heads
        # qkv is laid out per head as [q | k | v]
        qkv = self.qkv(self.norm(x)).view(b, n, nh, 3, c // nh).permute(3, 0, 2, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        out = biased_attention(q, k, v, bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """LayerNorm, then two linear layers with GELU between them.

    Parameters
    ----------
    dim, hidden : int
        Features in and out; hidden features.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP (no residual).

        Parameters
        ----------
        x : Tensor, (..., dim) float

        Returns
        -------
        Tensor, (..., dim)
        """
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise local conv, MLP (residuals around attention and MLP).

    Parameters
    ----------
    dim, num_heads, window : int
        Channels, attention heads, window side.
    mlp_ratio : float
        MLP hidden features over `dim`.
    local_conv : int
        Kernel side of the depthwise conv.
    """

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float,
                 local_conv: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, local_conv, 1, local_conv // 2, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        """Apply the block (the grid zero-padded to whole windows for the attention).

        Parameters
        ----------
        x : Tensor, (B, H, W, C) float

        Returns
        -------
        Tensor, (B, H, W, C)
        """
        b, h, w, c = x.shape
        ws = self.window
        xp, hp, wp = pad_to_multiple(x, ws)  # padding before the attention's own norm
        win = to_windows(xp, ws).reshape(-1, ws * ws, c)
        y = from_windows(self.attn(win).view(-1, ws, ws, c), ws, b, hp, wp)[:, :h, :w]
        x = x + y
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """MBConv blocks, then patch merging.

    Parameters
    ----------
    dim, depth : int
        Channels and number of blocks.
    expand : float
        MBConv hidden channels over `dim`.
    out_dim, stride : int
        Channels and stride of the patch merging.
    """

    def __init__(self, dim: int, depth: int, expand: float, out_dim: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, H, W, C)
        """Run the stage; the output is channels-last.

        Parameters
        ----------
        x : Tensor, (B, dim, H, W) float

        Returns
        -------
        Tensor, (B, ceil(H / stride), ceil(W / stride), out_dim)
        """
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x).permute(0, 2, 3, 1)


class AttentionStage(nn.Module):
    """TinyViT blocks, then patch merging (except in the last stage).

    Parameters
    ----------
    dim, depth, heads, window : int
        Channels, number of blocks, attention heads and window side.
    cfg : TinyViTConfig
        For mlp_ratio and local_conv_size.
    out_dim : int or None
        Channels after the patch merging; None: no merging.
    stride : int
        Of the patch merging.
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, cfg: TinyViTConfig,
                 out_dim: int | None, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, heads, window, cfg.mlp_ratio, cfg.local_conv_size)
            for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride) if out_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        """Run the stage (channels-last in and out).

        Parameters
        ----------
        x : Tensor, (B, H, W, dim) float

        Returns
        -------
        Tensor, (B, H', W', out_dim or dim)
            H' = ceil(H / stride) with merging, else H.
        """
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


class TinyViT(nn.Module):
    """The TinyViT encoder: stem, conv stage, attention stages, the conv neck.

    Parameters
    ----------
    cfg : TinyViTConfig
    image_size : int
        Unused: TinyViT has no fixed positions.
    out_dim : int
        D, the embedding channels.
    """

    def __init__(self, cfg: TinyViTConfig, image_size: int, out_dim: int) -> None:
        super().__init__()
        dims, n = cfg.embed_dims, len(cfg.embed_dims)
        self.patch_embed = Stem(dims[0])
        layers: list[nn.Module] = [
            ConvStage(dims[0], cfg.depths[0], cfg.mbconv_expand_ratio, dims[1], cfg.merge_strides[0])]
        for i in range(1, n):
            last = i == n - 1
            layers.append(AttentionStage(
                dims[i], cfg.depths[i], cfg.num_heads[i], cfg.window_sizes[i], cfg,
                None if last else dims[i + 1], 1 if last else cfg.merge_strides[i]))
        self.layers = nn.ModuleList(layers)
        if cfg.num_classes:
            # unused ImageNet classifier kept only so MobileSAM checkpoints load strictly
            self.norm_head = nn.LayerNorm(dims[-1])
            self.head = nn.Linear(dims[-1], cfg.num_classes)
        self.neck = neck(dims[-1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode preprocessed images.

        Parameters
        ----------
        x : Tensor, (B, 3, S, S) float
            Normalised, padded pixels.

        Returns
        -------
        Tensor, (B, D, S/stride, S/stride)
            stride = `TinyViTConfig.stride` (16 for MobileSAM).
        """
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x.permute(0, 3, 1, 2))
