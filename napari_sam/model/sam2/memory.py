"""SAM 2's memory: the memory encoder (a frame's features fused with its predicted mask)
and memory attention (the current frame's features attending to the stored memories and
object pointers), with rotary position encodings. Keys follow Meta's checkpoints.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ...runtime.kernels import attention
from ..common import LayerNorm2d, linear
from .hiera import sine_position_encoding


# ---- rotary position encoding on a 2D grid ---------------------------------------------
def rope_angles(head_dim: int, h: int, w: int, theta: float = 10000.0,
                device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (h*w, head_dim/2) of the rotation of each channel pair at each grid
    cell (raster order): the first half of the pairs turns with the column, the second
    with the row, at frequencies theta^(-4i/head_dim).

    Parameters
    ----------
    head_dim : int
        Channels per head (a multiple of 4).
    h, w : int
        Grid rows and columns.
    theta : float
        Base of the frequencies.
    device : torch.device, optional

    Returns
    -------
    cos, sin : Tensor, (h*w, head_dim/2) float32
    """
    q = head_dim // 4
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4, device=device)[:q].float() / head_dim))
    t = torch.arange(h * w, device=device, dtype=torch.float32)
    tx, ty = t % w, torch.div(t, w, rounding_mode="floor")
    ang = torch.cat([torch.outer(tx, freqs), torch.outer(ty, freqs)], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x (B, heads, n, d) by the angles of (m, d/2)
    cos/sin; n a multiple of m (the same grid repeated: several memory frames). Computed in
    float32 as one complex product per pair (x0 + i x1)(cos + i sin), the same arithmetic
    as the rotation written out, in one pass instead of six.

    Parameters
    ----------
    x : Tensor, (B, heads, n, d)
        Queries or keys, n a multiple of m.
    cos, sin : Tensor, (m, d/2) float32
        From `rope_angles`.

    Returns
    -------
    Tensor, (B, heads, n, d), dtype of `x`
    """
    b, nh, n, d = x.shape
    m = cos.shape[0]
    xc = torch.view_as_complex(x.float().reshape(b, nh, n // m, m, d // 2, 2).contiguous())
    out = torch.view_as_real(xc * torch.complex(cos, sin))
    return out.reshape(b, nh, n, d).type_as(x)


class RoPEAttention(nn.Module):
    """Attention with q/k/v/out projections; queries and the first keys (all but the
    trailing `num_k_exclude_rope` object-pointer tokens) get rotary encodings.

    Keys and values narrower than a head (the 64-wide memory read by 256-wide heads) are
    projected after the attention instead of before: the softmax weights of a query sum
    to 1, so P (v W^T + b) = (P v) W^T + b, and the weighted sum over the memory runs on
    64 channels instead of 256 (exact up to rounding).

    Parameters
    ----------
    dim : int
        Channels of the queries and of the output.
    num_heads : int
    kv_in_dim : int, optional
        Channels of the keys and values (None: `dim`).
    theta : float
        Base of the rotary frequencies.
    """

    def __init__(self, dim: int, num_heads: int = 1, kv_in_dim: int | None = None,
                 theta: float = 10000.0) -> None:
        super().__init__()
        kv = kv_in_dim or dim
        self.num_heads = num_heads
        self.theta = theta
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv, dim)
        self.v_proj = nn.Linear(kv, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _angles(self, head_dim: int, grid: Tuple[int, int], device) -> Tuple[torch.Tensor, ...]:
        """`rope_angles` for this grid, kept per (head_dim, grid, device) on the module in
        inference (not in its state dict: they follow from the sizes alone)."""
        key = (head_dim, tuple(grid), str(device))
        if torch.is_grad_enabled():
            return rope_angles(head_dim, grid[0], grid[1], self.theta, device)
        tables = self.__dict__.setdefault("_tables", {})
        hit = tables.get(key)
        if hit is None:
            if len(tables) > 4:
                tables.clear()
            with torch.inference_mode(False):  # plain tensors, usable outside inference too
                hit = tables[key] = rope_angles(head_dim, grid[0], grid[1], self.theta, device)
        return hit

    def __getstate__(self):
        """Pickle without the angle tables (`_angles` makes them again)."""
        state = super().__getstate__()
        state.pop("_tables", None)
        return state

    def forward(self, q, k, v, grid: Tuple[int, int], num_k_exclude_rope: int = 0):
        """Attend from `q` to `k`, `v`.

        Parameters
        ----------
        q : Tensor, (B, N, dim) float
            Query tokens, raster order over `grid` (N a multiple of h*w).
        k, v : Tensor, (B, M, kv_in_dim)
            Keys and values; the first M - num_k_exclude_rope are grid tokens (repeats of
            the h*w grid), the rest object pointers.
        grid : (int, int)
            (h, w), rows and columns of the token grid.
        num_k_exclude_rope : int
            Trailing keys without rotary encoding.

        Returns
        -------
        Tensor, (B, N, dim)
        """
        q = self._heads(linear(q, self.q_proj))
        k = self._heads(linear(k, self.k_proj))
        cos, sin = self._angles(q.shape[-1], grid, q.device)
        q = apply_rope(q, cos, sin)
        n_rope = k.shape[2] - num_k_exclude_rope
        if n_rope > 0:
            k = torch.cat([apply_rope(k[:, :, :n_rope], cos, sin), k[:, :, n_rope:]], dim=2)
        heads, head_dim = self.num_heads, q.shape[-1]
        b, _, n, _ = q.shape
        if v.shape[-1] < head_dim:  # project the values after the attention (class doc)
            vh = v[:, None].expand(-1, heads, -1, -1).to(q.dtype)
            pv = attention(q, k, vh)  # (B, heads, N, kv)
            if heads == 1:
                out = linear(pv[:, 0], self.v_proj)
            else:
                w = self.v_proj.weight.view(heads, head_dim, -1).to(pv.dtype)
                bias = self.v_proj.bias.view(heads, 1, head_dim).to(pv.dtype)
                out = (pv @ w.transpose(1, 2) + bias).transpose(1, 2).reshape(b, n, -1)
        else:
            v = self._heads(linear(v, self.v_proj))
            out = attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return linear(out, self.out_proj)


class MemoryAttentionLayer(nn.Module):
    """Pre-norm: self-attention, cross-attention to the memory, ReLU feed-forward.

    Parameters
    ----------
    dim, mem_dim : int
        Channels of the frame tokens and of the memory.
    ffn_dim : int
        Hidden features of the feed-forward.
    """

    def __init__(self, dim: int, mem_dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(dim)
        self.cross_attn_image = RoPEAttention(dim, kv_in_dim=mem_dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, memory, memory_pos, grid, num_obj_ptr_tokens: int = 0):
        """One layer of `MemoryAttention.forward`.

        Parameters
        ----------
        x : Tensor, (B, h*w, dim)
        memory, memory_pos : Tensor, (B, M, mem_dim)
        grid : (int, int)
            (h, w).
        num_obj_ptr_tokens : int
            Trailing pointer tokens of the memory.

        Returns
        -------
        Tensor, (B, h*w, dim)
        """
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y, grid)
        y = self.norm2(x)
        x = x + self.cross_attn_image(y, memory + memory_pos, memory, grid, num_obj_ptr_tokens)
        y = self.norm3(x)
        return x + linear(linear(y, self.linear1, "relu"), self.linear2)


class MemoryAttention(nn.Module):
    """A stack of `MemoryAttentionLayer` and a final LayerNorm.

    Parameters
    ----------
    dim, mem_dim, ffn_dim : int
        As in `MemoryAttentionLayer`.
    num_layers : int
    """

    def __init__(self, dim: int, mem_dim: int, ffn_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MemoryAttentionLayer(dim, mem_dim, ffn_dim)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, curr: torch.Tensor, curr_pos: torch.Tensor, memory: torch.Tensor,
                memory_pos: torch.Tensor, grid: Tuple[int, int], num_obj_ptr_tokens: int = 0
                ) -> torch.Tensor:
        """curr, curr_pos: (B, h*w, C) current frame tokens; memory, memory_pos: (B, M,
        mem_dim), the spatial memories (multiples of h*w) then `num_obj_ptr_tokens`
        pointer tokens. Returns the conditioned tokens (B, h*w, C).

        Parameters
        ----------
        curr, curr_pos : Tensor, (B, h*w, C)
            Tokens in raster order over `grid`.
        memory, memory_pos : Tensor, (B, M, mem_dim)
        grid : (int, int)
            (h, w), rows and columns of the frame's token grid.
        num_obj_ptr_tokens : int

        Returns
        -------
        Tensor, (B, h*w, C)
        """
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, grid, num_obj_ptr_tokens)
        return self.norm(x)


# ---- memory encoder --------------------------------------------------------------------
class MaskDownSampler(nn.Module):
    """Mask (B, 1, S, S) -> (B, C, S/16, S/16): four stride-2 3x3 convolutions (each with
    LayerNorm2d and GELU, channels x4), then a 1x1 projection (keys encoder.N).

    Parameters
    ----------
    dim : int
        C, the output channels.
    layers : int
        Stride-2 convolutions (the total stride is 2 ** layers).
    """

    def __init__(self, dim: int, layers: int = 4) -> None:
        super().__init__()
        mods, c = [], 1
        for _ in range(layers):
            mods += [nn.Conv2d(c, c * 4, 3, stride=2, padding=1), LayerNorm2d(c * 4), nn.GELU()]
            c *= 4
        mods.append(nn.Conv2d(c, dim, 1))
        self.encoder = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Downsample a mask.

        Parameters
        ----------
        x : Tensor, (B, 1, S, S) float

        Returns
        -------
        Tensor, (B, C, S/16, S/16)
        """
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7, LayerNorm, pointwise MLP (x4, GELU), layer scale.

    Parameters
    ----------
    dim : int
        C, the channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual ConvNeXt update.

        Parameters
        ----------
        x : Tensor, (B, C, H, W) float

        Returns
        -------
        Tensor, (B, C, H, W)
        """
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = linear(linear(y, self.pwconv1, "gelu"), self.pwconv2) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """`layers` CXBlocks in a row.

    Parameters
    ----------
    dim : int
        C, the channels.
    layers : int
    """

    def __init__(self, dim: int, layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks.

        Parameters
        ----------
        x : Tensor, (B, C, H, W) float

        Returns
        -------
        Tensor, (B, C, H, W)
        """
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """A frame's features plus its downsampled mask, fused and projected to the memory.

    Parameters
    ----------
    dim : int
        C, the frame features' channels.
    mem_dim : int
        Channels of the memory features.
    """

    def __init__(self, dim: int, mem_dim: int) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(dim)
        self.pix_feat_proj = nn.Conv2d(dim, dim, 1)
        self.fuser = Fuser(dim)
        self.out_proj = nn.Conv2d(dim, mem_dim, 1)
        self.mem_dim = mem_dim

    def forward(self, pix_feat: torch.Tensor, mask: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """pix_feat (B, C, g, g) frame features; mask (B, 1, S, S) mask probabilities
        already scaled as the model wants them. Returns memory features (B, mem_dim, g, g)
        and their sine position encoding (1, mem_dim, g, g).

        Parameters
        ----------
        pix_feat : Tensor, (B, C, g, g) float
        mask : Tensor, (B, 1, S, S) float
            S = 16 g.

        Returns
        -------
        memory : Tensor, (B, mem_dim, g, g)
        pos : Tensor, (1, mem_dim, g, g)
            Same dtype as `memory`.
        """
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(mask)
        x = self.out_proj(self.fuser(x))
        pos = sine_position_encoding(x.shape[-2], x.shape[-1], self.mem_dim, x.device)
        return x, pos.to(x.dtype)
