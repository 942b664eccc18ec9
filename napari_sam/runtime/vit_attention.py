"""The fast form of the ViT encoder's windowed attention (SAM's `Attention` + window
partition), run by `napari_sam.model.image_encoder.Block` inside an `InferenceSession`.

It computes what the module's plain form computes (`tests/test_speed_paths.py` compares
them), with these changes:

- the grid is zero-padded to whole windows with one copy into a zero-bordered scratch grid
  (which also casts to the matmul dtype) and q, k and v go straight from the qkv
  projection's output into one (3, windows, cells, heads, E) buffer: partition, padding and
  head split in one copy, and one copy back, cropped;
- the decomposed relative-position term q.Rh[y, ky] + q.Rw[x, kx] is added in one of two
  ways (`InferenceSession.attention`): "bias": as an additive mask to
  `scaled_dot_product_attention`, in row chunks for large grids; "augmented": folded into
  the dot product -- q' = [q, q.Rh/s, q.Rw/s], k' = [k, onehot(ky), onehot(kx)], v padded
  with zeros to the same width -- so the fused attention kernel runs with no mask and
  nothing of size cells x cells is ever stored ("auto": augmented in bf16 / fp16, where
  matmul units are cheap and memory traffic is not; bias in fp32);
- relative-position tables, the keys' one-hot positions and the buffers are kept by the
  session (in inference) instead of being made for every block and image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels import constant, derived, linear, scratch, zero_bordered
from .session import current

# Above this many query x key pairs per head, the additive-bias path of global attention runs
# in row chunks so the relative-position bias never exists for the whole image at once.
CHUNK_PAIRS = 1024 * 4096
# Largest combined relative-position table (cells x head_dim x (wh + ww) elements) that is
# precomputed; windows use it, a global 64 x 64 grid (33 M elements) does not.
COMBINED_TABLE_MAX = 1 << 22


def use_augmented(dtype: torch.dtype) -> bool:
    """Whether the relative positions are folded into the dot product (see the module).

    Parameters
    ----------
    dtype : torch.dtype
        The matmul dtype ("auto" folds them in bf16 and fp16).

    Returns
    -------
    bool
        True for the augmented path, False for the additive bias.
    """
    s = current()
    path = "auto" if s is None else s.attention
    if path == "auto":
        return dtype in (torch.bfloat16, torch.float16)
    return path == "augmented"


def _key_positions(wh: int, ww: int, width: int, dtype, device) -> torch.Tensor:
    """(wh*ww, width) keys' extra features for the augmented path: one-hot of the key's
    row (first wh columns) and column (next ww), zeros after."""
    def make():
        t = torch.zeros(wh, ww, width, dtype=dtype, device=device)
        t[torch.arange(wh), :, torch.arange(wh)] = 1
        t[:, torch.arange(ww), wh + torch.arange(ww)] = 1
        return t.reshape(wh * ww, width)

    return constant(("key_positions", wh, ww, width, dtype, str(device)), make)


def _augmented_buffer(nb: int, n: int, nh: int, e: int, hd: int, wh: int, ww: int,
                      dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The (3, windows, cells, heads, E) q/k/v buffer of the augmented path with its
    constant parts in place: the keys' one-hot positions and the zero padding of q and v.
    Kept by the session (per thread, per shape) and reused by every block and image: the
    constant parts are written once, and the buffer (57 MB for a ViT-B global block) is not
    allocated and page-faulted in again for each block."""
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


def rel_table(attn, param, size, dtype: torch.dtype, factor: float) -> torch.Tensor:
    """`attn`'s relative-position table of `param` (its `rel_pos_h` or `rel_pos_w`) for a
    side of `size` cells, (size, size, head_dim), times `factor`, in `dtype`; kept by the
    session while the relative-position parameters are unchanged.

    param None, size (wh, ww): the combined (wh*ww, head_dim, wh + ww) table of cell
    t = (y, x): [Rh[y].T | Rw[x].T], for computing both terms in one batched matmul.

    Parameters
    ----------
    attn : Attention
        An encoder attention module.
    param : Tensor or None
        See above.
    size : int or (int, int)
        See above.
    dtype : torch.dtype
    factor : float

    Returns
    -------
    Tensor, (size, size, head_dim) or (wh*ww, head_dim, wh + ww)
    """
    ph, pw = attn.rel_pos_h, attn.rel_pos_w

    def make():
        if param is not None:
            t = attn.rel_tables(size, size)[0 if param is ph else 1]
            return (t * factor).to(dtype)
        wh, ww = size
        th, tw = attn.rel_tables(wh, ww)
        th, tw = th.transpose(1, 2), tw.transpose(1, 2)  # (y, hd, ky), (x, hd, kx)
        hd = th.shape[1]
        t = torch.cat([th[:, None].expand(wh, ww, hd, wh), tw[None].expand(wh, ww, hd, ww)],
                      -1)
        return (t.reshape(wh * ww, hd, wh + ww) * factor).to(dtype)

    key = (None if param is None else param is pw, size, dtype, factor)
    return derived(attn, "rel_table", make, ph, pw, key=key)


def windowed_attention(attn, x: torch.Tensor, window: int) -> torch.Tensor:
    """`attn` (an encoder `Attention`) inside `window` x `window` windows of a (B, h, w, C)
    grid (0: global), padding and partition included: (B, h, w, C) out.

    Parameters
    ----------
    attn : Attention
    x : Tensor, (B, h, w, C)
    window : int
        Window side in tokens (0: one window over the whole grid).

    Returns
    -------
    Tensor, (B, h, w, C)
    """
    b, h, w, c = x.shape
    nh = attn.num_heads
    hd = c // nh
    wh, ww = (window, window) if window else (h, w)
    nH, nW = -(-h // wh), -(-w // ww)
    hp, wp = nH * wh, nW * ww
    n, nb = wh * ww, b * nH * nW
    padded = (hp, wp) != (h, w)
    if padded:
        xp = zero_bordered(b, hp, wp, c, _matmul_dtype(x), x.device)
        xp[:, :h, :w] = x
        x = xp
    qkv = linear(x, attn.qkv)  # (b, hp, wp, 3c)
    dt = qkv.dtype
    aug = use_augmented(dt)
    # the fused CPU kernel is much slower for head widths that are not multiples of 16
    e = -(-(hd + wh + ww) // 16) * 16 if aug else hd
    # token-major (3, windows, cells, heads, E): the copies below move whole tokens; the
    # attention kernel takes the (windows, heads, cells, E) views as they are
    if aug:
        buf = _augmented_buffer(nb, n, nh, e, hd, wh, ww, dt, qkv.device)
    else:
        buf = qkv.new_empty(3, nb, n, nh, e)
    dst = buf[..., :hd].unflatten(1, (b, nH, nW)).unflatten(4, (wh, ww))
    dst = dst.permute(1, 2, 4, 3, 5, 0, 6, 7)  # (b, nH, wh, nW, ww, 3, nh, hd)
    dst.copy_(qkv.view(b, nH, wh, nW, ww, 3, nh, hd))
    # (nb, nh, n, e) each; by indexing, not unbind: autograd allows in-place writes to these
    # views only when each comes from a single-output view op
    q, k, v = (buf[i].transpose(1, 2) for i in range(3))
    qh = q[..., :hd]
    if torch.is_grad_enabled():  # autograd saves it, and `buf` is written to below
        qh = qh.clone()
    qs = qh.unflatten(2, (wh, ww))  # (nb, nh, wh, ww, hd)
    scale = hd ** -0.5
    if aug:
        if n * hd * (wh + ww) <= COMBINED_TABLE_MAX:
            # both terms in one batched matmul over the cells of a window
            t = rel_table(attn, None, (wh, ww), dt, 1 / scale)  # (n, hd, wh + ww)
            qc = qh.permute(2, 0, 1, 3).reshape(n, nb * nh, hd)
            rel = torch.bmm(qc, t).view(n, nb, nh, wh + ww)
            buf[0, ..., hd:hd + wh + ww].transpose(0, 1).copy_(rel)
        else:
            rh = rel_table(attn, attn.rel_pos_h, wh, dt, 1 / scale)
            rw = rel_table(attn, attn.rel_pos_w, ww, dt, 1 / scale)
            q[..., hd:hd + wh].unflatten(2, (wh, ww)).copy_(
                torch.einsum("bnyxc,ykc->bnyxk", qs, rh))
            q[..., hd + wh:hd + wh + ww].unflatten(2, (wh, ww)).copy_(
                torch.einsum("bnyxc,xkc->bnyxk", qs, rw))
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)[..., :hd]
    else:
        rh = rel_table(attn, attn.rel_pos_h, wh, dt, 1.0)
        rw = rel_table(attn, attn.rel_pos_w, ww, dt, 1.0)
        rows = wh if n * n <= CHUNK_PAIRS else max(1, CHUNK_PAIRS // (ww * n))
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
    y = linear(res, attn.proj)  # on the padded grid too: one copy back, not four
    return y[:, :h, :w] if padded else y
