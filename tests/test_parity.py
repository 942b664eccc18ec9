"""Numerical parity with the reference implementations (Meta's segment_anything, MobileSAM).

Each case builds the reference and our model, randomises one of them, moves the state dict
across with strict loading (both directions are covered), and compares image embeddings,
low-res mask logits and IoU predictions for several prompt kinds, in fp32. Tolerance:
max |ours - ref| <= 1e-4 * max |ref|.
"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import reference_stub
import torch
from testing_utils import randomize_, torch_threads
from torch import nn

from napari_sam.model import Sam
from napari_sam.runtime.session import InferenceSession
from napari_sam.model.config import MOBILE_SAM, SAM_VIT_B, TEST_TINY_VIT, TEST_VIT, SamConfig

RTOL = 1e-4

TEST_VIT_W5 = TEST_VIT.with_(  # 16x16 grid in 5x5 windows: the windowed blocks pad
    name="test_vit_w5", encoder=dataclasses.replace(TEST_VIT.encoder, window_size=5,
                                                    global_attn_indexes=(2,)))
TEST_TINY_VIT_1024 = TEST_TINY_VIT.with_(name="test_tiny_vit_1024", image_size=1024)


def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def check(tag: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
    r = rel_diff(ours, ref)
    print(f"parity {tag}: max rel diff {r:.2e}")
    assert torch.isfinite(ref).all() and ref.abs().max() > 0, f"{tag}: degenerate reference"
    assert r <= RTOL, f"{tag}: max |ours - ref| = {r:.2e} * max |ref| > {RTOL}"


def input_image(cfg: SamConfig, seed: int = 0) -> torch.Tensor:
    """0-255 pixels, landscape: the bottom quarter of the model input is padding."""
    s = cfg.image_size
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, s * 3 // 4, s, generator=g) * 255


def prompt_sets(cfg: SamConfig, seed: int = 0) -> dict[str, dict]:
    """Prompts in the model input frame (x, y), inside the unpadded image."""
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    hw = torch.tensor([s, s * 3 // 4], dtype=torch.float32)  # (w, h) as x, y

    def points(b, n):
        xy = torch.rand(b, n, 2, generator=g) * hw
        labels = torch.randint(0, 2, (b, n), generator=g)
        labels[0, -1] = -1  # a padding point, as batched prompts of ragged length carry
        return xy, labels

    def boxes(b):
        a = torch.rand(b, 2, generator=g) * hw * 0.5
        return torch.cat([a, a + torch.rand(b, 2, generator=g) * hw * 0.5 + 1], dim=1)

    m = cfg.mask_size
    return {
        "points": {"points": points(3, 3)},
        "box": {"boxes": boxes(2)},
        "points+box": {"points": points(2, 2), "boxes": boxes(2)},
        "points+mask": {"points": points(2, 1),
                        "mask_input": torch.randn(2, 1, m, m, generator=g) * 4},
        # batch 3, not 1: one IoU value near 0 would be no scale for a relative tolerance
        "mask": {"mask_input": torch.randn(3, 1, m, m, generator=g) * 4},
    }


# --- references -----------------------------------------------------------------------------

def _reference_sam(modeling, cfg: SamConfig, image_encoder: nn.Module) -> nn.Module:
    d, g = cfg.prompt_embed_dim, cfg.embed_grid
    return modeling.Sam(
        image_encoder=image_encoder,
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=d, image_embedding_size=(g, g),
            input_image_size=(cfg.image_size, cfg.image_size), mask_in_chans=16),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=cfg.num_multimask_outputs,
            transformer=modeling.TwoWayTransformer(
                depth=cfg.decoder_depth, embedding_dim=d, mlp_dim=cfg.decoder_mlp_dim,
                num_heads=cfg.decoder_heads),
            transformer_dim=d, iou_head_depth=3, iou_head_hidden_dim=cfg.iou_head_hidden_dim),
        pixel_mean=list(cfg.pixel_mean), pixel_std=list(cfg.pixel_std),
    ).eval()


def build_mobile_reference(mobile_sam, cfg: SamConfig) -> nn.Module:
    """MobileSAM's Sam for one of our TinyViT configs.

    MOBILE_SAM itself comes from MobileSAM's own `build_sam_vit_t`. For other sizes two
    things in MobileSAM are hard-coded and are set here explicitly: the stride of each
    patch-merging conv (MobileSAM makes it 1 only when out_dim is 320, 448 or 576, i.e. for
    its own last stage) and the neck's 256 output channels.
    """
    if cfg == MOBILE_SAM:
        return mobile_sam.build_sam_vit_t().eval()
    from mobile_sam.modeling import tiny_vit_sam as tv

    e, d = cfg.encoder, cfg.prompt_embed_dim
    enc = tv.TinyViT(
        img_size=cfg.image_size, in_chans=3, num_classes=e.num_classes,
        embed_dims=list(e.embed_dims), depths=list(e.depths), num_heads=list(e.num_heads),
        window_sizes=list(e.window_sizes), mlp_ratio=e.mlp_ratio, drop_rate=0.0,
        drop_path_rate=0.0, mbconv_expand_ratio=e.mbconv_expand_ratio,
        local_conv_size=e.local_conv_size)
    for layer, stride in zip(enc.layers, e.merge_strides):
        layer.downsample.conv2.c.stride = (stride, stride)
    enc.neck = nn.Sequential(
        nn.Conv2d(e.embed_dims[-1], d, 1, bias=False), tv.LayerNorm2d(d),
        nn.Conv2d(d, d, 3, padding=1, bias=False), tv.LayerNorm2d(d))
    from mobile_sam import modeling

    return _reference_sam(modeling, cfg, enc)


def reference_tiny_vit_features(enc: nn.Module, x: torch.Tensor, grid: int) -> torch.Tensor:
    """MobileSAM's `TinyViT.forward_features` line by line, with its hard-coded 64x64 grid
    replaced by `grid` (the only change), for inputs smaller than 1024."""
    x = enc.patch_embed(x)
    x = enc.layers[0](x)
    for i in range(1, len(enc.layers)):
        x = enc.layers[i](x)
    b, _, c = x.size()
    x = x.view(b, grid, grid, c)
    x = x.permute(0, 3, 1, 2)
    return enc.neck(x)


def build_reference(cfg: SamConfig, mobile_sam=None) -> nn.Module:
    if cfg.encoder.__class__.__name__ == "TinyViTConfig":
        return build_mobile_reference(mobile_sam, cfg)
    return reference_stub.build_reference(cfg)


# --- one model pair -------------------------------------------------------------------------

@dataclasses.dataclass
class Pair:
    cfg: SamConfig
    ours: Sam
    ref: nn.Module
    tag: str
    x: torch.Tensor
    _emb: tuple | None = None
    session: object = None  # an InferenceSession: ours runs its fast paths inside it

    def _ours(self):
        return self.session if self.session is not None else contextlib.nullcontext()

    def ref_encode(self, x: torch.Tensor) -> torch.Tensor:
        xp = self.ref.preprocess(x)
        if self.cfg.embed_grid != 64 and hasattr(self.ref.image_encoder, "layers"):
            return reference_tiny_vit_features(self.ref.image_encoder, xp, self.cfg.embed_grid)
        return self.ref.image_encoder(xp)

    def embeddings(self):
        if self._emb is None:
            with torch.no_grad():
                with self._ours():
                    ours = self.ours.encode(self.x)
                self._emb = ours, self.ref_encode(self.x)
        return self._emb

    def decode(self, prompts: dict, multimask: bool):
        ours_emb, ref_emb = self.embeddings()
        p = prompts
        with torch.no_grad(), self._ours():
            ours = self.ours.decode(ours_emb, p.get("points"), p.get("boxes"), p.get("mask_input"),
                                    multimask)
            sparse, dense = self.ref.prompt_encoder(
                points=p.get("points"), boxes=p.get("boxes"), masks=p.get("mask_input"))
            ref = self.ref.mask_decoder(
                image_embeddings=ref_emb, image_pe=self.ref.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=multimask)
        return ours, ref


def make_pair(cfg: SamConfig, direction: str, seed: int = 0, mobile_sam=None) -> Pair:
    """direction "ref->ours": the reference is randomised and its state dict loaded into ours;
    "ours->ref": the other way round. Loading is strict both ways."""
    torch.manual_seed(seed)
    ref, ours = build_reference(cfg, mobile_sam), Sam(cfg)
    if direction == "ref->ours":
        randomize_(ref, seed)
        ours.load_state_dict(ref.state_dict(), strict=True)
    else:
        randomize_(ours, seed + 1)  # other values than the ref->ours case
        ref.load_state_dict(ours.state_dict(), strict=True)
    # eval() after loading: MobileSAM caches its attention biases (`ab`) in train(False)
    return Pair(cfg, ours.eval(), ref.eval(), f"{cfg.name} {direction}", input_image(cfg, seed))


SMALL = [(cfg, d) for cfg in (TEST_VIT, TEST_VIT_W5) for d in ("ref->ours", "ours->ref")]


@pytest.fixture(scope="module", params=SMALL, ids=[f"{c.name}:{d}" for c, d in SMALL])
def vit_pair(request, segment_anything):
    cfg, direction = request.param
    return make_pair(cfg, direction)


PROMPT_KINDS = list(prompt_sets(TEST_VIT))


def check_pair(pair: Pair, kinds=PROMPT_KINDS, multimasks=(True, False)) -> None:
    ours_emb, ref_emb = pair.embeddings()
    check(f"{pair.tag} image embeddings", ours_emb, ref_emb)
    prompts = prompt_sets(pair.cfg)
    for kind in kinds:
        for mm in multimasks:
            (m, iou), (rm, riou) = pair.decode(prompts[kind], mm)
            check(f"{pair.tag} {kind} multimask={mm} mask logits", m, rm)
            check(f"{pair.tag} {kind} multimask={mm} iou", iou, riou)


def test_vit_image_embeddings(vit_pair):
    ours, ref = vit_pair.embeddings()
    assert ours.shape == (1, vit_pair.cfg.prompt_embed_dim, 16, 16)
    check(f"{vit_pair.tag} image embeddings", ours, ref)


def test_vit_session_paths_match_reference(vit_pair):
    """The same comparisons with ours inside an InferenceSession (its fused fp32 paths)."""
    check_pair(dataclasses.replace(vit_pair, session=InferenceSession(vit_pair.ours), _emb=None))


@pytest.mark.parametrize("multimask", [True, False], ids=["multi", "single"])
@pytest.mark.parametrize("kind", PROMPT_KINDS)
def test_vit_decoder(vit_pair, kind, multimask):
    (m, iou), (rm, riou) = vit_pair.decode(prompt_sets(vit_pair.cfg)[kind], multimask)
    k = 3 if multimask else 1
    assert m.shape[1:] == (k, vit_pair.cfg.mask_size, vit_pair.cfg.mask_size)
    check(f"{vit_pair.tag} {kind} multimask={multimask} mask logits", m, rm)
    check(f"{vit_pair.tag} {kind} multimask={multimask} iou", iou, riou)


def test_state_dict_keys_match_reference(segment_anything):
    for cfg in (TEST_VIT, TEST_VIT_W5):
        ref_sd, ours_sd = build_reference(cfg).state_dict(), Sam(cfg).state_dict()
        assert list(ref_sd) == list(ours_sd)
        assert {k: v.shape for k, v in ref_sd.items()} == {k: v.shape for k, v in ours_sd.items()}


@pytest.mark.parametrize("input_hw,original_hw", [((192, 256), (300, 400)),
                                                  ((256, 160), (1000, 625)),
                                                  ((256, 256), (256, 256))])
def test_upscale_logits(segment_anything, input_hw, original_hw):
    cfg = TEST_VIT
    ours, ref = Sam(cfg), build_reference(cfg)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, cfg.mask_size, cfg.mask_size, generator=g) * 4
    out = ours.upscale_logits(logits, input_hw, original_hw)
    expected = ref.postprocess_masks(logits, input_hw, original_hw)
    assert out.shape == (2, 3, *original_hw)
    check(f"upscale_logits {input_hw}->{original_hw}", out, expected)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture
def two_threads():  # for the full-size forwards
    with torch_threads(2):
        yield


@pytest.mark.slow
def test_vit_b_full_size(segment_anything, two_threads):
    """One full-size ViT-B forward on each side (reference weights -> ours), then the state
    dict back into a fresh reference, strictly."""
    pair = make_pair(SAM_VIT_B, "ref->ours")
    check_pair(pair, kinds=["points+box", "points+mask"])
    back = reference_stub.build_reference(SAM_VIT_B)
    back.load_state_dict(pair.ours.state_dict(), strict=True)
    for (k, a), b in zip(pair.ref.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k


# --- MobileSAM (TinyViT) --------------------------------------------------------------------

TINY = [(cfg, d) for cfg in (TEST_TINY_VIT, TEST_TINY_VIT_1024) for d in ("ref->ours", "ours->ref")]


@pytest.fixture(scope="module", params=TINY, ids=[f"{c.name}:{d}" for c, d in TINY])
def tiny_pair(request, mobile_sam):
    cfg, direction = request.param
    return make_pair(cfg, direction, mobile_sam=mobile_sam)


def test_tiny_vit_image_embeddings(tiny_pair):
    ours, ref = tiny_pair.embeddings()
    g = tiny_pair.cfg.embed_grid
    assert ours.shape == (1, tiny_pair.cfg.prompt_embed_dim, g, g)
    check(f"{tiny_pair.tag} image embeddings", ours, ref)


def test_tiny_vit_session_paths_match_reference(tiny_pair):
    check_pair(dataclasses.replace(tiny_pair, session=InferenceSession(tiny_pair.ours), _emb=None))


@pytest.mark.parametrize("multimask", [True, False], ids=["multi", "single"])
@pytest.mark.parametrize("kind", PROMPT_KINDS)
def test_tiny_vit_decoder(tiny_pair, kind, multimask):
    (m, iou), (rm, riou) = tiny_pair.decode(prompt_sets(tiny_pair.cfg)[kind], multimask)
    check(f"{tiny_pair.tag} {kind} multimask={multimask} mask logits", m, rm)
    check(f"{tiny_pair.tag} {kind} multimask={multimask} iou", iou, riou)


def test_tiny_vit_1024_runs_reference_forward(mobile_sam):
    """At 1024 the reference's own forward (with its 64x64 view) runs unchanged, and the
    1024 cases use it rather than `reference_tiny_vit_features`."""
    ref = build_mobile_reference(mobile_sam, TEST_TINY_VIT_1024)
    x = torch.zeros(1, 3, 1024, 1024)
    with torch.no_grad():
        assert ref.image_encoder(x).shape == (1, 64, 64, 64)
    assert TEST_TINY_VIT_1024.embed_grid == 64


@pytest.mark.slow
def test_mobile_sam_full_size(mobile_sam, two_threads):
    """MobileSAM exactly as MobileSAM builds it (`build_sam_vit_t`): one forward on each side
    (reference weights -> ours), then the state dict back into a fresh reference, strictly."""
    pair = make_pair(MOBILE_SAM, "ref->ours", mobile_sam=mobile_sam)
    check_pair(pair, kinds=["points", "points+box", "points+mask"])
    back = mobile_sam.build_sam_vit_t()
    back.load_state_dict(pair.ours.state_dict(), strict=True)
    for (k, a), b in zip(pair.ref.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k
