"""Reading checkpoint files: the layouts napari-sam understands, and clear errors otherwise."""

from __future__ import annotations

import pytest
import reference_stub
import torch
from testing_utils import randomize_, torch_threads

import napari_sam.device
from napari_sam.model import (
    CheckpointError,
    Sam,
    infer_config,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from napari_sam.model.config import (
    MOBILE_SAM,
    SAM_VIT_B,
    SAM_VIT_H,
    SAM_VIT_L,
    TEST_TINY_VIT,
    TEST_VIT,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module", params=[TEST_VIT, TEST_TINY_VIT], ids=lambda c: c.name)
def model(request):
    return randomize_(Sam(request.param), seed=3).eval()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def saved(tmp_path, obj, name="model.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


# --- layouts --------------------------------------------------------------------------------

def test_plain_state_dict(model, tmp_path):
    path = saved(tmp_path, model.state_dict(), "plain.pth")
    ckpt = read_checkpoint(path)
    assert ckpt.config is None and ckpt.notes == []
    loaded = load_model(path, device="cpu")
    assert loaded.config == model.config  # detected from names and shapes alone
    assert loaded.checkpoint_notes == []
    assert_same_weights(loaded, model)


@pytest.mark.parametrize("cfg", [SAM_VIT_B, SAM_VIT_L, SAM_VIT_H, MOBILE_SAM], ids=lambda c: c.name)
def test_infer_config_full_size(cfg):
    with torch.device("meta"):  # shapes only, no memory
        sd = Sam(cfg).state_dict()
    assert infer_config(sd) == cfg


@pytest.mark.parametrize("cfg", [SAM_VIT_B, SAM_VIT_L, SAM_VIT_H], ids=lambda c: c.name)
def test_infer_config_from_reference_keys(segment_anything, cfg):
    """Names and shapes as Meta's own modules produce them."""
    with torch.device("meta"):
        sd = reference_stub.build_reference(cfg).state_dict()
    assert infer_config(sd) == cfg


def test_infer_config_from_mobile_sam_keys(mobile_sam):
    sd = mobile_sam.build_sam_vit_t().state_dict()  # 10 M parameters: fine on the CPU
    assert infer_config(sd) == MOBILE_SAM


def test_wrapped_prefixes(tmp_path):
    model = randomize_(Sam(TEST_VIT), seed=4)
    sd = model.state_dict()
    path = saved(tmp_path, {"state_dict": {"module." + k: v for k, v in sd.items()}})
    assert_same_weights(load_model(path), model)


def test_micro_sam_layout(tmp_path):
    model = randomize_(Sam(TEST_VIT), seed=5)
    lin = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(lin.parameters())
    lin(torch.ones(1, 4)).sum().backward()
    opt.step()
    obj = {
        "model_state": {"sam." + k: v for k, v in model.state_dict().items()},
        "decoder_state": {"base.conv.weight": torch.randn(8, 4, 3, 3), "out.bias": torch.randn(3)},
        "optimizer_state": opt.state_dict(),
        "epoch": 12,
    }
    path = saved(tmp_path, obj, "micro_sam.pt")
    ckpt = read_checkpoint(path)
    assert all(k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder."))
               for k in ckpt.state_dict)
    loaded = load_model(path)
    assert loaded.config == TEST_VIT
    assert_same_weights(loaded, model)
    notes = " ".join(loaded.checkpoint_notes)
    assert "decoder_state" in notes and "2 tensors" in notes
    assert "optimizer_state" in notes and "epoch" in notes


def test_napari_sam_format_keeps_config(tmp_path):
    cfg = TEST_TINY_VIT.with_(name="my_tiny", image_size=512)  # not inferable from weights
    model = randomize_(Sam(cfg), seed=6)
    path = tmp_path / "own.pt"
    save_checkpoint(path, model, extra={"trained_on": "synthetic"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["own.pt"]  # no .partial left
    ckpt = read_checkpoint(path)
    assert ckpt.config is not None
    loaded = load_model(path)
    assert loaded.config == cfg
    assert_same_weights(loaded, model)


def test_load_model_resolves_device(tmp_path, monkeypatch):
    path = saved(tmp_path, Sam(TEST_VIT).state_dict())
    asked = []

    def fake_resolve(device="auto"):
        asked.append(device)
        return torch.device("cpu")

    monkeypatch.setattr(napari_sam.device, "resolve_device", fake_resolve)
    assert load_model(path, device="auto").device == torch.device("cpu")
    assert asked == ["auto"]


# --- errors ---------------------------------------------------------------------------------

def test_truncated_file(tmp_path):
    path = saved(tmp_path, Sam(TEST_VIT).state_dict(), "cut.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt") as err:
        read_checkpoint(path)
    assert "truncated" in str(err.value)
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_model(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("these are not the weights you are looking for\n")
    with pytest.raises(CheckpointError, match="notes.txt"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="notes.txt"):
        load_model(path)


def test_not_a_dict(tmp_path):
    path = saved(tmp_path, torch.zeros(3), "tensor.pt")
    with pytest.raises(CheckpointError, match="tensor.pt.*Tensor"):
        read_checkpoint(path)


_unpickled = []


def _mark():
    _unpickled.append(True)


class _Payload:
    def __reduce__(self):
        return (_mark, ())


def test_no_code_runs_from_a_file(tmp_path):
    path = saved(tmp_path, {"image_encoder.x": torch.zeros(1), "evil": _Payload()}, "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_model(path)
    assert _unpickled == []


def test_unknown_keys(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {f"backbone.layer{i}.weight": torch.randn(4, 4, generator=g) for i in range(3)}
    path = saved(tmp_path, sd, "resnet.pt")
    with pytest.raises(CheckpointError, match="resnet.pt") as err:
        load_model(path)
    msg = str(err.value)
    assert "Segment Anything" in msg and "image_encoder." in msg and "backbone.layer0" in msg


def test_unknown_image_encoder(tmp_path):
    sd = {k: v for k, v in Sam(TEST_VIT).state_dict().items()
          if not k.startswith("image_encoder.")}
    sd["image_encoder.stem.weight"] = torch.zeros(8, 3, 3, 3)
    path = saved(tmp_path, sd)
    with pytest.raises(CheckpointError, match="image encoder"):
        load_model(path)


def test_missing_key(tmp_path):
    sd = Sam(TEST_VIT).state_dict()
    key = "image_encoder.blocks.1.attn.proj.bias"
    del sd[key]
    path = saved(tmp_path, sd, "incomplete.pt")
    with pytest.raises(CheckpointError, match="incomplete.pt") as err:
        load_model(path)
    msg = str(err.value)
    assert "1 missing" in msg and key in msg


def test_unexpected_key(tmp_path):
    sd = Sam(TEST_VIT).state_dict()
    sd["mask_decoder.extra_head.weight"] = torch.zeros(2, 2)
    path = saved(tmp_path, sd, "extra.pt")
    with pytest.raises(CheckpointError, match="1 unexpected.*mask_decoder.extra_head.weight"):
        load_model(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "vit_b.pth"
    with pytest.raises(FileNotFoundError, match="vit_b.pth"):
        read_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="vit_b.pth"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="vit_b.pth"):
        load_model(str(path))
