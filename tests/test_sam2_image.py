"""SAM 2.1 image model: state dicts, architecture inference, checkpoint files, and parity
of `Predictor` with Meta's `SAM2ImagePredictor` (random weights, fp32).

Parity tolerance: max |ours - ref| <= 1e-4 * max |ref| on the low-res logits and scores.
The fast case is Hiera-tiny at a 256-pixel input (the reference's predictor is told the
smaller feature sizes); tiny and base+ at the published 1024 are marked slow.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2_reference import build_reference, image_predictor, ours_from
from testing_utils import randomize_

from napari_sam import Predictor, load_model
from napari_sam.model import build_model, is_model, save_checkpoint
from napari_sam.model.checkpoints import CheckpointError
from napari_sam.model.sam2 import (SAM2_CONFIGS, TEST_SAM2, Sam2, infer_sam2_config)

RTOL = 1e-4


def rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    assert np.isfinite(ref).all() and np.abs(ref).max() > 0
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


# ---- state dicts and files (tiny test configuration, no reference) -------------------------
@pytest.mark.parametrize("name", [n for n in SAM2_CONFIGS if n != "test_sam2"])
def test_published_configs_are_recognised(name):
    cfg = SAM2_CONFIGS[name]
    with torch.device("meta"):
        sd = Sam2(cfg).state_dict()
    assert infer_sam2_config(sd) == cfg


def test_test_config_round_trip(tmp_path, one_thread):
    model = randomize_(build_model("test_sam2"), seed=3)
    assert is_model(model) and infer_sam2_config(model.state_dict()) == TEST_SAM2
    # the official file layout: {"model": state_dict}
    path = tmp_path / "sam2.1_like.pt"
    torch.save({"model": model.state_dict()}, path)
    loaded = load_model(str(path))
    assert isinstance(loaded, Sam2) and loaded.config == TEST_SAM2
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # napari-sam's own format keeps the config
    own = tmp_path / "own.pt"
    save_checkpoint(own, model)
    again = load_model(str(own))
    assert again.config == TEST_SAM2 and again.signature() == model.signature()


def test_truncated_state_dict_is_refused(tmp_path):
    sd = build_model("test_sam2").state_dict()
    sd.pop("sam_mask_decoder.conv_s0.weight")
    path = tmp_path / "broken.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_model(str(path))


def test_predictor_on_test_model(one_thread):
    """The Predictor API end to end: (row, col) prompts, shapes, mask_input round trip,
    packed embedding restored with set_embedding."""
    model = randomize_(build_model("test_sam2"), seed=1)
    pred = Predictor(model, device="cpu", precision="fp32")
    img = (np.random.default_rng(0).random((90, 140)) * 4000).astype(np.uint16)
    emb = pred.set_image(img)
    assert emb.features.shape == (1,) + model.embedding_shape
    assert emb.input_size == (256, 256)
    masks, scores, logits = pred.predict(points=[[40, 70]], point_labels=[1])
    assert masks.shape == (3, 90, 140) and scores.shape == (3,) and logits.shape == (3, 64, 64)
    assert np.abs(logits).max() <= 32.0
    m2, s2, l2 = pred.predict(points=[[40, 70]], box=[10, 20, 80, 120], mask_input=logits[0],
                              multimask=False)
    assert m2.shape == (1, 90, 140)
    pred2 = Predictor(model, device="cpu", precision="fp32")
    pred2.set_embedding(emb)
    m3, s3, l3 = pred2.predict(points=[[40, 70]], box=[10, 20, 80, 120], mask_input=logits[0],
                               multimask=False)
    np.testing.assert_array_equal(l3, l2)
    # the upscaled masks are the thresholded bilinear resize of the raw low-res logits
    raw, _ = pred.predict_lowres(pred.points_to_input([[40, 70]])[None],
                                 torch.ones(1, 1, dtype=torch.long))
    full = model.upscale_logits(raw, emb.input_size, emb.original_size)[0] > 0
    np.testing.assert_array_equal(masks, full.numpy())


# ---- parity with SAM2ImagePredictor --------------------------------------------------------
def _parity(size: str, image_size: int):
    ref = build_reference(size, image_size)
    ours = ours_from(ref)
    rp = image_predictor(ref)
    pp = Predictor(ours, device="cpu", precision="fp32")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 410, 3), dtype=np.uint8)
    img[60:160, 120:220] = 240
    with torch.no_grad():
        rp.set_image(img)
    pp.set_image(img)
    box = [50, 100, 170, 230]  # (row0, col0, row1, col1)
    cases = {
        "points": dict(points=[[100.0, 150.0], [30.0, 350.0]], point_labels=[1, 0]),
        "box": dict(box=box),
        "box+point": dict(points=[[110.0, 170.0]], point_labels=[1], box=box),
    }
    worst = {}
    for multimask in (True, False):
        for name, kw in cases.items():
            rkw = {}
            if "points" in kw:
                rkw["point_coords"] = np.asarray(kw["points"])[:, ::-1].copy()
                rkw["point_labels"] = np.asarray(kw["point_labels"])
            if "box" in kw:
                r0, c0, r1, c1 = kw["box"]
                rkw["box"] = np.array([c0, r0, c1, r1], float)
            rm, rs, rl = rp.predict(multimask_output=multimask, **rkw)
            om, os_, ol = pp.predict(multimask=multimask, **kw)
            tag = f"{name}{'' if multimask else ' single'}"
            worst[tag] = (rel(ol, rl), rel(os_, rs), float((om != rm).mean()))
            # feed the best low-res logits back in as a mask prompt
            best = int(np.argmax(rs))
            rm2, rs2, rl2 = rp.predict(multimask_output=False, mask_input=rl[best:best + 1], **rkw)
            om2, os2, ol2 = pp.predict(multimask=False, mask_input=ol[best], **kw)
            worst[tag + " +mask"] = (rel(ol2, rl2), rel(os2, rs2), float((om2 != rm2).mean()))
    for tag, (lg, sc, mm) in worst.items():
        print(f"sam2 {size}@{image_size} {tag}: logits {lg:.1e} scores {sc:.1e} "
              f"mask pixels differing {mm:.1e}")
    assert max(v[0] for v in worst.values()) <= RTOL
    assert max(v[1] for v in worst.values()) <= RTOL
    assert max(v[2] for v in worst.values()) <= 1e-3  # threshold flips at |logit| ~ 1e-6
    # the scores are not saturated constants (a check that can fail)
    assert len({round(v, 6) for v in rs}) > 1 or len({round(v, 6) for v in rs2}) >= 1


def test_parity_tiny_256():
    _parity("tiny", 256)


@pytest.mark.slow
@pytest.mark.parametrize("size", ["tiny", "base_plus"])
def test_parity_1024(size):
    _parity(size, 1024)


# ---- the rest of the core takes a SAM 2.1 model unchanged ---------------------------------
def test_automask_tiling_and_bf16_with_sam2(one_thread, tmp_path):
    from napari_sam.automask import automask
    from napari_sam.tiled.embed import TiledEmbeddings

    model = randomize_(build_model("test_sam2"), seed=4)
    rng = np.random.default_rng(1)
    image = (rng.random((200, 300)) * 3000).astype(np.uint16)
    labels = automask(image, model, points_per_side=4, crop_n_layers=1, device="cpu",
                      precision="fp32", pred_iou_thresh=0.0, stability_thresh=0.0)
    assert labels.shape == image.shape and labels.dtype == np.uint32
    # tile embeddings (cached on disk) equal a Predictor's on the same pixels
    emb = TiledEmbeddings(model, image, tile_size=128, overlap=32, precision="fp32",
                          cache=tmp_path / "cache", device="cpu")
    tile = emb.grid[1, 1]
    pred = Predictor(model, device="cpu", precision="fp32")
    lo, hi = emb.value_range
    pred.set_image(image[tile.slices], value_range=(lo[0], hi[0]))
    np.testing.assert_allclose(emb.features(tile).numpy(), pred.get_embedding().features.numpy(),
                               rtol=1e-3, atol=1e-3)  # the disk cache holds float16
    tp = emb.predictor(tile)
    _, s1, l1 = tp.predict(points=[[30, 40]])
    _, s2, l2 = pred.predict(points=[[30, 40]])
    assert rel(l1, l2) < 1e-2 and rel(s1, s2) < 1e-2
    # bf16 autocast runs the same graph
    p16 = Predictor(model, device="cpu", precision="bf16")
    p16.set_image(image[:128, :128])
    pred.set_image(image[:128, :128])
    _, _, a = p16.predict(points=[[60, 60]])
    _, _, b = pred.predict(points=[[60, 60]])
    assert np.isfinite(a).all() and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_cli_automask_with_a_sam2_checkpoint(tmp_path, one_thread, capsys):
    from pathlib import Path

    import tifffile

    from napari_sam.cli import main

    ckpt = tmp_path / "sam2_test.pt"
    torch.save({"model": randomize_(build_model("test_sam2"), seed=5).state_dict()}, ckpt)
    src = Path(__file__).resolve().parent.parent / "sample_data" / "nuclei.tif"
    rc = main(["automask", str(src), "-o", str(tmp_path / "out"), "--model", str(ckpt),
               "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0",
               "--device", "cpu", "--precision", "fp32", "-q"])
    assert rc == 0, capsys.readouterr()
    lab = tifffile.imread(tmp_path / "out" / "nuclei_labels.tif")
    assert lab.dtype == np.uint32 and lab.shape == tifffile.imread(src).shape
