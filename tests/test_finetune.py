"""Fine-tuning on user annotations: the loss falls and the validation score rises on a tiny
run, the output loads unchanged, resume, cancel, frozen parts, instance head, the CLI."""

import numpy as np
import pytest
import torch

from bundled_status import needs_bundled
from napari_sam.cli import main as cli
from napari_sam.model import build_model, load_model, save_checkpoint
from napari_sam.model.checkpoints import read_checkpoint
from napari_sam.model.config import TEST_VIT
from napari_sam.training.finetune import STATE_SUFFIX, FinetuneConfig, finetune
from napari_sam.training.finetune_eval import AIS_GRID
from napari_sam.training.user_data import from_arrays

pytestmark = pytest.mark.usefixtures("one_thread")


def halo_cells(seed, n=64, grow=3):
    """Bright discs annotated with a `grow`-pixel halo: a labelling convention the bundled
    model does not follow (it outlines the bright disc), which its decoder can learn."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((n, n), np.uint32)
    img = np.full((n, n), 30.0)
    yy, xx = np.mgrid[:n, :n]
    for i in range(1, 5):
        for _ in range(50):
            cy, cx = rng.uniform(10, n - 10, 2)
            r = rng.uniform(4, 6)
            d = (yy - cy) ** 2 + (xx - cx) ** 2
            if (lab[d <= (r + grow + 2) ** 2] == 0).all():
                break
        img[d <= r * r] = 200
        lab[d <= (r + grow) ** 2] = i
    img += rng.normal(0, 8, (n, n))
    return img.astype(np.float32), lab


# the tiny models' preferred object size: the halo cells' (about 12 px estimated) at 1:1, so
# the scale-aware zoom shows each 64 px image in one 64 px input (no tiles)
TINY_SIZE = {"diameter": 12.0, "range": [8.0, 16.0]}


def tiny_model(instance_head=()):
    torch.manual_seed(0)
    model = build_model(TEST_VIT.with_(image_size=64, instance_head=instance_head))
    model.object_size = dict(TINY_SIZE)
    return model


def data(n_train=2):
    return (from_arrays([halo_cells(i) for i in range(n_train)]),
            from_arrays([halo_cells(10)]))


@needs_bundled
def test_finetuning_lowers_the_loss_and_raises_the_validation_score(tmp_path):
    train, val = data(3)
    cfg = FinetuneConfig(minutes=0, max_steps=16, eval_every=8, lr=1e-3, train="decoder",
                         views=2, val_objects=4, batch=2, objects=2)
    records = []
    res = finetune(train, val, tmp_path / "m.pt", cfg, progress=records.append)
    assert [r["step"] for r in records] == [0, 8, 16]
    assert records[2]["loss"] < records[1]["loss"]
    assert res.after["score"] > res.before["score"] + 0.1, records
    assert records[-1]["best"] == max(r["score"] for r in records)  # the best one is kept
    # the output is a napari-sam model with its metadata and recalibrated thresholds
    model = load_model(str(tmp_path / "m.pt"))
    extra = read_checkpoint(tmp_path / "m.pt").extra
    assert extra["finetune"]["trained"] == "decoder" and extra["finetune"]["steps"] == 16
    assert extra["finetune"]["before"]["score"] == res.before["score"]
    assert extra["finetune"]["data"]["train"]["samples"] == 3
    assert set(model.automask_defaults) == {"pred_iou_thresh", "stability_thresh"}
    # AMG and AIS recalibrated (the bundled model has an instance head), the better mode kept
    assert model.automask_defaults == extra["automask"] == res.after["automask"]
    assert model.ais_defaults == extra["ais"] == res.after["ais"]
    assert set(extra["ais"]) == set(AIS_GRID)
    assert model.automask_mode == extra["automask_mode"] == res.after["automask_mode"]
    assert {"amg", "ais"} <= set(extra["automask_calibration"])
    assert 0 <= res.after["automask_f1@0.5"] <= 1 and "automask_f1@0.5" in res.before
    # the views showed the annotated objects (about 16 px with their halo) at the base
    # model's preferred diameter; the estimator finds the bright discs (about 12 px), and
    # the stored object size folds that ratio in, so the default inference (diameter
    # estimated) zooms new images as the training did
    base = load_model("bundled")
    size = extra["object_size"]
    assert 13 < size["annotated_px"] < 20 and 9 < size["estimated_px"] < 15
    assert 0.5 < size["estimate_ratio"] < 0.95
    # the preferred diameter stays the base's; estimates are divided by the ratio
    assert size["diameter"] == pytest.approx(base.object_size["diameter"], abs=0.01)
    assert model.object_size == {"diameter": size["diameter"], "range": size["range"],
                                 "estimate_ratio": size["estimate_ratio"]}
    # frozen encoder: its weights are the base model's
    for (k, a), b in zip(model.image_encoder.state_dict().items(),
                         base.image_encoder.state_dict().values()):
        assert torch.equal(a, b), k
    assert not torch.equal(model.mask_decoder.output_upscaling[0].weight,
                           base.mask_decoder.output_upscaling[0].weight)
    assert not (tmp_path / ("m.pt" + STATE_SUFFIX)).exists()


def test_resume_after_an_interruption_and_cancel(tmp_path):
    train, val = data()
    out = tmp_path / "m.pt"
    cfg = FinetuneConfig(minutes=0, max_steps=4, eval_every=2, val_objects=2, batch=1,
                         objects=1, calibrate=False, checkpoint_minutes=0)

    def crash(rec):
        if rec["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(train, val, out, cfg, progress=crash, model=tiny_model())
    assert (tmp_path / ("m.pt" + STATE_SUFFIX)).is_file() and not out.exists()
    logs, records = [], []
    res = finetune(train, val, out, cfg, progress=records.append, log=logs.append,
                   model=tiny_model())
    assert any("resumed" in m and "step 2" in m for m in logs), logs
    assert [r["step"] for r in records] == [4] and res.steps == 4
    assert [h["step"] for h in res.history] == [0, 2, 4]
    assert load_model(str(out)).config.image_size == 64
    # another base model or other data: the state file is refused
    with pytest.raises(KeyboardInterrupt):
        finetune(train, val, tmp_path / "n.pt", cfg, progress=crash, model=tiny_model())
    with pytest.raises(ValueError, match="belongs to another run"):
        finetune(train[:1], val, tmp_path / "n.pt", cfg, model=tiny_model())
    # cancel: stops at once, still writes the best weights
    res = finetune(train, val, tmp_path / "c.pt", FinetuneConfig(
        minutes=0, max_steps=50, eval_every=1, val_objects=2, batch=1, objects=1,
        calibrate=False), should_stop=lambda: True, model=tiny_model())
    assert res.stopped and res.steps == 0 and (tmp_path / "c.pt").is_file()


def test_decoder_training_and_instance_head(tmp_path):
    train, val = data()
    model = tiny_model(instance_head=(16, 16, 16, 16, 16))
    assert model.has_instance_head
    cfg = FinetuneConfig(minutes=0, max_steps=2, eval_every=2, train="decoder", views=1,
                         val_objects=2, batch=1, objects=1, calibrate=False, lr=1e-3)
    finetune(train, val, tmp_path / "m.pt", cfg, model=model)
    out = load_model(str(tmp_path / "m.pt"))
    assert out.has_instance_head
    changed = {k.split(".")[0] for k, v in out.state_dict().items()
               if not torch.equal(v, model.state_dict()[k])}
    # the best weights may be the first ones if the score did not rise: compare the
    # trained part only when it was kept
    assert changed <= {"mask_decoder", "prompt_encoder", "instance_head"}


def test_cli(tmp_path, capsys):
    import tifffile

    for i in range(3):
        img, lab = halo_cells(i)
        tifffile.imwrite(tmp_path / f"cells_{i}.tif", img)
        tifffile.imwrite(tmp_path / f"cells_{i}_masks.tif", lab)
    base = tmp_path / "base.pt"
    save_checkpoint(base, tiny_model(), {"object_size": TINY_SIZE})
    out = tmp_path / "out.pt"
    args = [str(tmp_path / "cells_?.tif"), "--labels", str(tmp_path), "-o", str(out),
            "--base", str(base), "--max-steps", "2", "--minutes", "0", "--batch", "1"]
    assert cli(["finetune", *args]) == 0
    text = capsys.readouterr().out
    assert "2 training and 1 validation samples" in text
    assert "step     0" in text and "click_miou" in text and "automask_f1@0.5" in text
    assert read_checkpoint(out).extra["finetune"]["base"] == str(base)
    # LoRA adapters from the command line: merged, so the output loads as the base does
    lora = tmp_path / "lora.pt"
    assert cli(["finetune", *args[:4], str(lora), *args[5:], "--train", "decoder",
                "--lora", "2", "--lora-proj"]) == 0
    assert read_checkpoint(lora).extra["finetune"]["lora"]["rank"] == 2
    assert list(load_model(str(lora)).state_dict()) == list(tiny_model().state_dict())
    capsys.readouterr()
    assert cli(["finetune", *args]) == 1  # the output exists: not replaced
    assert "already exists" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "cells_2_masks.tif", np.zeros((64, 32), np.uint32))
    assert cli(["finetune", *args, "--overwrite"]) == 1
    assert "cells_2.tif + cells_2_masks.tif: the image has shape" in capsys.readouterr().err
