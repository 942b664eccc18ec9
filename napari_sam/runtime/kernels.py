"""The fused CPU kernels, each with its plain fallback, behind one small module.

Model code (`napari_sam.model`) calls these instead of the plain torch ops. The fast forms
run only inside an `InferenceSession` (`napari_sam.runtime.session`), which keeps what they
derive from the weights; without one (and under autograd or torch.compile) each falls back
to the ordinary ops, with the same results (bit-identical in fp32, within bf16 rounding
under bf16 autocast: `tests/test_speed_paths.py` and `tests/test_precision.py` compare
them):

- `linear(x, layer, act, residual)`: under bf16 autocast on CPU one oneDNN call with bias,
  activation or residual fused (`torch.ops.mkldnn._linear_pointwise`), on bf16 weight
  copies kept by the session; elsewhere `F.linear` + activation + residual.
- `stacked_projections(keys, pe, with_pe, plain)`: several projections of one image's
  tokens, some of them of tokens + positional encoding, as one oneDNN matmul with a table
  of the positional terms added in its epilogue; None where that does not apply.
- `derived`, `constant`, `scratch`, `zero_bordered`: the session's stores (see there), or
  a fresh `make()` without one.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .session import caching, current, tensor_state, version  # noqa: F401

_ONEDNN = {"ok": None}

# `linear` inputs with at most this many rows (prompt tokens) run in fp32 under bf16 autocast
SMALL_ROWS = 64


def derived(owner: nn.Module, name: str, make, *tensors, key=None):
    """`make()`, kept by the active session while `tensors` (those it is derived from) are
    unchanged; computed afresh without a session, under autograd or torch.compile.

    Parameters
    ----------
    owner, name, make, *tensors, key
        As for `InferenceSession.derived`.

    Returns
    -------
    object
        What `make()` returns.
    """
    s = caching()
    return make() if s is None else s.derived(owner, name, make, *tensors, key=key)


def constant(key, make):
    """`make()` (a function of shapes only, no autograd), kept by the active session under
    `key`, also while autograd is on (not under torch.compile).

    Parameters
    ----------
    key : tuple
        Starts with a kind name.
    make : callable

    Returns
    -------
    object
        What `make()` returns.
    """
    s = current()
    if s is None or torch.compiler.is_compiling():
        return make()
    return s.constant(key, make)


def scratch(kind: str, key, make):
    """A buffer from `make()`, kept for this thread by the active session and returned
    again for the same key (see `InferenceSession.scratch`); a fresh one otherwise.

    Parameters
    ----------
    kind : str
    key : hashable
    make : callable

    Returns
    -------
    object
        The buffer (usually a Tensor).
    """
    s = caching()
    return make() if s is None else s.scratch(kind, key, make)


def zero_bordered(b: int, h: int, w: int, c: int, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:
    """A (b, h, w, c) grid whose caller fills the top-left part; the rest is zero. Kept and
    reused by the session (per thread, per shape), so only the interior is ever written.

    Parameters
    ----------
    b, h, w, c : int
        The grid's shape.
    dtype : torch.dtype
    device : torch.device

    Returns
    -------
    Tensor, (b, h, w, c)
    """
    return scratch("grids", (b, h, w, c, dtype, str(device)),
                   lambda: torch.zeros(b, h, w, c, dtype=dtype, device=device))


def onednn_bf16(x: torch.Tensor) -> bool:
    """True where the fused oneDNN kernels may run: a session is caching, `x` is on the CPU,
    bf16 autocast is on, and the operator exists.

    Parameters
    ----------
    x : Tensor
        The kernel's input.

    Returns
    -------
    bool
    """
    if _ONEDNN["ok"] is False or x.device.type != "cpu" or caching() is None:
        return False
    if not (torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16):
        return False
    if _ONEDNN["ok"] is None:
        _ONEDNN["ok"] = (torch.backends.mkldnn.is_available()
                         and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
    return bool(_ONEDNN["ok"])


def matmul_input(x: torch.Tensor) -> torch.Tensor:
    """`x` in the dtype the next linear layer computes in: autocast's, when it is on.

    The values are those the layer would have cast itself, so a tensor read by several
    layers is cast once.

    Parameters
    ----------
    x : Tensor
        Any shape.

    Returns
    -------
    Tensor
        `x`, or `x` cast to autocast's dtype (same shape).
    """
    dev = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        if dt != x.dtype:
            return x.to(dt)
    return x


def low_precision_params(layer: nn.Linear, dtype: torch.dtype):
    """`layer`'s weight and bias in `dtype`, kept by the session while the parameters are
    unchanged: casting them again for every image would cost a pass over all weights.

    Parameters
    ----------
    layer : nn.Linear
    dtype : torch.dtype

    Returns
    -------
    weight : Tensor, (out, in)
    bias : Tensor, (out,), or None
    """
    wt, bs = layer.weight, layer.bias
    return derived(layer, "low_precision",
                   lambda: (wt.to(dtype), None if bs is None else bs.to(dtype)),
                   wt, bs, key=dtype)


def linear(x: torch.Tensor, layer: nn.Linear, act: str = "",
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """`residual + act(layer(x))` ("gelu": exact GELU, "relu", "": none; no residual: None).

    Fast form (`onednn_bf16`): one oneDNN call with the bias and the activation (or the
    residual) fused into the matmul: the activation runs in fp32 on the accumulator and is
    rounded to bf16 once, and the output is written once instead of three times. An input
    of at most `SMALL_ROWS` rows (the prompt tokens) runs in fp32 instead, outside
    autocast: a matmul that small costs less than the casts around it, and the tokens keep
    fp32 precision. Plain form, and if the operator fails: `F.linear` + activation +
    residual.

    Parameters
    ----------
    x : Tensor, (..., in)
    layer : nn.Linear
    act : str
    residual : Tensor, (..., out), optional

    Returns
    -------
    Tensor, (..., out)
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


def stacked_projections(owner: nn.Module, keys: torch.Tensor, pe: torch.Tensor | None,
                        with_pe: tuple, plain: tuple):
    """[l(keys + pe') for l in with_pe] + [l(keys) for l in plain], each (1, hw, C_l), as
    one oneDNN matmul of the keys with the stacked weights plus a table of the positional
    terms, pe' @ W.T + bias, added in the matmul's epilogue: no keys + pe pass, no casts,
    one call instead of several. pe: the fp32 (1, C, h, w) encoding (pe' its token-major
    (hw, C) form); the table is computed from it in fp32, rounded to bf16 once and kept by
    the session for `owner` while weights and encoding are unchanged.

    Only for one image's bf16 keys (1, hw, C) in the fast form (`onednn_bf16`) with biased
    layers; otherwise (or if the operator fails) None: the caller takes the plain path.

    Parameters
    ----------
    owner : nn.Module
    keys : Tensor, (1, hw, C) bfloat16
    pe : Tensor, (1, C, h, w) float32, or None
    with_pe, plain : tuple of nn.Linear

    Returns
    -------
    list of Tensor, (1, hw, C_l) bfloat16, or None
        One per layer, `with_pe` first.
    """
    layers = with_pe + plain
    if (pe is None or keys.shape[0] != 1 or keys.dtype != torch.bfloat16
            or any(layer.bias is None for layer in layers) or not onednn_bf16(keys)):
        return None
    pe_key = (pe.untyped_storage().data_ptr(), pe.storage_offset(), tuple(pe.shape),
              pe.stride(), version(pe))

    def make():
        tokens = pe.flatten(2)[0].t().float()  # (hw, C)
        with torch.autocast(keys.device.type, enabled=False):
            table = torch.cat(
                [F.linear(tokens, layer.weight, layer.bias) for layer in with_pe]
                + [layer.bias.float().expand(tokens.shape[0], -1) for layer in plain], dim=1)
        weight = torch.cat([low_precision_params(layer, torch.bfloat16)[0] for layer in layers])
        # holds `pe`: its memory cannot be reused (and its address match) while kept
        return weight, table.to(torch.bfloat16), pe

    weight, table, _ = derived(owner, "stacked_projections", make,
                               *(t for layer in layers for t in (layer.weight, layer.bias)),
                               key=pe_key)
    try:
        y = torch.ops.mkldnn._linear_pointwise.binary(keys[0], table, weight, None, "add")
    except (RuntimeError, NotImplementedError, TypeError):
        return None
    sizes = [layer.out_features for layer in layers]
    return [t[None] for t in y.split(sizes, dim=1)]


# --- attention --------------------------------------------------------------------------

# bf16 attention (`attention`) only for heads at least this wide: with narrower heads the
# score matrix costs as much to exponentiate as to compute, and torch's fused kernel is as
# fast (measured on 2 Zen 4 cores, no AMX: 96-wide heads (Hiera's global blocks) ~10%
# faster in bf16 matmuls, 256-wide (SAM 2's memory attention) 2-3x)
ATTENTION_BF16_MIN_DIM = 96
# ... and at least this many scores in all (windows and heads together; smaller problems:
# the fused one). Hiera's 64-token windows of 96-wide heads (1024 windows) run 2-3x faster
# as two batched bf16 matmuls than through the fused kernel (2 Zen 4 cores, no AMX)
ATTENTION_BF16_MIN_SCORES = 1 << 20
# scores per chunk of query rows, all heads together (bf16: 64 MiB); measured on 2 cores:
# 16x fewer is 20% slower with 96-wide heads (more, smaller matmuls), 2x more no faster
ATTENTION_CHUNK_SCORES = 1 << 25


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for q (B, heads, N, d), k (B, heads, M, d), v (B, heads,
    M, dv) (dv may differ from d); returns (B, heads, N, dv).

    Under bf16 autocast on CPU (inference), for wide heads and many scores (counting every
    window and head of the batch): the scores of a
    chunk of query rows as one bf16 oneDNN matmul, a softmax, and a second bf16 matmul
    (`bf16_attention`): on CPUs with AVX-512 bf16 but no AMX torch's fused kernel runs its
    bf16 matmuls no faster than fp32 ones, these run 1.5-3x faster. Everywhere else
    `F.scaled_dot_product_attention` (fp32 stays exactly torch's).

    Parameters
    ----------
    q, k, v : Tensor
        Shapes as above.

    Returns
    -------
    Tensor, (B, heads, N, dv)
    """
    if (q.shape[-1] >= ATTENTION_BF16_MIN_DIM and onednn_bf16(q)
            and q.shape[:-2].numel() * q.shape[-2] * k.shape[-2] >= ATTENTION_BF16_MIN_SCORES):
        return bf16_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v for q, k, v (B, heads, N, d) and an additive `bias`
    (heads, N, N) shared by the batch (e.g. TinyViT's windows: B windows of N tokens).

    Under bf16 autocast on CPU (inference): the scores as one bf16 matmul, the bias added
    and the softmax taken in fp32, a second bf16 matmul; torch's fused kernel with a mask
    runs 2-6x slower on 64-token windows (no AMX). Elsewhere `F.scaled_dot_product_attention`
    with the bias as its mask, as the plain model runs it.

    Parameters
    ----------
    q, k, v, bias : Tensor
        Shapes as above.

    Returns
    -------
    Tensor, (B, heads, N, dv)
        bfloat16 in the fast form.
    """
    if not onednn_bf16(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
    dt = torch.bfloat16
    b, h, n, d = q.shape
    step = max(1, ATTENTION_CHUNK_SCORES // max(1, h * n * k.shape[-2]))
    with torch.autocast("cpu", enabled=False):
        bias = bias.float()
        qs = _scaled_bf16(q)
        kt = k.to(dt).transpose(-1, -2)
        vv = v.to(dt)
        out = torch.empty(b, h, n, v.shape[-1], dtype=dt, device=q.device)
        for i in range(0, b, step):
            s = torch.matmul(qs[i:i + step], kt[i:i + step]).float().add_(bias)
            out[i:i + step] = torch.matmul(torch.softmax(s, -1).to(dt), vv[i:i + step])
    return out


def _scaled_bf16(q: torch.Tensor) -> torch.Tensor:
    """q / sqrt(d) in bf16, rounded once: a bf16 `q` is scaled in bf16 (torch computes the
    product in fp32 and rounds it, as `(q.float() * scale).to(bf16)` does, one copy fewer)."""
    scale = q.shape[-1] ** -0.5
    return q * scale if q.dtype == torch.bfloat16 else (q.float() * scale).to(torch.bfloat16)


def bf16_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`attention` in bfloat16 matmuls, chunked over query rows (inference only): scores
    rounded to bf16 (relative error 2^-9 of each score), softmax accumulated in fp32 by
    torch, output bf16 (B, heads, N, dv).

    Parameters
    ----------
    q, k, v : Tensor
        As for `attention`.

    Returns
    -------
    Tensor, (B, heads, N, dv) bfloat16
    """
    dt = torch.bfloat16
    b, h, n, d = q.shape
    m = k.shape[-2]
    rows = max(16, min(n, ATTENTION_CHUNK_SCORES // max(1, b * h * m)))
    with torch.autocast("cpu", enabled=False):
        qs = _scaled_bf16(q)
        kt = k.to(dt).transpose(-1, -2).contiguous()  # (B, heads, d, M): no copy per chunk
        vv = v.to(dt)
        if rows >= n:
            return torch.matmul(torch.softmax(torch.matmul(qs, kt), -1), vv)
        out = torch.empty(b, h, n, v.shape[-1], dtype=dt, device=q.device)
        for r in range(0, n, rows):
            s = torch.matmul(qs[:, :, r:r + rows], kt)
            out[:, :, r:r + rows] = torch.matmul(torch.softmax(s, -1), vv)
    return out
