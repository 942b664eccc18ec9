"""Small building blocks shared by the encoders and the decoder."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

# re-exported: SAM 2's modules import it from here (its home is runtime/kernels.py)
from ..runtime.kernels import linear  # noqa: F401


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor.

    sam_order: in fp32, compute it as SAM's reference does (mean, mean of the centred
    squares, divide by sqrt(var + eps), then the affine), not with the fused `layer_norm`
    kernel. The two differ by an ulp or so per pixel, but the encoder's last norm sets the
    embedding every decoder reads, and micro-sam's instance decoder (whose instance norms
    amplify such per-pixel differences) then differs by ~1e-4 instead of ~2e-6
    (tests/test_unetr_decoder.py). `neck` turns it on; it costs nothing measurable there (one
    (B, 256, 64, 64) tensor per image). Other dtypes always use the fused kernel.

    Parameters
    ----------
    num_channels : int
        C, the number of channels (length of `weight` and `bias`).
    eps : float
        Added to the variance before the square root.
    """

    sam_order = False

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each pixel over its channels.

        Parameters
        ----------
        x : Tensor, (B, C, H, W) float
            Feature map.

        Returns
        -------
        Tensor, (B, C, H, W)
            Normalised, scaled and shifted; same dtype as `x`.
        """
        if self.sam_order and x.dtype == torch.float32:
            u = x.mean(1, keepdim=True)
            d = x - u
            y = d / torch.sqrt(d.pow(2).mean(1, keepdim=True) + self.eps)
            return self.weight[:, None, None] * y + self.bias[:, None, None]
        # normalise in channels-last layout, where layer_norm is one fused kernel (the
        # normalised shape from the weight, a constant when the graph is traced for ONNX)
        c = self.weight.shape[0]
        if torch.jit.is_tracing():
            c = int(c)
        y = F.layer_norm(x.permute(0, 2, 3, 1), (c,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class MLPBlock(nn.Module):
    """Two linear layers with an activation between them (keys lin1, lin2).

    Parameters
    ----------
    dim : int
        Input and output features.
    hidden : int
        Features between the two layers.
    act : type
        Activation module class (GELU and ReLU run fused with the first layer).
    """

    def __init__(self, dim: int, hidden: int, act: type = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()
        self._fused = ("gelu" if act is nn.GELU else "relu" if act is nn.ReLU else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply lin1, the activation and lin2.

        Parameters
        ----------
        x : Tensor, (..., dim) float

        Returns
        -------
        Tensor, (..., dim), dtype of `x`
        """
        fused = getattr(self, "_fused", None)
        if fused and getattr(self.act, "approximate", "none") == "none":
            return linear(linear(x, self.lin1, fused), self.lin2)
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (keys layers.0 ... layers.N-1).

    Parameters
    ----------
    in_dim, hidden, out_dim : int
        Features of the input, between the layers and of the output.
    num_layers : int
        Number of linear layers (>= 1).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the layers (ReLU after all but the last).

        Parameters
        ----------
        x : Tensor, (..., in_dim) float

        Returns
        -------
        Tensor, (..., out_dim), dtype of `x`
        """
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = linear(x, layer, "relu" if i < last else "")
        return x


def neck(in_dim: int, out_dim: int) -> nn.Sequential:
    """1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d: both encoders end with this (the
    norms in SAM's order of operations in fp32, see `LayerNorm2d`).

    Parameters
    ----------
    in_dim, out_dim : int
        Channels in and out.

    Returns
    -------
    nn.Sequential
        Maps (B, in_dim, H, W) to (B, out_dim, H, W).
    """
    norms = [LayerNorm2d(out_dim), LayerNorm2d(out_dim)]
    for n in norms:
        n.sam_order = True
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, 1, bias=False),
        norms[0],
        nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False),
        norms[1],
    )


def pad_to_multiple(x: torch.Tensor, size: int) -> tuple[torch.Tensor, int, int]:
    """Zero-pad a (B, H, W, C) tensor at the bottom and right to multiples of `size`.

    Parameters
    ----------
    x : Tensor, (B, H, W, C)
    size : int
        Window size.

    Returns
    -------
    x : Tensor, (B, Hp, Wp, C)
        Padded (`x` itself when no padding is needed).
    Hp, Wp : int
        Padded height and width.
    """
    h, w = x.shape[1:3]
    ph, pw = (-h) % size, (-w) % size
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    return x, h + ph, w + pw


def to_windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of size -> (B * nH * nW, size, size, C).

    Parameters
    ----------
    x : Tensor, (B, H, W, C)
    size : int
        Window side.

    Returns
    -------
    Tensor, (B * nH * nW, size, size, C)
        Windows in row-major order over the (nH, nW) window grid.
    """
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).transpose(2, 3)
    return x.reshape(-1, size, size, c)


def from_windows(x: torch.Tensor, size: int, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `to_windows` for a padded (h, w) grid.

    Parameters
    ----------
    x : Tensor, (b * nH * nW, size, size, C)
    size : int
        Window side.
    b, h, w : int
        Batch size and the padded height and width (multiples of `size`).

    Returns
    -------
    Tensor, (b, h, w, C)
    """
    c = x.shape[-1]
    x = x.view(b, h // size, w // size, size, size, c).transpose(2, 3)
    return x.reshape(b, h, w, c)


def _spans(n: int, size: int):
    """(first window, number of windows, cells used in each) for the full windows of a
    length-n axis, then for the last, partial one."""
    full, rem = divmod(n, size)
    return ([(0, full, size)] if full else []) + ([(full, 1, rem)] if rem else [])


def grid_to_windows(x: torch.Tensor, dst: torch.Tensor, wh: int, ww: int,
                    fill: torch.Tensor | None = None) -> None:
    """Copy a (B, h, w, *F) grid into `dst`, a (B, nH, wh, nW, ww, *F) view of any strides
    (typically of a (B*nH*nW, ..., wh*ww, ...) window buffer): window partition, padding and
    any reordering of the feature axes in one pass, without an intermediate padded copy.
    Cells of the padded border get `fill` (broadcast to F) when given.

    Parameters
    ----------
    x : Tensor, (B, h, w, *F)
    dst : Tensor, (B, nH, wh, nW, ww, *F)
        Written in place; nH = ceil(h / wh), nW = ceil(w / ww).
    wh, ww : int
        Window height and width.
    fill : Tensor, broadcastable to F, optional
        Value for the padded cells; None leaves them as they are.
    """
    h, w = x.shape[1:3]
    for i0, ni, rh in _spans(h, wh):
        for j0, nj, cw in _spans(w, ww):
            src = x[:, i0 * wh:i0 * wh + ni * rh, j0 * ww:j0 * ww + nj * cw]
            dst[:, i0:i0 + ni, :rh, j0:j0 + nj, :cw].copy_(
                src.unflatten(1, (ni, rh)).unflatten(3, (nj, cw)))
    if fill is not None:
        if h % wh:
            dst[:, -1, h % wh:].copy_(fill)
        if w % ww:
            dst[:, :, :, -1, w % ww:].copy_(fill)


def windows_to_grid(src: torch.Tensor, out: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """Inverse of `grid_to_windows`: `src` is a (B, nH, wh, nW, ww, *F) view, `out` the
    (B, h, w, *F) grid it is copied into (the padded border is dropped).

    Parameters
    ----------
    src : Tensor, (B, nH, wh, nW, ww, *F)
    out : Tensor, (B, h, w, *F)
        Written in place.
    wh, ww : int
        Window height and width.

    Returns
    -------
    Tensor, (B, h, w, *F)
        `out`.
    """
    h, w = out.shape[1:3]
    for i0, ni, rh in _spans(h, wh):
        for j0, nj, cw in _spans(w, ww):
            dst = out[:, i0 * wh:i0 * wh + ni * rh, j0 * ww:j0 * ww + nj * cw]
            dst.unflatten(1, (ni, rh)).unflatten(3, (nj, cw)).copy_(
                src[:, i0:i0 + ni, :rh, j0:j0 + nj, :cw])
    return out
