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
