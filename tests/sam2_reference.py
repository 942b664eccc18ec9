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


# A much smaller Hiera trunk, one memory-attention layer and a 128-pixel input on top of
# the tiny config: every code path of the video predictor in seconds. (The reference fixes
# the decoder's and memory's widths, so those stay at their published sizes.)
MICRO_OVERRIDES = [
    "++model.image_encoder.trunk.embed_dim=16", "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.trunk.window_spec=[4,4,4,2]",
    "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.dim_feedforward=256",
]


def micro_config():
    from napari_sam.model.sam2 import HieraConfig, Sam2Config

    return Sam2Config("micro", HieraConfig(16, 1, (1, 1, 2, 1), (3,), (4, 4, 4, 2), (4, 4)),
                      image_size=128, memory_layers=1, memory_ffn_dim=256)


def build_reference(size: str = "tiny", image_size: int = 1024, video: bool = False,
                    seed: int = 0, overrides=()):
    """The reference SAM2Base (or SAM2VideoPredictor) with seeded random weights."""
    build = sam2_package()
    cfg = f"configs/sam2.1/sam2.1_hiera_{SHORT[size]}.yaml"
    extra = [f"++model.image_size={image_size}", *overrides]
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


def ours_from(ref, cfg=None):
    """napari-sam's Sam2 with the reference's weights (architecture inferred unless `cfg`
    is given; loaded strictly)."""
    from napari_sam.model.sam2 import Sam2, infer_sam2_config

    sd = ref.state_dict()
    cfg = cfg or infer_sam2_config(sd).with_(image_size=ref.image_size)
    model = Sam2(cfg)
    model.load_state_dict(sd, strict=True)
    return model.eval()
