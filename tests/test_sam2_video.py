"""SAM 2.1 video / volume propagation: parity of `VideoPredictor` with Meta's
`SAM2VideoPredictor` on an 8-frame clip (random weights, fp32), and `track_objects`.

The parity model is SAM 2.1 tiny's configuration with a much smaller Hiera trunk, one
memory-attention layer and a 128-pixel input (`sam2_reference.MICRO_OVERRIDES`): every
step of the video predictor in seconds. Scenario: a click, a box and a mask prompt on two
frames for three objects, forward and backward propagation, a correction click on a tracked
frame, forward again. Compared: the mask logits of every object on every frame, at the
frames' resolution.

- memories kept in float32 on both sides: max |ours - ref| <= 1e-4 * max |ref|;
- memories in bfloat16 (SAM 2's default, on both sides): rounding to bfloat16 turns float32
  differences of 1e-7 into 4e-3 steps for a few memory values, which later frames read, so
  the bound there is 2e-2 (measured figures are printed and in docs/sam2.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2_reference import MICRO_OVERRIDES, build_reference, micro_config, ours_from
from testing_utils import randomize_

from napari_sam.model import build_model
from napari_sam.transforms import to_model_pixels
from napari_sam.video_predictor import VideoPredictor, track_objects

RTOL = 1e-4


def clip(n=8, h=120, w=150, seed=0):
    """uint8 RGB frames: noise plus a bright square moving right, a dark disc moving down."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(60, 120, (n, h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for t in range(n):
        frames[t, 30:60, 20 + 5 * t:50 + 5 * t] = 230
        frames[t][(yy - 40 - 6 * t) ** 2 + (xx - 110) ** 2 < 15 ** 2] = 10
    return frames


def rel(ours, ref) -> float:
    ref = np.asarray(ref, np.float64)
    return float(np.abs(np.asarray(ours, np.float64) - ref).max() / np.abs(ref).max())


class _KeepFloat(torch.Tensor):
    """A memory tensor that ignores the reference's cast to bfloat16 (test-only)."""

    def to(self, *args, **kwargs):
        if torch.bfloat16 in args or kwargs.get("dtype") is torch.bfloat16:
            return self
        return super().to(*args, **kwargs)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ref = build_reference("tiny", 128, video=True, overrides=MICRO_OVERRIDES)
    with torch.no_grad():  # objects present: the parity would be trivial on -1024 masks
        ref.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(4.0)
    ours = ours_from(ref, micro_config())
    # The reference stores memories in bfloat16; on a frame with memories but no object
    # pointer yet (an object prompted only on later frames) its fp32 memory attention gets
    # a bfloat16 memory and fails on CPU. Converting that memory to float32 is exact and
    # changes nothing elsewhere (with pointers present torch.cat already promotes it).
    orig = ref.memory_attention.forward
    ref.memory_attention.forward = lambda curr, memory, curr_pos=None, memory_pos=None, \
        num_obj_ptr_tokens=0: orig(curr, memory.float(), curr_pos, memory_pos, num_obj_ptr_tokens)
    return ref, ours


@pytest.mark.parametrize("memory_dtype", ["float32", "bfloat16"])
def test_video_parity(pair, tmp_path, memory_dtype):
    from PIL import Image

    ref, ours = pair
    encode = type(ref)._encode_new_memory.__get__(ref)
    if memory_dtype == "float32":
        def keep_float(*args, **kwargs):
            feats, pos = encode(*args, **kwargs)
            return feats.as_subclass(_KeepFloat), pos
        ref._encode_new_memory = keep_float
    else:
        ref._encode_new_memory = encode
    frames = clip()
    for t, f in enumerate(frames):  # the reference reads a folder of JPEGs ...
        Image.fromarray(f).save(tmp_path / f"{t:05d}.jpg")
    with torch.inference_mode():
        state = ref.init_state(str(tmp_path))
    # ... and then gets exactly our preprocessed frames (its loader resizes with PIL)
    state["images"] = torch.cat([ours.preprocess(ours.to_input(to_model_pixels(f)))
                                 for f in frames])
    state["cached_features"] = {}
    vp = VideoPredictor(ours, frames, device="cpu", precision="fp32",
                        memory_dtype=getattr(torch, memory_dtype))
    worst = {}

    def check(tag, a, b):
        b = b.squeeze(1).float().numpy() if torch.is_tensor(b) else b
        assert np.asarray(a).shape == b.shape, (tag, np.shape(a), b.shape)
        assert b.max() > -1000, f"{tag}: the reference lost the object"
        worst[tag] = rel(a, b)

    with torch.inference_mode():
        _, _, r = ref.add_new_points_or_box(state, 3, 1, points=[[35.0, 45.0]], labels=[1])
    check("click f3", vp.add_prompt(3, 1, points=[[45, 35]])[None], r[:1])
    with torch.inference_mode():
        _, _, r = ref.add_new_points_or_box(state, 3, 2, box=[95, 20, 128, 75])
    check("box f3", vp.add_prompt(3, 2, box=[20, 95, 75, 128])[None], r[1:2])
    mask = np.zeros(frames.shape[1:3], bool)
    mask[45:75, 95:125] = True
    with torch.inference_mode():
        _, _, r = ref.add_new_mask(state, 1, 3, mask)
    check("mask f1", vp.add_prompt(1, 3, mask=mask)[None], r[2:3])

    def run(tag, **kw):
        with torch.inference_mode():
            theirs = list(ref.propagate_in_video(state, **kw))
        mine = list(vp.propagate(**kw))
        assert [t for t, *_ in mine] == [t for t, *_ in theirs]
        for (t, ids, a), (_, rids, b) in zip(mine, theirs):
            assert list(ids) == list(rids)
            check(f"{tag} frame {t}", a, b)

    run("forward")
    run("backward", reverse=True)
    with torch.inference_mode():  # a correction on a tracked frame reads the memory
        _, _, r = ref.add_new_points_or_box(state, 5, 1, points=[[70.0, 45.0]], labels=[0],
                                            clear_old_points=False)
    check("correction f5", vp.add_prompt(5, 1, points=[[45, 70]], point_labels=[0],
                                         clear=False)[None], r[:1])
    run("forward again")
    for tag, v in worst.items():
        print(f"sam2 video ({memory_dtype} memory) {tag}: logits {v:.1e}")
    assert len(worst) >= 3 + 7 + 2 + 1 + 7
    assert max(worst.values()) <= (RTOL if memory_dtype == "float32" else 2e-2)


def test_track_objects_and_bounded_memory(one_thread):
    model = randomize_(build_model("test_sam2"), seed=2)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(4.0)
    stack = (clip(12, 64, 80)[..., 0].astype(np.uint16) * 40)  # 16-bit grayscale volume
    vp = VideoPredictor(model, stack, device="cpu", precision="fp32", memory_frames=3,
                        cache_frames=2)
    vp.add_prompt(1, 1, points=[[40, 40]])
    seen = [t for t, _, _ in vp.propagate()]
    assert seen == list(range(1, 12))
    assert len(vp._features) <= 2
    # kept: the frames within 3 of the prompted frame 1 and of the last one, 11
    assert set(vp._objects[1].non_cond) == {2, 3, 4, 8, 9, 10, 11}
    seen = [t for t, _, _ in vp.propagate(reverse=True)]
    assert seen == [1, 0]
    labels = track_objects(model, stack, {1: {"frame": 6, "points": [[40, 40]]},
                                          2: {"frame": 2, "box": [10, 10, 30, 40]}},
                           device="cpu", precision="fp32")
    assert labels.shape == stack.shape and labels.dtype == np.uint32
    assert set(np.unique(labels)) <= {0, 1, 2}
    with pytest.raises(ValueError, match="SAM 2.1"):
        VideoPredictor(build_model("test_vit"), stack)
    with pytest.raises(IndexError, match="outside the stack"):
        vp.add_prompt(12, 1, points=[[1, 1]])
    with pytest.raises(ValueError, match="outside the frames"):
        vp.add_prompt(0, 1, points=[[100, 1]])
