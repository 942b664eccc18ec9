"""The fast paths compute what the plain ones compute.

Each speed-up in the model and the predictor is checked against the straightforward
formulation it replaces: the augmented-attention path against the additive-bias path, the
one-copy window partition against pad + reshape, the in-box mask upsampling against
`Sam.upscale_logits` (the reference's postprocessing, see test_parity), the decoder's
small-key attention against `scaled_dot_product_attention`, the oneDNN fused linear
against `F.linear` + GELU. Plus the runtime options: threads, torch.compile fallback.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from testing_utils import randomize_, torch_threads

from napari_sam import device as D
from napari_sam.model import Sam
from napari_sam.model import common
from napari_sam.model import image_encoder as ie
from napari_sam.runtime import kernels, vit_attention
from napari_sam.runtime.session import InferenceSession
from napari_sam.model.config import TEST_VIT
from napari_sam.model.transformer import Attention as DecoderAttention
from napari_sam.predictor import Predictor

TEST_VIT_W5 = TEST_VIT.with_(  # 16x16 grid in 5x5 windows: padded windows
    name="test_vit_w5", encoder=dataclasses.replace(TEST_VIT.encoder, window_size=5,
                                                    global_attn_indexes=(2,)))


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def encode(model, x, path=None, session=None):
    """`model.encode(x)`: plain without `path` / `session`, else inside `session` (default a
    new one whose attention takes `path`)."""
    if path is None and session is None:
        return model.encode(x)
    with session or InferenceSession(model, attention=path):
        return model.encode(x)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def image(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, cfg.image_size * 3 // 4, cfg.image_size, generator=g) * 255


# --- encoder ------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [TEST_VIT, TEST_VIT_W5], ids=lambda c: c.name)
def test_augmented_attention_equals_bias_path_fp32(cfg):
    model = randomize_(Sam(cfg)).eval()
    x = image(cfg)
    session = InferenceSession(model, attention="augmented")
    with torch.no_grad():
        plain = encode(model, x)  # no session
        a = encode(model, x, "bias")
        b = encode(model, x, session=session)
        b2 = encode(model, x, session=session)  # reused buffers give the same result
    assert rel(a, plain) < 1e-6  # the session's bias path: the plain result
    assert rel(b, a) < 1e-5
    assert torch.equal(b, b2)


@pytest.mark.parametrize("cfg", [TEST_VIT, TEST_VIT_W5], ids=lambda c: c.name)
def test_augmented_attention_bf16_close_to_fp32(cfg):
    model = randomize_(Sam(cfg)).eval()
    x = image(cfg)
    with torch.no_grad():
        ref = model.encode(x)
        out = {}
        for path in ("bias", "augmented"):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out[path] = encode(model, x, path).float()
    for path, o in out.items():
        corr = torch.corrcoef(torch.stack([o.flatten(), ref.flatten()]))[0, 1].item()
        print(f"{cfg.name} bf16 {path}: max rel diff {rel(o, ref):.3g}, corr {corr:.6f}")
        assert rel(o, ref) < 0.05 and corr > 0.999
    # the augmented path is no less accurate than the additive bias in bf16
    assert rel(out["augmented"], ref) < 1.5 * rel(out["bias"], ref) + 1e-3


def test_augmented_attention_under_autograd():
    """Training: fresh buffers, gradients flow to the relative-position tables."""
    model = randomize_(Sam(TEST_VIT_W5))
    with InferenceSession(model, attention="augmented") as s:
        model.image_encoder(model.preprocess(image(TEST_VIT_W5))).square().mean().backward()
    assert not s._local()["scratch"]  # nothing kept under autograd
    blk = model.image_encoder.blocks[0].attn
    assert blk.rel_pos_h.grad is not None and blk.rel_pos_h.grad.abs().sum() > 0
    assert blk.rel_pos_w.grad.abs().sum() > 0


def test_workspace_is_per_thread():
    model = randomize_(Sam(TEST_VIT)).eval()
    session = InferenceSession(model, attention="augmented")  # one session, two threads
    x = [image(TEST_VIT, s) for s in range(2)]
    with torch.no_grad():
        expected = [encode(model, v, "augmented") for v in x]
    got = [None, None]

    def run(i):
        with torch.no_grad():
            for _ in range(3):
                got[i] = encode(model, x[i], session=session)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


@pytest.mark.parametrize("h,w,ws", [(16, 16, 4), (16, 16, 5), (13, 9, 4), (7, 7, 7), (6, 11, 8)])
def test_window_copies_match_pad_and_reshape(h, w, ws):
    x = torch.randn(2, h, w, 6)
    padded, hp, wp = common.pad_to_multiple(x, ws)
    expected = common.to_windows(padded, ws)  # (B * nH * nW, ws, ws, C)
    nH, nW = hp // ws, wp // ws
    buf = torch.full((2 * nH * nW, ws * ws, 6), float("nan"))
    dst = buf.unflatten(0, (2, nH, nW)).unflatten(3, (ws, ws)).permute(0, 1, 3, 2, 4, 5)
    common.grid_to_windows(x, dst, ws, ws, fill=torch.zeros(6))
    assert torch.equal(buf.view(-1, ws, ws, 6), expected)
    back = common.windows_to_grid(dst, torch.empty_like(x), ws, ws)
    assert torch.equal(back, x)


def test_relative_tables_are_cached_and_follow_the_weights():
    model = Sam(TEST_VIT)
    attn = model.image_encoder.blocks[0].attn

    def table():
        return vit_attention.rel_table(attn, attn.rel_pos_h, 4, torch.float32, 1.0)

    with torch.no_grad():
        t0 = table()
        assert table() is not t0  # no session
        with InferenceSession(model):
            t1 = table()
            assert table() is t1
            attn.rel_pos_h.add_(1.0)  # an optimiser step: the version changes
            t2 = table()
    assert torch.equal(t0, t1) and t2 is not t1
    assert torch.allclose(t2, ie.relative_table(attn.rel_pos_h.detach(), 4))


# --- decoder ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("nq,nk", [(256, 7), (7, 256)], ids=["few-keys", "few-queries"])
def test_small_attention_matches_sdpa(dtype, nq, nk):
    attn = randomize_(DecoderAttention(64, 4, downsample=2))
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, nq, 64, generator=g).to(dtype)
    k = torch.randn(3, nk, 64, generator=g).to(dtype)
    attn = attn.to(dtype)
    with torch.no_grad():
        with InferenceSession(attn):
            fast = attn(q, k, k)  # block-diagonal heads (runtime.two_way)
            shared = attn(q[:1], k[:1], k[:1])
        plain = attn(q, k, k)  # the module's plain form
        qh, kh, vh = (attn._heads(attn.q_proj(q)), attn._heads(attn.k_proj(k)),
                      attn._heads(attn.v_proj(k)))
        o = F.scaled_dot_product_attention(qh, kh, vh)
        slow = attn.out_proj(o.transpose(1, 2).reshape(3, nq, -1))
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert rel(fast.float(), slow.float()) < tol and rel(plain.float(), slow.float()) < tol
    assert rel(shared.float(), slow[:1].float()) < tol


def test_batched_prompts_equal_one_by_one():
    model = randomize_(Sam(TEST_VIT)).eval()
    pred = Predictor(model, "cpu", "fp32", diameter="off")
    pred.set_image(np.random.default_rng(0).integers(0, 255, (100, 140, 3), dtype=np.uint8))
    pts = torch.tensor([[[10.0, 20.0]], [[200.0, 100.0]], [[64.0, 64.0]]])
    labels = torch.ones(3, 1, dtype=torch.long)
    batch, iou = pred.predict_lowres(pts, labels)
    for i in range(3):
        one, iou1 = pred.predict_lowres(pts[i:i + 1], labels[i:i + 1])
        assert rel(one[0], batch[i]) < 1e-5 and rel(iou1[0], iou[i]) < 1e-5


# --- mask upsampling -----------------------------------------------------------------------

SIZES = [((192, 256), (300, 400)), ((256, 160), (1000, 625)), ((256, 256), (256, 256)),
         ((256, 200), (77, 60)), ((128, 256), (128, 256))]


def lowres(m: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, m, m, generator=g) * 4 - 6  # mostly background ...
    x[0, :, m // 3:m // 2, m // 4:m // 2] += 10        # ... a blob
    x[1, :, :3, -5:] += 12                             # a corner object
    x[2] = torch.randn(1, m, m, generator=g)           # noise: positives everywhere
    x[3] -= 20                                         # nothing
    return x


@pytest.mark.parametrize("input_hw,original_hw", SIZES)
def test_mask_upscaler_matches_upscale_logits(input_hw, original_hw):
    model = Sam(TEST_VIT)
    x = lowres(TEST_VIT.mask_size)
    ref = model.upscale_logits(x, input_hw, original_hw)
    with InferenceSession(model):
        up = model.mask_upscaler(input_hw, original_hw)
        assert model.mask_upscaler(input_hw, original_hw) is up  # kept by the session
    assert model.mask_upscaler(input_hw, original_hw) is not up
    assert rel(up.logits(x), ref) < 1e-5
    masks = up.masks(x)
    expected = ref > 0
    assert masks.shape == expected.shape and masks.dtype == torch.bool
    # equal but for pixels whose logit is within float rounding of the threshold
    differ = masks != expected
    assert differ.float().mean() < 1e-4
    assert ref[differ].abs().max().item() < 1e-4 if differ.any() else True
    assert not masks[3].any()
    for t in (-2.0, 1.5):
        assert ((up.masks(x, t) != (ref > t)).float().mean()) < 1e-4


def test_mask_upscaler_box_only_touches_the_box():
    """Outside the computed block every pixel's support holds no positive low-res logit."""
    model = Sam(TEST_VIT)
    x = torch.full((1, 1, 64, 64), -5.0)
    x[0, 0, 30:33, 40:42] = 5.0
    up = model.mask_upscaler((256, 256), (512, 512))
    m = up.masks(x)[0, 0]
    rows, cols = m.any(1).nonzero(), m.any(0).nonzero()
    assert 230 < rows.min() and rows.max() < 275 and 310 < cols.min() and cols.max() < 345
    assert torch.equal(m, (model.upscale_logits(x, (256, 256), (512, 512)) > 0)[0, 0])


def test_predict_masks_equal_upscaled_logits():
    model = randomize_(Sam(TEST_VIT)).eval()
    pred = Predictor(model, "cpu", "fp32", diameter="off")
    rng = np.random.default_rng(1)
    pred.set_image(rng.integers(0, 255, (300, 170, 3), dtype=np.uint8))
    for pt in ([150, 80], [10, 160], [299, 0]):
        masks, scores, logits = pred.predict(points=[pt], point_labels=[1])
        full = pred.upscale(torch.as_tensor(logits)[None])[0]
        assert masks.shape == (3, 300, 170) and masks.dtype == bool
        assert (masks != (full > 0).numpy()).mean() < 1e-4


def test_upscale_logits_skips_identity_resize():
    model = Sam(TEST_VIT)
    x = lowres(TEST_VIT.mask_size)
    s = TEST_VIT.image_size
    out = model.upscale_logits(x, (s, s), (s, s))
    expected = F.interpolate(x, (s, s), mode="bilinear", align_corners=False)
    assert torch.equal(out, expected)


# --- fused linear ----------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["", "gelu", "relu"])
def test_fused_linear_matches_plain(act):
    lin = randomize_(torch.nn.Linear(48, 96))
    x = torch.randn(2, 5, 48)
    plain = F.linear(x, lin.weight, lin.bias)
    plain = {"": plain, "gelu": F.gelu(plain), "relu": F.relu(plain)}[act]
    with torch.no_grad(), InferenceSession(lin):
        assert rel(kernels.linear(x, lin, act), plain) < 1e-6  # fp32: plain F.linear
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = kernels.linear(x, lin, act)
            big = kernels.linear(x.repeat(1, 30, 1), lin, act)  # > SMALL_ROWS: oneDNN
            w_bf16 = kernels.low_precision_params(lin, torch.bfloat16)[0]
            assert kernels.low_precision_params(lin, torch.bfloat16)[0] is w_bf16  # kept
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain_bf16 = kernels.linear(x.repeat(1, 30, 1), lin, act)  # no session: F.linear
    assert fast.shape == plain.shape and big.dtype == torch.bfloat16
    assert rel(fast.float(), plain) < 2e-2
    assert rel(big.float(), plain.repeat(1, 30, 1)) < 2e-2
    assert rel(big.float(), plain_bf16.float()) < 2e-2


def test_fused_linear_residual_matches_plain():
    lin = randomize_(torch.nn.Linear(48, 48))
    x, res = torch.randn(2, 100, 48), torch.randn(2, 100, 48)
    plain = res + F.linear(x, lin.weight, lin.bias)
    with torch.no_grad(), InferenceSession(lin), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = kernels.linear(x, lin, residual=res.bfloat16())
    assert fast.dtype == torch.bfloat16 and rel(fast.float(), plain) < 2e-2


def test_scratch_buffers_are_kept_in_inference_only():
    made = []

    def make():
        made.append(torch.zeros(3))
        return made[-1]

    session = InferenceSession(torch.nn.Linear(2, 2))
    with torch.no_grad(), session:
        first = kernels.scratch("test", ("k", 3), make)
        assert kernels.scratch("test", ("k", 3), make) is first and len(made) == 1
        assert kernels.zero_bordered(1, 2, 2, 1, torch.float32, first.device) is \
            kernels.zero_bordered(1, 2, 2, 1, torch.float32, first.device)
    with torch.no_grad():  # no session
        assert kernels.scratch("test", ("k", 3), make) is not first and len(made) == 2
    with torch.enable_grad(), session:
        assert kernels.scratch("test", ("k", 3), make) is not first and len(made) == 3
    session.invalidate()
    with torch.no_grad(), session:
        assert kernels.scratch("test", ("k", 3), make) is not first and len(made) == 4


# --- runtime options -------------------------------------------------------------------------

def test_configure_threads(monkeypatch):
    old = torch.get_num_threads()
    try:
        assert D.configure_threads(1) == 1 and torch.get_num_threads() == 1
        # the user chose a count (differs from the one at import): left alone
        monkeypatch.setattr(D, "_STARTUP_THREADS", 7)
        assert D.configure_threads() == 1
        monkeypatch.setenv("NAPARI_SAM_NUM_THREADS", "1")
        assert D.configure_threads() == 1
        monkeypatch.delenv("NAPARI_SAM_NUM_THREADS")
        # nobody chose: torch's default count at import and now -> every available CPU
        monkeypatch.setattr(D, "_STARTUP_THREADS", torch.get_num_threads())
        monkeypatch.setattr(D, "_torch_default_threads", torch.get_num_threads)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        assert D.configure_threads() == max(1, D.available_cores())
    finally:
        torch.set_num_threads(old)


def test_compile_failure_falls_back_with_a_warning(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    model = randomize_(Sam(TEST_VIT)).eval()
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    eager = Predictor(model, "cpu", "fp32", diameter="off").set_image(img).features
    pred = Predictor(model, "cpu", "fp32", compile=True, diameter="off")
    with pytest.warns(RuntimeWarning, match="torch.compile"):
        feats = pred.set_image(img).features
    assert torch.equal(feats, eager)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred.set_image(img)  # no second warning, eager from now on


def test_nothing_requires_a_gpu():
    assert D.resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            D.resolve_device("cuda")


@pytest.mark.parametrize("hw", [(256, 256), (192, 256), (256, 100)])
def test_mask_upscaler_without_second_resize_is_exact(hw):
    """Image = model input (no second resize): crops resized by the integer factor give the
    whole-frame resize bit for bit, at the borders too."""
    model = Sam(TEST_VIT)
    m = TEST_VIT.mask_size
    x = torch.full((5, 1, m, m), -3.0)
    x[0, 0, 0:2, 0:3] = 4.0           # top-left corner
    x[1, 0, -2:, -1:] = 4.0           # bottom-right corner of the frame (maybe padding)
    x[2, 0, 20:23, 30:31] = 4.0       # inside
    x[3] = torch.randn(1, m, m)       # everywhere
    ref = model.upscale_logits(x, hw, hw)
    with InferenceSession(model):
        up = model.mask_upscaler(hw, hw)
    assert up.factor == TEST_VIT.image_size // m
    assert torch.equal(up.logits(x), ref)
    for i in range(5):  # one by one: each mask's own box
        assert torch.equal(up.masks(x[i]), ref[i] > 0)
    assert torch.equal(up.masks(x[:3, 0]), ref[:3, 0] > 0)  # together: their union box
    assert torch.equal(up.masks(x[:, 0], 0.5), ref[:, 0] > 0.5)  # more than UNION_MAX


def model_key(model, emb):
    from napari_sam.runtime.two_way import _ImageKey

    return _ImageKey(emb, model)


def test_decoder_first_block_cache_follows_the_embedding():
    """The first block's image-side projections are reused per embedding; an in-place change
    of the embedding, another embedding, or new weights are not served from the cache."""
    model = randomize_(Sam(TEST_VIT)).eval()
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1, 64, 16, 16, generator=g)
    pts = (torch.tensor([[[30.0, 40.0]]]), torch.ones(1, 1, dtype=torch.long))

    session = InferenceSession(model)

    def cached(e):
        with session:
            return model.decode(e, pts)[0]

    def uncached(e):
        with InferenceSession(model):  # a new session: nothing kept yet
            return model.decode(e, pts)[0]

    with torch.no_grad():
        first = cached(emb)
        assert session.image_cache("first_block", model_key(model, emb)) is not None
        assert torch.equal(cached(emb), first)
        assert rel(first, uncached(emb)) < 1e-6
        assert rel(first, model.decode(emb, pts)[0]) < 1e-5  # the plain form
        emb.mul_(1.5)
        assert session.image_cache("first_block", model_key(model, emb)) is None
        assert rel(cached(emb), uncached(emb)) < 1e-6
        other = torch.randn(1, 64, 16, 16, generator=g)
        assert rel(cached(other), uncached(other)) < 1e-6
        model.mask_decoder.transformer.layers[0].cross_attn_token_to_image.k_proj.weight.mul_(0.5)
        assert rel(cached(other), uncached(other)) < 1e-6


def test_cached_constants_do_not_depend_on_the_first_callers_precision():
    """A bf16 predictor first, then an fp32 one on the same model: the fp32 results are those
    of a fresh model (no constant cached in bf16 leaks into fp32)."""
    model = randomize_(Sam(TEST_VIT)).eval()
    fresh = randomize_(Sam(TEST_VIT)).eval()
    img = np.random.default_rng(0).integers(0, 255, (120, 90, 3), dtype=np.uint8)
    Predictor(model, "cpu", "bf16", diameter="off").set_image(img)
    low = Predictor(model, "cpu", "bf16", diameter="off")
    low.set_image(img)
    low.predict(points=[[60, 40]])
    a = Predictor(model, "cpu", "fp32", session=low.session, diameter="off")  # bf16's session
    a.set_image(img)
    b = Predictor(fresh, "cpu", "fp32", diameter="off")
    b.set_image(img)
    assert torch.equal(a.get_embedding().features, b.get_embedding().features)
    la, lb = a.predict(points=[[60, 40]])[2], b.predict(points=[[60, 40]])[2]
    assert np.array_equal(la, lb)
