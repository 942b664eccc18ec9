"""APG against micro-sam 1.8's `AutomaticPromptGenerator`: the same point prompts from the
same decoder maps, and the same labels when its rules run on the same mask logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam import Predictor, build_model
from napari_sam.automask.apg import APG_DEFAULTS, apg, point_prompts

from apg_oracle import OursAsSamPredictor
from test_ais_parity import blob_maps, same_partition


@pytest.fixture(scope="module")
def tiny_predictor(one_thread):
    torch.manual_seed(3)
    pred = Predictor(build_model("test_vit"), precision="fp32", diameter="off")
    img = (np.random.default_rng(0).random((160, 192, 3)) * 255).astype(np.uint8)
    pred.set_image(img)
    return pred


def test_defaults_are_micro_sams(micro_sam):
    import inspect

    sig = inspect.signature(micro_sam.AutomaticPromptGenerator.generate).parameters
    for k, v in APG_DEFAULTS.items():
        assert sig[k].default == v, k


@pytest.mark.parametrize("seed,thresholds", [(0, {}), (1, {}), (2, {
    "center_distance_threshold": 0.35, "boundary_distance_threshold": 0.6,
    "foreground_threshold": 0.3})])
def test_point_prompts_match(micro_sam, seed, thresholds):
    maps = blob_maps(seed, noise=0.08)
    ref = micro_sam._derive_point_prompts(**maps, **thresholds)
    ours = point_prompts(**maps, **thresholds)
    assert ours.dtype == np.int64 and ours.shape[1] == 2 and len(ours) >= 5
    np.testing.assert_array_equal(ours[:, ::-1], ref["points"][:, 0])  # (x, y) in micro-sam
    np.testing.assert_array_equal(ref["point_labels"], 1)


@pytest.mark.parametrize("params", [
    {}, {"min_size": 5, "nms_threshold": 0.5}, {"refine_with_box_prompts": True},
    {"multimasking": True, "batch_size": 4}])
def test_labels_match_on_the_same_logits(micro_sam, tiny_predictor, params):
    maps = blob_maps(1, noise=0.08)
    gen = micro_sam.AutomaticPromptGenerator(OursAsSamPredictor(tiny_predictor), None)
    gen.set_state(maps)
    ref = gen.generate(**params)
    ours = apg(tiny_predictor, maps=maps, **params)
    assert ours.dtype == np.uint32 and ours.shape == (160, 192) and ref.max() >= 1
    assert same_partition(ours, ref)


def test_no_seeds_and_bad_parameters(tiny_predictor):
    maps = {k: np.ones((160, 192), np.float32) for k in
            ("foreground", "center_distances", "boundary_distances")}
    assert not apg(tiny_predictor, maps=maps).any()
    with pytest.raises(TypeError, match="unknown parameters"):
        apg(tiny_predictor, maps=maps, nms_thresh=0.5)


# --- mode="apg" in the one entry point -------------------------------------------------------

WIDE = {"foreground_threshold": 0.0, "center_distance_threshold": 1.1,
        "boundary_distance_threshold": 1.1}  # random weights: every pixel is a seed


@pytest.fixture(scope="module")
def decoder_model(one_thread):
    from napari_sam.model.config import TEST_VIT

    torch.manual_seed(0)
    return build_model(TEST_VIT.with_(name="t_unetr", instance_decoder="unetr",
                                      instance_decoder_features=8))


def test_apg_mode_is_the_apg_rules_on_the_held_embedding(decoder_model):
    from napari_sam import AutoSegmenter, automask
    from napari_sam.automask.segmenter import resolve_mode

    img = (np.random.default_rng(4).random((96, 128, 3)) * 255).astype(np.uint8)
    seg = AutoSegmenter(decoder_model, mode="apg", diameter="off", precision="fp32",
                        min_area=0, min_size=5, **WIDE)
    assert seg.mode == "apg" and resolve_mode("auto", decoder_model) == "ais"
    calls = []
    h = decoder_model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        res = seg(img)
    finally:
        h.remove()
    assert calls == [1]  # one encoder pass feeds the instance decoder and the mask decoder
    want = apg(seg.predictor, maps=seg.predictor.instance_maps(), min_size=5, **WIDE)
    assert want.max() >= 1
    np.testing.assert_array_equal(res.labels, want)
    assert len(res.records) == res.labels.max()
    for r in res.records:
        assert r["area"] == (res.labels == r["id"]).sum()
    # AIS on the same maps is a different segmentation (the watershed, not SAM's masks)
    ais_res = AutoSegmenter(seg.predictor, mode="ais", diameter="off", min_area=0, **WIDE)(img)
    assert not np.array_equal(ais_res.labels > 0, res.labels > 0)
    # the functional entry point and min_area (APG's min_size raised to it)
    big = int(np.bincount(want.ravel())[1:].max())
    labels = automask(img, seg.predictor, mode="apg", diameter="off", min_area=big + 1,
                      **WIDE)
    assert labels.shape == (96, 128) and labels.max() == 0


def test_apg_mode_needs_a_decoder_and_its_own_keywords(decoder_model):
    from napari_sam import AutoSegmenter

    with pytest.raises(ValueError, match="mode='apg' needs a model with an instance "
                                         "decoder; 'test_vit'"):
        AutoSegmenter(build_model("test_vit"), mode="apg")
    with pytest.raises(ValueError, match="choose one of auto, amg, ais, apg"):
        AutoSegmenter(decoder_model, mode="prompts")
    with pytest.raises(TypeError):  # a watershed-only keyword means nothing to APG
        AutoSegmenter(decoder_model, mode="apg", distance_smoothing=2.0)


def test_apg_mode_tiled_and_stack(decoder_model):
    from napari_sam import AutoSegmenter
    from napari_sam.batch import automask_stack
    from napari_sam.automask.tiled import APGSegmenter

    img = (np.random.default_rng(5).random((2, 300, 260)) * 255).astype(np.uint8)
    seg = AutoSegmenter(decoder_model, mode="apg", diameter=4, precision="fp32",
                        min_area=0, min_size=5, **WIDE)
    tile_seg = seg.tile_segmenter(seg.plan(img[0]), img[0].shape)
    assert isinstance(tile_seg, APGSegmenter) and tile_seg.settings()["segmenter"] == "apg"
    res = seg(img[0])
    assert seg.last_plan.tiled and res.labels.shape == (300, 260) and res.labels.max() >= 1
    stack = automask_stack(img, AutoSegmenter(decoder_model, mode="apg", diameter="off",
                                              precision="fp32", min_area=0, min_size=5,
                                              **WIDE))
    assert stack.labels.shape == (2, 300, 260) and stack.labels[1].max() >= 1


def test_cli_mode_apg(decoder_model, tmp_path, capsys):
    import tifffile

    from napari_sam.cli import main
    from napari_sam.model import save_checkpoint

    save_checkpoint(tmp_path / "dec.pt", decoder_model)
    save_checkpoint(tmp_path / "plain.pt", build_model("test_vit"))
    img = (np.random.default_rng(6).random((64, 80)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", img)
    rc = main(["automask", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out"), "--model",
               str(tmp_path / "dec.pt"), "--mode", "apg", "--diameter", "off", "--device",
               "cpu", "--precision", "fp32", "-q"])
    assert rc == 0
    assert list((tmp_path / "out").glob("a*"))
    rc = main(["automask", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out2"), "--model",
               str(tmp_path / "plain.pt"), "--mode", "apg", "-q"])
    out = capsys.readouterr()
    assert rc != 0 and "instance decoder" in out.out + out.err
