"""SAM 2.1 wiring of the volume functions: `segment_volume` and `track` use SAM 2's memory
propagation (`napari_sam.volume.memory`) for SAM 2.1 models, slice-to-slice prompting for
the others, and both paths stay selectable with `method=`. Tiny random SAM 2.1 model
(`test_sam2`), so these check the wiring, not accuracy."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from testing_utils import randomize_

import napari_sam.volume.memory as memory
from napari_sam import Predictor
from napari_sam.model import build_model
from napari_sam.video_predictor import VideoPredictor
from napari_sam.volume import SliceEmbeddings, StopRules, segment_volume, track
from napari_sam.volume.propagate import _connected_to

LOOSE = StopRules(min_area=1, min_area_ratio=0, max_area_ratio=1e9, min_iou=0, min_contrast=0)


@pytest.fixture(scope="module")
def sam2():
    model = randomize_(build_model("test_sam2"), seed=2)
    with torch.no_grad():  # objects present on every frame (random weights)
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(4.0)
    return model.eval()


def square_volume(n=7, h=64, w=80, seed=0):
    """(n, h, w) float32: noise and a bright square drifting right by 2 px per slice."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(0.1, 0.02, (n, h, w)).astype(np.float32)
    for k in range(n):
        vol[k, 20:40, 25 + 2 * k:45 + 2 * k] += 0.8
    return vol


def spy(monkeypatch, owner, name, calls):
    orig = getattr(owner, name)

    def wrapped(*a, **k):
        calls.append(name)
        return orig(*a, **k)
    monkeypatch.setattr(owner, name, wrapped)


def direct(model, vol, z, points, value_range):
    """The VideoPredictor called by hand: forward and backward from z, masks logits > 0,
    each slice's parts connected to the slice before (as segment_volume keeps them)."""
    vp = VideoPredictor(model, vol, device="cpu", precision="fp32", value_range=value_range)
    vp.add_prompt(z, 1, points=points)
    raw = {}
    for reverse in (False, True):
        for t, ids, logits in vp.propagate(reverse=reverse):
            assert ids == [1]
            raw[t] = logits[0] > 0
    out = np.zeros(vol.shape, bool)
    out[z] = raw[z]
    for k in range(z + 1, len(vol)):
        out[k] = _connected_to(raw[k], out[k - 1])
    for k in range(z - 1, -1, -1):
        out[k] = _connected_to(raw[k], out[k + 1])
    return out


def test_segment_volume_uses_the_memory_for_sam2(sam2, monkeypatch):
    vol = square_volume()
    pred = Predictor(sam2, device="cpu", precision="fp32")
    calls = []
    spy(monkeypatch, VideoPredictor, "propagate", calls)
    spy(monkeypatch, Predictor, "predict_lowres", calls)
    emb = SliceEmbeddings(pred, vol)
    seen = []
    m, info = segment_volume(vol, embeddings=emb, z=3, points=[[30, 35]], rules=LOOSE,
                             return_info=True, progress=lambda d, t, msg="": seen.append(d),
                             floor=None)
    assert calls.count("propagate") == 2 and "predict_lowres" not in calls
    assert emb.embedded == 0  # the memory path embeds through the VideoPredictor
    assert m.shape == vol.shape and m.dtype == bool and m[3].any()
    assert info.anchors == (3,) and set(info.stops.values()) == {"edge"}
    assert np.isfinite(info.scores[m.any((1, 2))]).all()
    assert seen[-1] == len(vol)
    expected = direct(sam2, vol, 3, [[30, 35]], emb.value_range)
    np.testing.assert_array_equal(m, expected)
    # method="auto" is the default; "memory" says the same
    m2 = segment_volume(vol, embeddings=emb, z=3, points=[[30, 35]], rules=LOOSE,
                        method="memory", floor=None)
    np.testing.assert_array_equal(m2, m)
    floored = segment_volume(vol, embeddings=emb, z=3, points=[[30, 35]], rules=LOOSE)
    assert not (floored & ~m).any()  # the intensity floor only trims


def test_prompting_path_stays_available_for_sam2(sam2, monkeypatch):
    vol = square_volume(n=4)
    pred = Predictor(sam2, device="cpu", precision="fp32")
    calls = []
    spy(monkeypatch, VideoPredictor, "propagate", calls)
    spy(monkeypatch, Predictor, "predict_lowres", calls)
    m = segment_volume(vol, pred, z=1, points=[[30, 30]], rules=LOOSE, method="prompt")
    assert "propagate" not in calls and calls.count("predict_lowres") >= len(vol)
    assert m.shape == vol.shape and m[1].any()


def test_memory_stops_beyond_the_anchors_and_uses_anchors(sam2, monkeypatch):
    vol = square_volume(n=8)
    pred = Predictor(sam2, device="cpu", precision="fp32")
    prompts = []
    orig = VideoPredictor.add_prompt

    def record(self, frame, obj_id, **kw):
        prompts.append((frame, obj_id, sorted(k for k, v in kw.items() if v is not None)))
        return orig(self, frame, obj_id, **kw)
    monkeypatch.setattr(VideoPredictor, "add_prompt", record)
    mask = np.zeros(vol.shape[1:], bool)
    mask[20:40, 35:55] = True
    m, info = segment_volume(vol, pred, z=2, points=[[30, 32]], anchors={5: {"mask": mask}},
                             rules=StopRules(max_slices=1, min_contrast=0, min_iou=0,
                                             min_area_ratio=0, max_area_ratio=1e9, min_area=1),
                             return_info=True)
    assert prompts == [(2, 1, ["points"]), (5, 1, ["mask"])]
    assert info.anchors == (2, 5)
    assert info.stops == {"above": "max_slices", "below": "max_slices"}
    on = np.flatnonzero(m.any((1, 2)))
    assert on.min() >= 1 and on.max() <= 6  # at most one slice beyond each outer anchor


def test_method_is_checked(sam2):
    vol = square_volume(n=3)
    with pytest.raises(ValueError, match="SAM 2.1"):
        segment_volume(vol, Predictor(build_model("test_vit"), device="cpu"), z=1,
                       points=[[30, 30]], method="memory")
    with pytest.raises(ValueError, match="method must be"):
        segment_volume(vol, Predictor(sam2, device="cpu"), z=1, points=[[30, 30]],
                       method="video")
    assert memory.resolve_method("auto", sam2) == "memory"
    assert memory.resolve_method("auto", build_model("test_vit")) == "prompt"


def test_track_fills_gaps_from_the_memory(sam2, monkeypatch):
    """A cell on frames 0-2 that the per-frame segmentation missed on frame 3 is followed
    into it with SAM 2's memory of its last frames (masks as conditioning frames)."""
    vol = square_volume(n=5)
    per_frame = np.zeros(vol.shape, np.uint32)
    for k in range(3):
        per_frame[k, 20:40, 25 + 2 * k:45 + 2 * k] = k + 1  # ids differ between frames
    per_frame[4, 20:40, 33:53] = 7
    emb = SliceEmbeddings(Predictor(sam2, device="cpu", precision="fp32"), vol)
    prompts = []
    orig = VideoPredictor.add_prompt

    def record(self, frame, obj_id, **kw):
        prompts.append((frame, obj_id))
        return orig(self, frame, obj_id, **kw)
    monkeypatch.setattr(VideoPredictor, "add_prompt", record)
    out = memory.fill_gaps_memory(emb, per_frame, LOOSE)
    # frame 3: the cell's last three frames, followed back by overlap (ids differ per frame)
    assert prompts[:3] == [(2, 1), (1, 1), (0, 1)]
    assert (out[per_frame > 0] == per_frame[per_frame > 0]).all()  # nothing taken away
    assert out[3].any() and set(np.unique(out[3])) == {0, 1}
    # track() takes this path for SAM 2.1 models (method="auto")
    used = []
    monkeypatch.setattr(memory, "fill_gaps_memory",
                        lambda e, p, r, c=None: used.append(True) or p)
    track_module = sys.modules["napari_sam.volume.track"]  # the package's `track` is the function
    monkeypatch.setattr(track_module, "segment_slices", lambda e, progress, cancel, **kw: per_frame.copy())
    res = track(vol, Predictor(sam2, device="cpu"))
    assert used == [True] and res.labels.shape == vol.shape
    used.clear()
    track(vol, Predictor(sam2, device="cpu"), method="prompt")
    assert used == []
