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
    """Bias-free convolution followed by BatchNorm (keys `c`, `bn`)."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, pad: int = 0,
                 groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class Stem(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(3, dim // 2, 3, 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    def __init__(self, dim: int, expand: float) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class WindowAttention(nn.Module):
    """Attention inside one window with a learnt bias per head and |offset| (LeViT style)."""

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
        b, n, c = x.shape
        nh = self.num_heads
        # qkv is laid out per head as [q | k | v]
        qkv = self.qkv(self.norm(x)).view(b, n, nh, 3, c // nh).permute(3, 0, 2, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        out = biased_attention(q, k, v, bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float,
                 local_conv: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, local_conv, 1, local_conv // 2, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        b, h, w, c = x.shape
        ws = self.window
        xp, hp, wp = pad_to_multiple(x, ws)  # padding before the attention's own norm
        win = to_windows(xp, ws).reshape(-1, ws * ws, c)
        y = from_windows(self.attn(win).view(-1, ws, ws, c), ws, b, hp, wp)[:, :h, :w]
        x = x + y
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, expand: float, out_dim: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, H, W, C)
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x).permute(0, 2, 3, 1)


class AttentionStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: int, cfg: TinyViTConfig,
                 out_dim: int | None, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, heads, window, cfg.mlp_ratio, cfg.local_conv_size)
            for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride) if out_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


class TinyViT(nn.Module):
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
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x.permute(0, 3, 1, 2))
