"""LoRA adapters on the image encoder's attention: identity at the start, training lowers the
loss, and the merged checkpoint reproduces the adapted model with the base model's keys."""

import numpy as np
import pytest
import torch

from napari_sam.model import build_model, load_model, save_checkpoint
from napari_sam.model.config import TEST_VIT
from napari_sam.training.lora import LoRALinear, add_lora, merge_lora

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny():
    torch.manual_seed(0)
    return build_model(TEST_VIT.with_(image_size=64)).eval()


def outputs(model, x):
    """Embeddings and the masks / scores of a click, under no_grad."""
    with torch.no_grad():
        emb = model.encode(x)
        pts = (torch.tensor([[[20.0, 30.0]]]), torch.tensor([[1]]))
        masks, iou = model.decode(emb, pts)
    return emb, masks, iou


def test_adapters_start_as_identity_and_only_they_train():
    model = tiny()
    x = torch.rand(1, 3, 64, 64) * 255
    ref = outputs(model, x)
    n = add_lora(model, 4, proj=True)
    assert n == 2 * len(model.image_encoder.blocks)
    for a, b in zip(ref, outputs(model, x)):
        assert torch.equal(a, b)  # B = 0: exactly the base model
    names = [k for k, _ in model.named_parameters()]
    assert "image_encoder.blocks.0.attn.qkv.lora_a" in names
    assert "image_encoder.blocks.0.attn.proj.lora_b" in names
    wrapped = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert all(not m.base.weight.requires_grad for m in wrapped)
    with pytest.raises(ValueError, match="already"):
        add_lora(model, 2)


def test_merged_checkpoint_reproduces_the_adapted_model(tmp_path):
    model = tiny()
    keys = list(model.state_dict())
    x = torch.rand(1, 3, 64, 64) * 255
    add_lora(model, 2)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_b, std=0.05)
    adapted = outputs(model, x)
    assert not torch.allclose(adapted[0], outputs(tiny(), x)[0], atol=1e-3)
    assert merge_lora(model) == len(model.image_encoder.blocks)
    assert list(model.state_dict()) == keys  # the base architecture's names, in order
    save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_model(str(tmp_path / "m.pt"))
    for a, b in zip(adapted, outputs(loaded, x)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_lora_training_lowers_the_loss_and_exports_plain_weights(tmp_path, monkeypatch):
    from test_finetune import data, tiny_model

    import napari_sam.training.finetune as ft
    from napari_sam.training.finetune import FinetuneConfig, finetune

    # each evaluation scores higher than the last, so the last weights are the ones kept
    # (a random tiny model's real score is noise) and the export must carry the adapters
    calls = []

    def rising(*args, **kw):
        res = dict(validate(*args, **kw))
        calls.append(1)
        res["score"] = len(calls) / 10
        return res

    validate = ft.validate
    monkeypatch.setattr(ft, "validate", rising)
    train, val = data()
    base = tiny_model()
    cfg = FinetuneConfig(minutes=0, max_steps=16, eval_every=8, train="decoder", lora_rank=4,
                         lr=2e-3, val_objects=2, batch=2, objects=2, calibrate=False)
    records, logs = [], []
    res = finetune(train, val, tmp_path / "m.pt", cfg, progress=records.append,
                   log=logs.append, model=base)
    assert any("LoRA adapters of rank 4" in m for m in logs)
    assert [r["step"] for r in records] == [0, 8, 16]
    assert records[2]["loss"] < records[1]["loss"]
    out = load_model(str(tmp_path / "m.pt"))  # strict keys: no adapter left
    assert list(out.state_dict()) == list(base.state_dict())
    changed = {k for k, v in out.state_dict().items() if not torch.equal(v, base.state_dict()[k])}
    enc = {k for k in changed if k.startswith("image_encoder.")}
    # in the encoder only the adapted qkv weights can change (biases and the rest frozen)
    assert all(k.endswith("attn.qkv.weight") for k in enc), enc
    assert res.history[-1]["best"] == res.history[-1]["score"]  # the last weights kept
    assert {k.split(".")[2] for k in enc} == set(map(str, range(len(out.image_encoder.blocks))))
    from napari_sam.model.checkpoints import read_checkpoint

    meta = read_checkpoint(tmp_path / "m.pt").extra["finetune"]
    assert meta["lora"] == {"rank": 4, "proj": False, "merged": True}
    with pytest.raises(ValueError, match="train='decoder'"):
        finetune(train, val, tmp_path / "n.pt", FinetuneConfig(train="all", lora_rank=2),
                 model=base)
    assert np.isfinite(records[-1]["loss"])
