"""Predictor and decoder fast paths of the click: each gives what the plain computation gives.

- `predict`'s masks (thresholded by numpy inside the box of positives) equal
  `upscale_masks` and, when the image is the model input, `upscale_logits(...) > 0` bit for bit.
- The decoder computes only the masks it returns: the values of computing all of them
  (up to float rounding).
- bf16 on CPU: the fused image-side projections (positional terms from a cached table) and
  the fused residual agree with the plain bf16 computation, and their cache follows in-place
  changes of the weights.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from testing_utils import randomize_, torch_threads

from napari_sam.model import Sam
from napari_sam.model.config import TEST_VIT
from napari_sam.runtime import two_way
from napari_sam.runtime.session import InferenceSession
from napari_sam.predictor import Predictor


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def lowres(n: int, m: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m, m, generator=g) * 3 - 4
    x[0, m // 3:m // 2, m // 4:m // 2] += 12  # a blob
    if n > 1:
        x[1] = torch.randn(m, m, generator=g)  # noise: positives everywhere
    if n > 2:
        x[2] -= 30  # nothing
    return x


@pytest.mark.parametrize("hw", [(256, 256), (192, 256), (300, 170), (90, 600)])
@pytest.mark.parametrize("n", [3, 6])
def test_masks_numpy_equal_upscale_masks(hw, n):
    pred = Predictor(randomize_(Sam(TEST_VIT)).eval(), "cpu", "fp32", diameter="off")
    pred.set_image(np.random.default_rng(0).integers(0, 255, hw + (3,), dtype=np.uint8))
    x = lowres(n, TEST_VIT.mask_size)
    for t in (0.0, -1.5, 2.0):
        got = pred._masks_numpy(x, t)
        assert got.dtype == bool and got.shape == (n,) + hw
        assert np.array_equal(got, pred.upscale_masks(x, t).numpy())
    if hw[0] <= 256 and hw[1] <= 256 and max(hw) == 256:  # image = model input: exact
        assert np.array_equal(pred._masks_numpy(x), (pred.upscale(x[None])[0] > 0).numpy())


def test_predict_returns_the_thresholded_upscaled_logits():
    pred = Predictor(randomize_(Sam(TEST_VIT)).eval(), "cpu", "fp32", diameter="off")
    pred.set_image(np.random.default_rng(1).integers(0, 255, (256, 192, 3), dtype=np.uint8))
    for pt in ([128, 96], [5, 180], [255, 0]):
        masks, _, logits = pred.predict(points=[pt], point_labels=[1])
        full = pred.upscale(torch.as_tensor(logits)[None])[0]
        assert np.array_equal(masks, (full > 0).numpy())


def test_decoder_computes_only_the_returned_masks():
    model = randomize_(Sam(TEST_VIT)).eval()
    emb = torch.randn(1, 64, 16, 16, generator=torch.Generator().manual_seed(2))
    sparse, dense = model.prompt_encoder((torch.tensor([[[30.0, 40.0]]]), torch.ones(1, 1)))
    pe = model.prompt_encoder.get_dense_pe()
    dec = model.mask_decoder
    with torch.no_grad():
        masks, iou = dec.predict_masks(emb, pe, sparse, dense)
        for multimask, which in ((True, slice(1, None)), (False, slice(0, 1))):
            m, s = dec(emb, pe, sparse, dense, multimask)
            # a matmul with fewer output columns may round differently, nothing more
            torch.testing.assert_close(m, masks[:, which], rtol=1e-5, atol=1e-5)
            assert torch.equal(s, iou[:, which])


def _bf16_decode(model, emb, pts, session=None):
    """bf16 decoding: plain without a session, the fast paths inside `session`."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        if session is None:
            return model.decode(emb, pts)[0].float()
        with session:
            return model.decode(emb, pts)[0].float()


def test_bf16_fused_paths_agree_with_the_plain_bf16_decoder(monkeypatch):
    model = randomize_(Sam(TEST_VIT), seed=4).eval()
    emb = torch.randn(1, 64, 16, 16, generator=torch.Generator().manual_seed(3))
    pts = (torch.tensor([[[100.0, 60.0]]]), torch.ones(1, 1, dtype=torch.long))
    with torch.no_grad():
        ref = model.decode(emb, pts)[0]  # fp32
    fused = _bf16_decode(model, emb, pts, InferenceSession(model))
    plain = _bf16_decode(model, emb, pts)  # no session: no fused kernel at all
    monkeypatch.setattr(two_way, "stacked_projections", lambda *a: None)
    linear_only = _bf16_decode(model, emb, pts, InferenceSession(model))
    scale = ref.abs().max()
    for fast in (fused, linear_only):
        assert not torch.equal(fast, plain)  # the fast paths ran
        assert (fast - plain).abs().max() / scale < 0.03
        assert (fast - ref).abs().max() <= 1.5 * (plain - ref).abs().max() + 1e-3 * scale


def test_cached_image_projections_follow_the_weights():
    model = randomize_(Sam(TEST_VIT), seed=5).eval()
    emb = torch.randn(1, 64, 16, 16, generator=torch.Generator().manual_seed(6))
    pts = (torch.tensor([[[80.0, 120.0]]]), torch.ones(1, 1, dtype=torch.long))
    session = InferenceSession(model)
    _bf16_decode(model, emb, pts, session)  # fills the caches
    tr = model.mask_decoder.transformer
    with torch.no_grad():
        tr.final_attn_token_to_image.k_proj.weight.mul_(0.5)
        tr.layers[1].cross_attn_image_to_token.q_proj.bias.add_(0.3)
    fresh = copy.deepcopy(model)
    assert torch.equal(_bf16_decode(model, emb, pts, session),
                       _bf16_decode(fresh, emb, pts, InferenceSession(fresh)))


def test_prompts_decoded_in_chunks_equal_one_batch():
    """The CPU decodes a few prompts per model call (cache-sized chunks); the answers are
    those of one call with every prompt, and SAM-sized decoders get smaller chunks (larger
    ones for a caller that tuned the allocator). The default depends on the model only."""
    from napari_sam.model.registry import get_config
    from napari_sam.predictor import cpu_decode_chunk

    vit_b, bundled = get_config("vit_b"), get_config("bundled")
    assert cpu_decode_chunk(vit_b) == cpu_decode_chunk(vit_b, tuned_allocator=False) == 8
    assert cpu_decode_chunk(vit_b, tuned_allocator=True) == 32
    assert cpu_decode_chunk(bundled, tuned_allocator=False) == 64
    assert cpu_decode_chunk(bundled, tuned_allocator=True) == 64
    torch.manual_seed(0)
    model = Sam(TEST_VIT)
    randomize_(model)
    assert Predictor(model, device="cpu").decode_chunk == cpu_decode_chunk(TEST_VIT)
    assert Predictor(model, device="cpu", decode_chunk=None).decode_chunk is None
    assert Predictor(model, device="cpu", decode_chunk=np.int64(3)).decode_chunk == 3
    for bad in (0, -2, 2.5, "8", True):
        with pytest.raises(ValueError, match="decode_chunk"):
            Predictor(model, device="cpu", decode_chunk=bad)
    pred = Predictor(model, device="cpu", precision="fp32", diameter="off")
    pred.set_image(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    xy = torch.rand(13, 1, 2) * 60
    labels = torch.ones(13, 1, dtype=torch.long)
    pred.decode_chunk = None
    whole = pred.predict_lowres(xy, labels, multimask=True)
    pred.decode_chunk = 5
    chunked = pred.predict_lowres(xy, labels, multimask=True)
    for a, b in zip(whole, chunked):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
