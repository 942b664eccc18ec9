"""micro-sam's UNETR instance decoder: loading `decoder_state`, both upsampling variants,
and the three maps against micro-sam's own decoder (`get_unetr` / `DecoderAdapter`,
`InstanceSegmentationWithDecoder.initialize`) on random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam import Predictor, load_model
from napari_sam.model.config import TEST_VIT
from napari_sam.model.unetr_decoder import UNETRDecoder

import reference_stub

RTOL = 1e-4


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


def reference_unetr(encoder, transpose: bool, features: int = 64):
    """torch-em's UNETR as micro-sam's `get_unetr` builds it (initial features made small
    for the tiny tests), with random batch-norm weights and statistics, left in training
    mode as micro-sam leaves it."""
    from torch_em.model import UNETR

    unetr = UNETR(backbone="sam", encoder=encoder, out_channels=3, use_sam_stats=True,
                  final_activation="Sigmoid", use_skip_connection=False, resize_input=True,
                  use_conv_transpose=transpose, initial_features=features)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in unetr.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t, lo, hi in ((m.running_mean, -0.3, 0.3), (m.running_var, 0.5, 2.0),
                                  (m.weight, 0.5, 1.5), (m.bias, -0.3, 0.3)):
                    t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return unetr


def write_micro_sam_checkpoint(path, sam_state, unetr) -> dict:
    decoder = {k: v for k, v in unetr.state_dict().items() if not k.startswith("encoder")}
    torch.save({"model_state": {"sam." + k: v for k, v in sam_state.items()},
                "decoder_state": decoder}, path)
    return decoder


def full_range_image(shape, seed=0) -> np.ndarray:
    """uint8 RGB whose channels span 0..255, so micro-sam's per-channel min-max
    normalisation leaves it unchanged."""
    img = (np.random.default_rng(seed).random((*shape, 3)) * 255).astype(np.uint8)
    img[0, 0], img[0, 1] = 0, 255
    return img


@pytest.fixture(scope="module")
def tiny_ref(micro_sam, one_thread):
    torch.manual_seed(0)
    return reference_stub.build_reference(TEST_VIT)


@pytest.mark.parametrize("transpose", [False, True], ids=["interpolation", "transposed"])
def test_tiny_decoder_matches_micro_sam(micro_sam, tiny_ref, tmp_path, transpose):
    from segment_anything import SamPredictor

    unetr = reference_unetr(tiny_ref.image_encoder, transpose, features=16)
    decoder = write_micro_sam_checkpoint(tmp_path / "m.pt", tiny_ref.state_dict(), unetr)
    model = load_model(str(tmp_path / "m.pt"))
    kind = "unetr_transpose" if transpose else "unetr"
    assert model.config.instance_decoder == kind and model.instance_decoder_kind == kind
    assert model.config.instance_decoder_features == 16 and model.has_instance_head
    assert any("decoder_state" in n for n in model.checkpoint_notes)
    # state-dict compatible: the same keys and shapes as micro-sam's decoder_state
    ours_sd = model.instance_decoder.state_dict()
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in decoder.items()}

    import copy

    # micro-sam's train-mode calls update the running statistics: keep a copy for eval mode
    adapter_eval = micro_sam.DecoderAdapter(copy.deepcopy(unetr)).eval()
    adapter = micro_sam.DecoderAdapter(unetr)  # in training mode, as micro-sam uses it
    assert adapter.training
    emb = torch.randn(1, TEST_VIT.prompt_embed_dim, 16, 16)

    def ours_at(h, w):
        y = torch.sigmoid(model.instance_logits(emb, None))[..., :200, :256]
        return torch.nn.functional.interpolate(y, (h, w), mode="bilinear", align_corners=False)

    with torch.no_grad():  # the decoder alone, on one embedding
        ref = adapter(emb, (200, 256), (150, 192))
        assert rel(ours_at(150, 192), ref) <= RTOL
        # with the stored running statistics: micro-sam's decoder in eval mode
        model.instance_decoder.use_running_statistics(True)
        ref_eval = adapter_eval(emb, (200, 256), (150, 192))
        assert rel(ours_at(150, 192), ref_eval) <= RTOL and rel(ref_eval, ref) > 1e-2
        model.instance_decoder.use_running_statistics(False)

    img = full_range_image((200, 256))
    pred = Predictor(model, precision="fp32", diameter="off")
    pred.set_image(img)
    maps = pred.instance_maps()
    seg = micro_sam.InstanceSegmentationWithDecoder(SamPredictor(tiny_ref), adapter)
    seg.initialize(img)
    for name, want in seg.get_state().items():
        assert maps[name].dtype == np.float32 and maps[name].shape == (200, 256)
        r = rel(maps[name], want)
        print(f"tiny {kind} {name}: max rel diff {r:.2e}")
        assert r <= RTOL, (name, r)


def test_decoder_kind_and_features_from_state():
    from napari_sam.model.unetr_decoder import decoder_features, decoder_kind

    for kind in ("unetr", "unetr_transpose"):
        sd = UNETRDecoder(32, 8, kind).state_dict()
        assert decoder_kind(sd) == kind and decoder_features(sd) == 8
    with pytest.raises(ValueError, match="unknown UNETR decoder kind"):
        UNETRDecoder(32, 8, "bilinear")


def test_unknown_decoder_state_is_reported_and_left_out(tmp_path, tiny_ref):
    torch.save({"model_state": {"sam." + k: v for k, v in tiny_ref.state_dict().items()},
                "decoder_state": {"something.weight": torch.zeros(2)}}, tmp_path / "odd.pt")
    model = load_model(str(tmp_path / "odd.pt"))
    assert not model.has_instance_head and model.instance_decoder_kind == ""
    assert any("ignored 'decoder_state'" in n for n in model.checkpoint_notes)
    pred = Predictor(model, precision="fp32", diameter="off")
    pred.set_image(full_range_image((32, 32)))
    with pytest.raises(ValueError, match="no instance decoder"):
        pred.instance_maps()


def test_instance_maps_entry_point_and_no_second_encoder_pass(tiny_ref, tmp_path, micro_sam):
    import napari_sam

    unetr = reference_unetr(tiny_ref.image_encoder, False, features=8)
    write_micro_sam_checkpoint(tmp_path / "m.pt", tiny_ref.state_dict(), unetr)
    model = load_model(str(tmp_path / "m.pt"))
    img = full_range_image((64, 96), seed=2)
    default = napari_sam.instance_maps(img, model, precision="fp32")  # diameter estimated
    assert set(default) == {"foreground", "center_distances", "boundary_distances"}
    assert all(m.shape == (64, 96) and m.dtype == np.float32 for m in default.values())
    maps = napari_sam.instance_maps(
        img, predictor=Predictor(model, precision="fp32", diameter="off"))
    pred = Predictor(model, precision="fp32", diameter="off")
    pred.set_image(img)
    calls = []
    h = model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        again = pred.instance_maps()
        emb = pred.get_embedding()
        pred2 = Predictor(model, precision="fp32", diameter="off")
        pred2.set_embedding(emb)  # micro-sam's decoder needs only the embedding
        restored = pred2.instance_maps()
    finally:
        h.remove()
    assert calls == []
    for k in maps:
        np.testing.assert_allclose(again[k], maps[k], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(restored[k], again[k])


def _check_full_model(micro_sam, tmp_path, model_type, ref_sam, image_hw):
    """micro-sam's own loader and AIS initialisation against ours on one checkpoint. The
    image's long side is the model's input size: no resize, whose rounding differs (SAM
    resizes uint8 pixels with PIL, napari-sam resizes floats)."""
    unetr = reference_unetr(ref_sam.image_encoder, model_type == "vit_t")
    write_micro_sam_checkpoint(tmp_path / "m.pt", ref_sam.state_dict(), unetr)
    predictor, decoder = micro_sam.get_predictor_and_decoder(
        model_type, str(tmp_path / "m.pt"), device="cpu")
    img = full_range_image(image_hw, seed=1)
    seg = micro_sam.InstanceSegmentationWithDecoder(predictor, decoder)
    seg.initialize(img)
    model = load_model(str(tmp_path / "m.pt"))
    assert model.config.name == model_type
    pred = Predictor(model, precision="fp32", diameter="off")
    pred.set_image(img)
    maps = pred.instance_maps()
    for name, want in seg.get_state().items():
        r = rel(maps[name], want)
        print(f"{model_type} {model.config.instance_decoder} {name}: max rel diff {r:.2e}")
        assert r <= RTOL, (name, r)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_vit_b_matches_micro_sam(micro_sam, tmp_path, threads):
    """The full ViT-B chain. The decoder amplifies the encoder's rounding about 50-fold, so
    this holds only because the fp32 encoder's neck computes as SAM's does (its input in
    SAM's memory layout, the norms in SAM's order; `ImageEncoderViT.forward`,
    `LayerNorm2d.sam_order`); with the fused kernels there it was 7e-5 to 2e-4 depending on
    the thread count. Both thread counts are pinned, so each run is reproducible."""
    from testing_utils import torch_threads

    from napari_sam.model.config import SAM_VIT_B

    with torch_threads(threads):
        torch.manual_seed(1)
        _check_full_model(micro_sam, tmp_path, "vit_b",
                          reference_stub.build_reference(SAM_VIT_B), (768, 1024))


@pytest.mark.slow
def test_vit_t_matches_micro_sam(micro_sam, mobile_sam, tmp_path):
    torch.manual_seed(2)
    _check_full_model(micro_sam, tmp_path, "vit_t", mobile_sam.build_sam_vit_t().eval(),
                      (768, 1024))
