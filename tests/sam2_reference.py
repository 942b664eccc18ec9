"""Meta's `sam2` package as a test oracle: reference models built from its SAM 2.1 configs
(random weights, optionally another input size) and their state dicts for napari-sam's
`Sam2`. Test-only; needs `sam2`, `hydra-core`, `omegaconf`, `iopath` (tests/oracles.txt)
and the torchvision stand-in."""

from __future__ import annotations

import warnings

import pytest
import reference_stub
from testing_utils import randomize_

# config file stems of sam2 1.1.0
SHORT = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


def sam2_package():
    reference_stub.install()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("sam2.build_sam")


def build_reference(size: str = "tiny", image_size: int = 1024, video: bool = False,
                    seed: int = 0):
    """The reference SAM2Base (or SAM2VideoPredictor) with seeded random weights."""
    build = sam2_package()
    cfg = f"configs/sam2.1/sam2.1_hiera_{SHORT[size]}.yaml"
    extra = [f"++model.image_size={image_size}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if video:
            # hole filling needs sam2's CUDA extension; on CPU the reference skips it with a
            # warning, so turn it off explicitly (napari-sam does not fill holes either)
            model = build.build_sam2_video_predictor(cfg, None, device="cpu",
                                                     hydra_overrides_extra=extra + [
                                                         "++model.fill_hole_area=0"])
        else:
            model = build.build_sam2(cfg, None, device="cpu", hydra_overrides_extra=extra)
    return randomize_(model, seed=seed, std=0.2).eval()


def image_predictor(ref):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    pred = SAM2ImagePredictor(ref)
    s = ref.image_size
    pred._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return pred


def ours_from(ref):
    """napari-sam's Sam2 with the reference's weights (architecture inferred, strict)."""
    from napari_sam.model.sam2 import Sam2, infer_sam2_config

    sd = ref.state_dict()
    cfg = infer_sam2_config(sd).with_(image_size=ref.image_size)
    model = Sam2(cfg)
    model.load_state_dict(sd, strict=True)
    return model.eval()
