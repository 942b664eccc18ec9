"""The fused CPU kernels and the speed state they keep, behind one small module.

Model code (`napari_sam.model`) calls these instead of the plain torch ops; each has a
plain fallback with the same results (bit-identical in fp32, within bf16 rounding under
bf16 autocast; `tests/test_speed_paths.py` and `tests/test_precision.py` compare them):

- `linear(x, layer, act, residual)`: under bf16 autocast on CPU one oneDNN call with bias,
  activation or residual fused (`torch.ops.mkldnn._linear_pointwise`), bf16 weight copies
  kept per layer (`low_precision_params`); elsewhere `F.linear` + activation + residual.
- `derived(owner, name, state, make)` and `tensor_state(...)`: tensors derived from the
  weights, kept on the module and remade when the weights' version counters or addresses
  change (`Sam.invalidate_caches` drops them all).
- `scratch(kind, key, make)` / `zero_bordered(...)`: per-thread buffers reused across
  blocks and images in inference (`clear_workspaces` frees them).
"""

from __future__ import annotations

import threading

import torch
from torch import nn
import torch.nn.functional as F

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
    when the model is pickled: see `napari_sam.model.Sam._TRANSIENT`) and made again when
    `state` (e.g. a `tensor_state` of the parameters it comes from) differs from the stored
    one.
    Inference only: callers compute afresh while autograd or compilation is on."""
    hit = owner.__dict__.get(name)
    if hit is None or hit[0] != state:
        with torch.no_grad():
            hit = owner.__dict__[name] = (state, make())
    return hit[1]


def onednn_bf16(x: torch.Tensor) -> bool:
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


def low_precision_params(layer: nn.Linear, dtype: torch.dtype):
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
    if onednn_bf16(x):
        if x.numel() <= SMALL_ROWS * x.shape[-1]:
            with torch.autocast("cpu", enabled=False):
                return _finish(F.linear(x.float(), layer.weight, layer.bias), act, residual)
        dt = torch.bfloat16
        w, b = low_precision_params(layer, dt)
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


# --- per-thread scratch buffers ---------------------------------------------------------

_WORKSPACE = threading.local()


def clear_workspaces() -> None:
    """Free this thread's cached scratch buffers (attention buffers, zero-bordered grids)."""
    _WORKSPACE.__dict__.clear()


def scratch(kind: str, key, make):
    """`make()`, kept for this thread under (`kind`, `key`) and returned again for the same
    key while inference runs (at most 4 buffers per kind); under autograd or torch.compile a
    fresh `make()` each call. The caller may rely on whatever `make` wrote and it never
    overwrites (constant parts), not on anything else."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return make()
    cache = _WORKSPACE.__dict__.setdefault(kind, {})
    buf = cache.get(key)
    if buf is None:
        if len(cache) >= 4:
            cache.clear()
        buf = cache[key] = make()
    return buf


def zero_bordered(b: int, h: int, w: int, c: int, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:
    """A (b, h, w, c) grid whose caller fills the top-left part; the rest is zero. Kept and
    reused (per thread, per shape) in inference, so only the interior is ever written."""
    return scratch("grids", (b, h, w, c, dtype, str(device)),
                   lambda: torch.zeros(b, h, w, c, dtype=dtype, device=device))


# --- attention --------------------------------------------------------------------------

# bf16 attention (`attention`) only for heads at least this wide: with narrower heads the
# score matrix costs as much to exponentiate as to compute, and torch's fused kernel is as
# fast (measured on 2 Zen 4 cores, no AMX: 96-wide heads (Hiera's global blocks) ~10%
# faster in bf16 matmuls, 256-wide (SAM 2's memory attention) 2-3x)
ATTENTION_BF16_MIN_DIM = 96
# ... and at least this many scores per head (smaller problems, e.g. windows: the fused one)
ATTENTION_BF16_MIN_SCORES = 1 << 20
# scores per chunk of query rows, all heads together (bf16: 64 MiB); measured on 2 cores:
# 16x fewer is 20% slower with 96-wide heads (more, smaller matmuls), 2x more no faster
ATTENTION_CHUNK_SCORES = 1 << 25


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for q (B, heads, N, d), k (B, heads, M, d), v (B, heads,
    M, dv) (dv may differ from d); returns (B, heads, N, dv).

    Under bf16 autocast on CPU (inference), for wide heads and many scores: the scores of a
    chunk of query rows as one bf16 oneDNN matmul, a softmax, and a second bf16 matmul
    (`bf16_attention`): on CPUs with AVX-512 bf16 but no AMX torch's fused kernel runs its
    bf16 matmuls no faster than fp32 ones, these run 1.5-3x faster. Everywhere else
    `F.scaled_dot_product_attention` (fp32 stays exactly torch's)."""
    if (q.shape[-1] >= ATTENTION_BF16_MIN_DIM and onednn_bf16(q)
            and q.shape[-2] * k.shape[-2] >= ATTENTION_BF16_MIN_SCORES):
        return bf16_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def bf16_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`attention` in bfloat16 matmuls, chunked over query rows (inference only): scores
    rounded to bf16 (relative error 2^-9 of each score), softmax accumulated in fp32 by
    torch, output bf16 (B, heads, N, dv)."""
    dt = torch.bfloat16
    b, h, n, d = q.shape
    m = k.shape[-2]
    rows = max(16, min(n, ATTENTION_CHUNK_SCORES // max(1, b * h * m)))
    with torch.autocast("cpu", enabled=False):
        qs = (q.float() * d ** -0.5).to(dt)
        kt = k.to(dt).transpose(-1, -2).contiguous()  # (B, heads, d, M): no copy per chunk
        vv = v.to(dt)
        if rows >= n:
            return torch.matmul(torch.softmax(torch.matmul(qs, kt), -1), vv)
        out = torch.empty(b, h, n, v.shape[-1], dtype=dt, device=q.device)
        for r in range(0, n, rows):
            s = torch.matmul(qs[:, :, r:r + rows], kt)
            out[:, :, r:r + rows] = torch.matmul(torch.softmax(s, -1), vv)
    return out
