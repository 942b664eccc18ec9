"""Reduced precision: the `precision` option, and how far bf16 results agree with fp32.

- `resolve_precision` and the Predictor honour "auto" / "fp32" / "bf16" / "fp16".
- A random-weight small ViT: bf16 (and fp16) image embeddings and mask logits against fp32,
  agreement printed (`-s`) and bounded.
- "auto" on CPU: the decoder of a small model (the bundled one) runs in fp32, of a large one
  (SAM ViT-B/L/H) in bf16 like the encoder.
- The bundled model over the synthetic held-out set: masks from "auto" and from "bf16" agree
  with fp32 masks (mean IoU >= 0.98) for one-click and box prompts. Skipped while the
  bundled weights are not there (they are trained separately).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from testing_utils import randomize_, torch_threads

from napari_sam import device as D
from napari_sam.model import Sam
from napari_sam.model.config import (BUNDLED, MOBILE_SAM, SAM_VIT_B, SAM_VIT_H, TEST_TINY_VIT,
                                     TEST_VIT)
from napari_sam.model.registry import BUNDLED_PATH
from napari_sam.predictor import Predictor

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


def agreement(x: torch.Tensor, ref: torch.Tensor) -> dict:
    x, ref = x.double().flatten(), ref.double().flatten()
    return {"corr": torch.corrcoef(torch.stack([x, ref]))[0, 1].item(),
            "max_rel": ((x - ref).abs().max() / ref.abs().max()).item(),
            "iou": iou((x > 0).numpy(), (ref > 0).numpy())}


# --- the option --------------------------------------------------------------------------

def test_resolve_precision(monkeypatch):
    assert D.resolve_precision("fp32", CPU) == torch.float32
    assert D.resolve_precision("bf16", CPU) == torch.bfloat16
    assert D.resolve_precision("fp16", CPU) == torch.float16
    monkeypatch.setattr(D, "cpu_has_fast_bf16", lambda: True)
    assert D.resolve_precision("auto", CPU) == torch.bfloat16
    monkeypatch.setattr(D, "cpu_has_fast_bf16", lambda: False)
    assert D.resolve_precision("auto", CPU) == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        D.resolve_precision("half", CPU)


def test_resolve_decoder_precision(monkeypatch):
    for name in ("fp32", "bf16", "fp16"):  # named precisions: the decoder runs in them too
        for cfg in (BUNDLED, SAM_VIT_B):
            assert D.resolve_decoder_precision(name, CPU, cfg) == D.resolve_precision(name, CPU)
    monkeypatch.setattr(D, "cpu_has_fast_bf16", lambda: True)
    for cfg in (SAM_VIT_B, SAM_VIT_H, MOBILE_SAM):  # 64 x 64 x 256 image tokens: bf16 pays
        assert D.resolve_decoder_precision("auto", CPU, cfg) == torch.bfloat16
    for cfg in (BUNDLED, TEST_VIT, TEST_TINY_VIT):  # small decoders: fp32, as fast and closer
        assert D.resolve_decoder_precision("auto", CPU, cfg) == torch.float32
    monkeypatch.setattr(D, "cpu_has_fast_bf16", lambda: False)
    assert D.resolve_decoder_precision("auto", CPU, SAM_VIT_B) == torch.float32


def test_predictor_auto_runs_a_small_decoder_in_fp32(monkeypatch):
    monkeypatch.setattr(D, "cpu_has_fast_bf16", lambda: True)
    model = randomize_(Sam(TEST_VIT)).eval()
    seen = {}

    def spy(fn):
        def wrapped(*a, **k):
            seen[fn.__name__] = torch.get_autocast_dtype("cpu") \
                if torch.is_autocast_enabled("cpu") else torch.float32
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(model, "encode", spy(model.encode))
    monkeypatch.setattr(model, "decode", spy(model.decode))
    pred = Predictor(model, "cpu", "auto", diameter="off")
    assert (pred.dtype, pred.decoder_dtype) == (torch.bfloat16, torch.float32)
    pred.set_image(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    pred.predict(points=[[30, 30]])
    assert seen == {"encode": torch.bfloat16, "decode": torch.float32}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_resolve_precision_cuda():
    dt = D.resolve_precision("auto", torch.device("cuda"))
    assert dt in (torch.bfloat16, torch.float16)


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                             ("fp16", torch.float16)])
def test_predictor_runs_encoder_and_decoder_at_its_precision(monkeypatch, precision, dtype):
    model = randomize_(Sam(TEST_VIT)).eval()
    seen = {}

    def spy(name, fn):
        def wrapped(*a, **k):
            seen[name] = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") \
                else torch.float32
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(model, "encode", spy("encode", model.encode))
    monkeypatch.setattr(model, "decode", spy("decode", model.decode))
    pred = Predictor(model, "cpu", precision, diameter="off")
    assert pred.dtype == dtype
    emb = pred.set_image(np.random.default_rng(0).integers(0, 255, (80, 60, 3), np.uint8))
    assert emb.features.dtype == torch.float32  # stored as float32 whatever the precision
    masks, scores, logits = pred.predict(points=[[40, 30]], point_labels=[1])
    assert seen == {"encode": dtype, "decode": dtype}
    assert masks.dtype == bool and scores.dtype == np.float32 and logits.dtype == np.float32
    assert np.isfinite(logits).all()


# --- random weights: logits agreement -----------------------------------------------------

@pytest.mark.parametrize("cfg", [TEST_VIT, TEST_TINY_VIT], ids=lambda c: c.name)
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_random_weights_reduced_precision_logits(cfg, precision):
    model = randomize_(Sam(cfg), seed=3).eval()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    pts = rng.uniform(10, cfg.image_size - 10, (6, 2))
    ref, low = Predictor(model, "cpu", "fp32", diameter="off"), Predictor(model, "cpu", precision, diameter="off")
    e32, elo = ref.set_image(img).features, low.set_image(img).features
    lg32 = torch.cat([torch.as_tensor(ref.predict(points=[p])[2]) for p in pts])
    lglo = torch.cat([torch.as_tensor(low.predict(points=[p])[2]) for p in pts])
    emb, lg = agreement(elo, e32), agreement(lglo, lg32)
    print(f"{cfg.name} {precision} vs fp32: embedding corr {emb['corr']:.6f} max rel "
          f"{emb['max_rel']:.3g}; mask logits corr {lg['corr']:.6f} max rel {lg['max_rel']:.3g} "
          f"low-res mask IoU {lg['iou']:.4f}")
    assert emb["corr"] > 0.999 and emb["max_rel"] < 0.05
    assert lg["corr"] > 0.995 and lg["iou"] > 0.95


# --- the bundled model on the held-out set --------------------------------------------------

@pytest.mark.skipif(not BUNDLED_PATH.is_file(),
                    reason="bundled weights not trained yet (napari_sam/weights/bundled.pt)")
def test_bundled_reduced_precision_masks_agree_with_fp32_on_heldout():
    """The goal (issue 7): masks of "auto" (what users get) and of "bf16" agree with fp32
    masks, mean IoU >= 0.98 over clicks (the mask a user gets) and boxes. Measured with the
    weights of 2026-11-23: auto (bf16 encoder, fp32 decoder) 0.994 / 0.994, bf16 0.990 /
    0.987. On a CPU without fast bf16 "auto" is fp32 and agrees exactly."""
    from napari_sam.model import load_model
    from napari_sam.training.evaluate import heldout_set
    from napari_sam.training.prompts import bounding_box, interior_point

    model = load_model("bundled")
    ref = Predictor(model, "cpu", "fp32", diameter="off")
    others = {p: Predictor(model, "cpu", p, diameter="off") for p in ("auto", "bf16")}
    click = {p: [] for p in others}
    box = {p: [] for p in others}
    for img, labels in heldout_set(n=12):
        prompts = []
        for i in [i for i in np.unique(labels) if i][:10]:
            truth = labels == i
            if truth.sum() >= 4:
                prompts.append((interior_point(truth), bounding_box(truth)))
        ref.set_image(img)
        want = [(ref.predict(points=[p], point_labels=[1]), ref.predict(box=b, multimask=False))
                for p, b in prompts]
        for name, pred in others.items():
            pred.set_image(img)
            for (p, b), ((m32, s32, _), (mb32, _, _)) in zip(prompts, want):
                k = int(np.argmax(s32))  # the mask a user gets
                click[name].append(iou(pred.predict(points=[p], point_labels=[1])[0][k], m32[k]))
                box[name].append(iou(pred.predict(box=b, multimask=False)[0][0], mb32[0]))
    for name, pred in others.items():
        print(f"bundled {name} (encoder {pred.dtype}, decoder {pred.decoder_dtype}) vs fp32 over "
              f"{len(click[name])} objects: click mask IoU mean {np.mean(click[name]):.4f} (min "
              f"{np.min(click[name]):.4f}), box mask IoU mean {np.mean(box[name]):.4f} (min "
              f"{np.min(box[name]):.4f})")
    for name in others:
        assert len(click[name]) > 20
        assert np.mean(click[name]) >= 0.98 and np.mean(box[name]) >= 0.98, name
