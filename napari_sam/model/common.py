"""Small building blocks shared by the encoders and the decoder."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in channels-last layout, where layer_norm is one fused kernel (the
        # normalised shape from the weight, a constant when the graph is traced for ONNX)
        c = self.weight.shape[0]
        if torch.jit.is_tracing():
            c = int(c)
        y = F.layer_norm(x.permute(0, 2, 3, 1), (c,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


_ONEDNN = {"ok": None}


def version(t: torch.Tensor) -> int:
    """`t._version`, the in-place modification counter; -1 for inference tensors, which have
    none (they cannot be modified outside inference mode)."""
    return -1 if t.is_inference() else t._version


def tensor_state(*tensors) -> tuple:
    """What identifies the current values of `tensors` (None allowed): version counter,
    storage address, device and dtype of each. Equal states: nothing was changed in place
    or replaced."""
    return tuple(None if t is None else (version(t), t.data_ptr(), t.device, t.dtype)
                 for t in tensors)


def derived(owner: nn.Module, name: str, state, make):
    """`make()`, kept on `owner` as `owner.__dict__[name]` (not in its state dict, dropped
    when the model is pickled: see `Sam._TRANSIENT`) and made again when `state` (e.g. a
    `tensor_state` of the parameters it comes from) differs from the stored one.
    Inference only: callers compute afresh while autograd or compilation is on."""
    hit = owner.__dict__.get(name)
    if hit is None or hit[0] != state:
        with torch.no_grad():
            hit = owner.__dict__[name] = (state, make())
    return hit[1]


def _onednn_bf16(x: torch.Tensor) -> bool:
    """True where `linear` may call oneDNN's fused linear: CPU, bf16 autocast, no autograd."""
    if _ONEDNN["ok"] is False or x.device.type != "cpu" or torch.is_grad_enabled():
        return False
    if not (torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16):
        return False
    if torch.compiler.is_compiling():
        return False
    if _ONEDNN["ok"] is None:
        _ONEDNN["ok"] = (torch.backends.mkldnn.is_available()
                         and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
    return bool(_ONEDNN["ok"])


def _low_precision_params(layer: nn.Linear, dtype: torch.dtype):
    """`layer`'s weight and bias in `dtype`, kept on the module (not in its state dict) while
    the parameters are unchanged: casting them again for every image would cost a pass over
    all weights and, on a busy machine, one more parallel region per layer. Inference only
    (the caller checks); `release_caches` drops them."""
    wt, bs = layer.weight, layer.bias
    return derived(layer, "_low_precision", (dtype, tensor_state(wt, bs)),
                   lambda: (wt.to(dtype), None if bs is None else bs.to(dtype)))


def release_caches(module: nn.Module) -> None:
    """Drop the low-precision weight copies kept by `linear` in `module`'s layers."""
    for m in module.modules():
        m.__dict__.pop("_low_precision", None)


# `linear` inputs with at most this many rows (prompt tokens) run in fp32 under bf16 autocast
SMALL_ROWS = 64


def linear(x: torch.Tensor, layer: nn.Linear, act: str = "",
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """`residual + act(layer(x))` ("gelu": exact GELU, "relu", "": none; no residual: None).

    Under bf16 autocast on CPU (inference) this is one oneDNN call with the bias and the
    activation (or the residual) fused into the matmul (`torch.ops.mkldnn._linear_pointwise`,
    what inductor uses): the activation runs in fp32 on the accumulator and is rounded to bf16
    once, and the output is written once instead of three times (bias broadcast, matmul,
    activation). An input of at most `SMALL_ROWS` rows (the prompt tokens) runs in fp32
    instead, outside autocast: a matmul that small costs less than the casts and the oneDNN
    call around it, and the tokens keep fp32 precision. Everywhere else, and if that operator
    is missing or fails, plain `F.linear` + activation + residual.
    """
    if _onednn_bf16(x):
        if x.numel() <= SMALL_ROWS * x.shape[-1]:
            with torch.autocast("cpu", enabled=False):
                return _finish(F.linear(x.float(), layer.weight, layer.bias), act, residual)
        dt = torch.bfloat16
        w, b = _low_precision_params(layer, dt)
        x2 = x.reshape(-1, x.shape[-1]).to(dt)
        try:
            if residual is not None and not act and residual.dtype == dt and (
                    residual.shape[:-1] == x.shape[:-1]):
                y = torch.ops.mkldnn._linear_pointwise.binary(
                    x2, residual.reshape(x2.shape[0], -1), w, b, "add")
                return y.view(*x.shape[:-1], y.shape[-1])
            y = torch.ops.mkldnn._linear_pointwise(x2, w, b, act or "none", [],
                                                   "none" if act else "")
            return _finish(y.view(*x.shape[:-1], y.shape[-1]), "", residual)
        except (RuntimeError, NotImplementedError, TypeError):
            _ONEDNN["ok"] = False
    return _finish(F.linear(x, layer.weight, layer.bias), act, residual)


def _finish(y: torch.Tensor, act: str, residual: torch.Tensor | None) -> torch.Tensor:
    if act == "gelu":
        y = F.gelu(y)
    elif act == "relu":
        y = F.relu(y)
    return y if residual is None else residual + y


class MLPBlock(nn.Module):
    """Two linear layers with an activation between them (keys lin1, lin2)."""

    def __init__(self, dim: int, hidden: int, act: type = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()
        self._fused = ("gelu" if act is nn.GELU else "relu" if act is nn.ReLU else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = getattr(self, "_fused", None)
        if fused and getattr(self.act, "approximate", "none") == "none":
            return linear(linear(x, self.lin1, fused), self.lin2)
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (keys layers.0 ... layers.N-1)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = linear(x, layer, "relu" if i < last else "")
        return x


def neck(in_dim: int, out_dim: int) -> nn.Sequential:
    """1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d: both encoders end with this."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, 1, bias=False),
        LayerNorm2d(out_dim),
        nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False),
        LayerNorm2d(out_dim),
    )


def pad_to_multiple(x: torch.Tensor, size: int) -> tuple[torch.Tensor, int, int]:
    """Zero-pad a (B, H, W, C) tensor at the bottom and right to multiples of `size`."""
    h, w = x.shape[1:3]
    ph, pw = (-h) % size, (-w) % size
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    return x, h + ph, w + pw


def to_windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of size -> (B * nH * nW, size, size, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).transpose(2, 3)
    return x.reshape(-1, size, size, c)


def from_windows(x: torch.Tensor, size: int, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `to_windows` for a padded (h, w) grid."""
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
    Cells of the padded border get `fill` (broadcast to F) when given."""
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
    (B, h, w, *F) grid it is copied into (the padded border is dropped)."""
    h, w = out.shape[1:3]
    for i0, ni, rh in _spans(h, wh):
        for j0, nj, cw in _spans(w, ww):
            dst = out[:, i0 * wh:i0 * wh + ni * rh, j0 * ww:j0 * ww + nj * cw]
            dst.unflatten(1, (ni, rh)).unflatten(3, (nj, cw)).copy_(
                src[:, i0:i0 + ni, :rh, j0:j0 + nj, :cw])
    return out
