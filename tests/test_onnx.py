"""ONNX export: onnxruntime answers prompts like PyTorch (<= 1e-4 relative) for SAM 1 (tiny
ViT), MobileSAM's TinyViT (tiny), the bundled model and SAM 2.1 (tiny test configuration);
SAM 2.1's encoder too; the command line writes the files and refuses to overwrite them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from testing_utils import randomize_

from napari_sam import Predictor, load_model
from napari_sam.model import build_model, save_checkpoint
from napari_sam.onnx_export import export_onnx, onnx_prompts

ort = pytest.importorskip("onnxruntime")  # a test dependency (setup.cfg: testing, onnx)
RTOL = 1e-4

PROMPTS = [dict(points=[[40, 50]]), dict(points=[[40, 50], [10, 100]], point_labels=[0, 1]),
           dict(box=[10, 20, 70, 90]), dict(points=[[40, 50]], box=[10, 20, 70, 90])]


def rel(a, b) -> float:
    b = np.asarray(b, np.float64)
    assert np.shape(a) == b.shape
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def check_decoder(model, tmp_path, image):
    paths = export_onnx(model, tmp_path)
    sess = ort.InferenceSession(str(paths["decoder.onnx"]))
    # the exported graph follows SAM's whole-image rule: no object-size zoom
    pred = Predictor(model, device="cpu", precision="fp32", diameter="off")
    emb = pred.set_image(image)
    worst = 0.0
    for kw in PROMPTS:
        feeds = onnx_prompts(model, image.shape[:2], **kw)
        feeds["image_embeddings"] = emb.features.numpy()
        masks, iou, low = sess.run(None, feeds)
        pts = lab = box = None
        if "points" in kw:
            pts = pred.points_to_input(kw["points"])[None]
            lab = torch.as_tensor(kw.get("point_labels", [1] * len(kw["points"])))[None]
        if "box" in kw:
            box = pred.box_to_input(kw["box"])
        multi, s_multi = pred.predict_lowres(pts, lab, box, None, True)
        single, s_single = pred.predict_lowres(pts, lab, box, None, False)
        ref_low = torch.cat([single, multi], 1)
        for a, b in ((low, ref_low), (iou, torch.cat([s_single, s_multi], 1)),
                     (masks, pred.upscale(ref_low))):
            worst = max(worst, rel(a, b.numpy()))
        # the mask prompt path: feed the best low-res answer back
        feeds.update(mask_input=low[:, 1 + int(iou[0, 1:].argmax())][None],
                     has_mask_input=np.array([1.0], np.float32))
        _, iou2, low2 = sess.run(None, feeds)
        m_in = torch.as_tensor(feeds["mask_input"])
        ref2, s2 = pred.predict_lowres(pts, lab, box, m_in, False)
        worst = max(worst, rel(low2[:, :1], ref2.numpy()), rel(iou2[:, :1], s2.numpy()))
    print(f"onnx {model.config.name}: max rel diff {worst:.1e}")
    assert worst <= RTOL
    meta = json.loads(paths["model.json"].read_text())
    assert meta["mask_size"] == model.config.mask_size
    return paths


def image(shape=(90, 130)):
    return (np.random.default_rng(0).random(shape) * 255).astype(np.uint8)


@pytest.mark.parametrize("arch", ["test_vit", "test_sam2"])
def test_decoder_matches_pytorch(arch, tmp_path, one_thread):
    model = randomize_(build_model(arch), seed=0).eval()
    check_decoder(model, tmp_path, image())


@pytest.mark.slow
def test_decoder_matches_pytorch_tinyvit_and_bundled(tmp_path, one_thread):
    check_decoder(randomize_(build_model("test_tiny_vit"), seed=0).eval(), tmp_path / "t", image())
    check_decoder(load_model("bundled"), tmp_path / "b", image((200, 150)))


def test_sam2_encoder_and_cli(tmp_path, one_thread):
    from napari_sam.cli import main

    model = randomize_(build_model("test_sam2"), seed=1).eval()
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model)
    out = tmp_path / "onnx"
    assert main(["export-onnx", str(ckpt), "-o", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"decoder.onnx", "encoder.onnx", "model.json"}
    x = torch.rand(1, 3, 256, 256) * 255
    (e,) = ort.InferenceSession(str(out / "encoder.onnx")).run(None, {"pixels": x.numpy()})
    with torch.no_grad():
        ref = model.encode(x).numpy()
    print(f"onnx sam2 encoder: max rel diff {rel(e, ref):.1e}")
    assert rel(e, ref) <= RTOL
    before = (out / "decoder.onnx").read_bytes()
    assert main(["export-onnx", str(ckpt), "-o", str(out)]) == 1  # exists: refused
    assert (out / "decoder.onnx").read_bytes() == before
    assert main(["export-onnx", str(ckpt), "-o", str(out), "--overwrite"]) == 0
