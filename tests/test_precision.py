"""Reduced precision: the `precision` option, and how far bf16 results agree with fp32.

- `resolve_precision` and the Predictor honour "auto" / "fp32" / "bf16" / "fp16".
- A random-weight small ViT: bf16 (and fp16) image embeddings and mask logits against fp32,
  agreement printed (`-s`) and bounded.
- The bundled model over the synthetic held-out set: masks from bf16 agree with fp32 masks
  (mean IoU >= 0.98) for one-click and box prompts. Skipped while the bundled weights are
  not there (they are trained separately).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from testing_utils import randomize_, torch_threads

from napari_sam import device as D
from napari_sam.model import Sam
from napari_sam.model.config import TEST_TINY_VIT, TEST_VIT
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
    pred = Predictor(model, "cpu", precision)
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
    ref, low = Predictor(model, "cpu", "fp32"), Predictor(model, "cpu", precision)
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
def test_bundled_bf16_masks_agree_with_fp32_on_heldout():
    from napari_sam.model import load_model
    from napari_sam.training.evaluate import heldout_set
    from napari_sam.training.prompts import bounding_box, interior_point

    model = load_model("bundled")
    ref, low = Predictor(model, "cpu", "fp32"), Predictor(model, "cpu", "bf16")
    click, box = [], []
    for img, labels in heldout_set(n=12):
        ref.set_image(img)
        low.set_image(img)
        for i in [i for i in np.unique(labels) if i][:10]:
            truth = labels == i
            if truth.sum() < 4:
                continue
            p = interior_point(truth)
            m32, s32, _ = ref.predict(points=[p], point_labels=[1])
            mlo, _, _ = low.predict(points=[p], point_labels=[1])
            k = int(np.argmax(s32))  # the mask a user gets
            click.append(iou(mlo[k], m32[k]))
            b = bounding_box(truth)
            box.append(iou(low.predict(box=b, multimask=False)[0][0],
                           ref.predict(box=b, multimask=False)[0][0]))
    print(f"bundled bf16 vs fp32 over {len(click)} objects: click mask IoU mean "
          f"{np.mean(click):.4f} (min {np.min(click):.4f}), box mask IoU mean {np.mean(box):.4f} "
          f"(min {np.min(box):.4f})")
    assert len(click) > 20
    assert np.mean(click) >= 0.98 and np.mean(box) >= 0.98
