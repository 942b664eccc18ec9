"""SAM 2.1's CPU fast path (bf16) against its fp32 path.

- `kernels.attention`: fp32 is exactly torch's fused attention; under bf16 autocast the
  chunked bf16 attention agrees with fp32 attention to the rounding of bf16 (each of q, k,
  v, the scores, the softmax weights and the output rounded to 8 bits of mantissa: about
  2^-9 relative each; the bound below is 2e-2 of the largest output).
- Hiera's query pooling from the qkv projection's strided view equals max_pool2d on a
  contiguous copy, odd grids included (the odd row / column dropped).
- memory attention: the values projected after the attention (64-wide memory, 256-wide
  heads) give the fp32 result of projecting them first.
- video propagation: masks of the bf16 path (bf16 attention forced on for the small test
  sizes) overlap the fp32 path's with IoU >= 0.98 on every frame, on a random-weight model
  whose masks are neither empty nor full.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from testing_utils import randomize_

from napari_sam.model.sam2 import Sam2
from napari_sam.model.sam2.memory import RoPEAttention
from napari_sam.runtime import kernels
from napari_sam.video_predictor import VideoPredictor


def _qkv(shape_q, m, dv, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, h, n, d = shape_q
    return (torch.randn(b, h, n, d, generator=g), torch.randn(b, h, m, d, generator=g),
            torch.randn(b, h, m, dv, generator=g))


@pytest.fixture
def force_bf16_attention(monkeypatch):
    """The bf16 kernel for any size (the defaults keep it for large problems only), in
    chunks of a few rows so that the chunk loop runs."""
    monkeypatch.setattr(kernels, "ATTENTION_BF16_MIN_DIM", 1)
    monkeypatch.setattr(kernels, "ATTENTION_BF16_MIN_SCORES", 0)
    monkeypatch.setattr(kernels, "ATTENTION_CHUNK_SCORES", 4096)


@pytest.mark.parametrize("b, h, w", [(3, 8, 8), (2, 7, 9), (1, 14, 14), (2, 5, 6)])
def test_query_pooling_equals_max_pool(b, h, w):
    from napari_sam.model.sam2.hiera import _pool, _pool_queries

    qkv = torch.randn(b, h * w, 3, 2, 48, generator=torch.Generator().manual_seed(h * w))
    q = qkv.unbind(2)[0]  # (B, hw, heads, d), strided as in the model
    want = F.max_pool2d(q.reshape(b, h, w, -1).permute(0, 3, 1, 2), 2, 2).permute(0, 2, 3, 1)
    got = _pool_queries(q, h, w)
    assert got.shape == (b, h // 2, w // 2, 96)
    assert torch.equal(got, want) and torch.equal(got, _pool(q.reshape(b, h, w, -1)))


def test_attention_fp32_is_torch_sdpa():
    q, k, v = _qkv((2, 3, 70, 32), 90, 32)
    with torch.no_grad():
        torch.testing.assert_close(kernels.attention(q, k, v),
                                   F.scaled_dot_product_attention(q, k, v), rtol=0, atol=0)


@pytest.mark.parametrize("dv", [128, 64])
def test_bf16_attention_close_to_fp32(force_bf16_attention, dv):
    q, k, v = _qkv((1, 2, 300, 128), 500, dv)
    with torch.no_grad():
        ref = F.scaled_dot_product_attention(q, k, v)
        qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
        fused = F.scaled_dot_product_attention(qb, kb, vb).float()  # torch's bf16 kernel
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = kernels.attention(qb, kb, vb)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    scale = ref.abs().max()
    err = float((out.float() - ref).abs().max() / scale)
    err_fused = float((fused - ref).abs().max() / scale)
    print(f"bf16 attention, dv {dv}: max error {err:.1e} of max |output| "
          f"(torch's fused bf16 kernel: {err_fused:.1e})")
    # bf16 really ran (not fp32), and is close: the scores and the softmax weights are
    # rounded to bf16 too, which torch's fused kernel keeps in fp32 (1.3-3x its error
    # over seeds and sizes)
    assert 1e-4 < err <= 2e-2 and err <= 4 * err_fused


@pytest.mark.parametrize("heads", [1, 2])
def test_values_projected_after_attention_equal_before(heads):
    torch.manual_seed(0)
    att = randomize_(RoPEAttention(256, num_heads=heads, kv_in_dim=64), seed=3).eval()
    q = torch.randn(1, 64, 256)
    mem = torch.randn(1, 2 * 64 + 8, 64)
    with torch.no_grad():
        fast = att(q, mem + 1, mem, (8, 8), num_k_exclude_rope=8)
        # the plain order: project the values, attend, project out
        qh = att._heads(att.q_proj(q))
        kh = att._heads(att.k_proj(mem + 1))
        cos, sin = att._angles(256 // heads, (8, 8), q.device)
        from napari_sam.model.sam2.memory import apply_rope

        qh = apply_rope(qh, cos, sin)
        kh = torch.cat([apply_rope(kh[:, :, :128], cos, sin), kh[:, :, 128:]], 2)
        vh = att._heads(att.v_proj(mem))
        plain = att.out_proj(F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2)
                             .reshape(1, 64, 256))
    assert float((fast - plain).abs().max() / plain.abs().max()) <= 1e-5


def _clip(n=6, size=96, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(50, 110, (n, size, size, 3), dtype=np.uint8)
    for t in range(n):
        frames[t, 30:60, 20 + 4 * t:50 + 4 * t] = 230
    return frames


def _masks(model, frames, precision):
    vp = VideoPredictor(model, frames, device="cpu", precision=precision)
    vp.add_prompt(0, 1, points=[[45, 35]])
    return {t: logits[0] > 0 for t, _, logits in vp.propagate()}


def test_video_bf16_masks_agree_with_fp32(force_bf16_attention, one_thread):
    from sam2_reference import micro_config

    model = randomize_(Sam2(micro_config()), seed=5).eval()
    with torch.no_grad():  # objects present: masks of -1024 everywhere would agree trivially
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(4.0)
    frames = _clip()
    calls = []
    real = kernels.bf16_attention
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "bf16_attention", lambda *a: calls.append(1) or real(*a))
        fast = _masks(model, frames, "bf16")
    exact = _masks(model, frames, "fp32")
    assert calls, "the bf16 attention kernel did not run"
    assert sorted(fast) == sorted(exact) == list(range(len(frames)))
    ious = []
    for t in exact:
        a, b = fast[t], exact[t]
        assert 0.02 < b.mean() < 0.98, f"frame {t}: a trivial mask ({b.mean():.2f} foreground)"
        ious.append((a & b).sum() / (a | b).sum())
    print("bf16 vs fp32 mask IoU per frame:", [round(float(i), 4) for i in ious])
    assert min(ious) >= 0.98
