"""One SAM 2 tracking step for one object on one frame, and the memory it leaves behind.

This is the model side of `napari_sam.video_predictor` (which owns frames, prompts and the
per-object bookkeeping). Everything here is in the model's frame: points (x, y) in pixels
of the S x S input, masks as (1, 1, m, m) low-res logits. The rules follow SAM 2.1's
inference settings (the published configs plus the video predictor's overrides):

- a frame prompted for the first time is decoded from its own features (+ `no_mem_embed`);
  any other frame first attends to the memory bank: the prompted ("conditioning") frames'
  memories, the memories of the 6 frames just before it in tracking order, and the object
  pointers of the prompted frames (in the past) and of the 15 frames before it;
- multimask output when at most one point is given (tracking frames have none), the
  mask with the best predicted IoU kept; masks of frames where the object-score logit is
  <= 0 are set to -1024 and the pointer to `no_obj_ptr`;
- a frame's memory is its features fused with its mask: binarised when the mask came from
  clicks, sigmoid otherwise, scaled x20 - 10; stored in bfloat16 as SAM 2's predictor does
  (rounding to bfloat16 makes later frames sensitive to float32 rounding differences
  upstream: see docs/sam2.md for what that means for parity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

NO_OBJ_SCORE = -1024.0
MEM_SCALE, MEM_BIAS = 20.0, -10.0


@dataclass
class FrameFeatures:
    """One frame's backbone output: decoder high-res features [stride 4, stride 8]
    (1, C/8 or C/4, ., .), stride-16 features (1, C, g, g) and their position encoding.

    Parameters
    ----------
    high_res : list of 2 Tensor
        (1, C/8, 4g, 4g) and (1, C/4, 2g, 2g), after the decoder's conv_s0 / conv_s1.
    feats : Tensor, (1, C, g, g)
        Stride-16 features, without `no_mem_embed`.
    pos : Tensor, (1, C, g, g)
        Sine position encoding of the g x g grid, dtype of `feats`.
    """

    high_res: List[torch.Tensor]
    feats: torch.Tensor
    pos: torch.Tensor


@dataclass
class FrameOutput:
    """What one object leaves on one frame. pred_masks: (1, 1, m, m) low-res logits;
    obj_ptr (1, C); object_score (1, 1); maskmem (1, mem_dim, g, g) bfloat16 or None.

    Parameters
    ----------
    pred_masks : Tensor, (1, 1, m, m) float32
        Low-res mask logits in the model frame (m = `Sam2Config.mask_size`).
    obj_ptr : Tensor, (1, C)
        Object pointer.
    object_score : Tensor, (1, 1)
        Object-score logit (> 0: the object is on the frame).
    maskmem : Tensor, (1, mem_dim, g, g), optional
        The frame's memory (`encode_memory`); None until it is encoded.
    """

    pred_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score: torch.Tensor
    maskmem: Optional[torch.Tensor] = None


def sine_1d(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(N,) positions -> (N, dim): sines of dim/2 frequencies, then their cosines.

    Parameters
    ----------
    pos : Tensor, (N,) float
    dim : int
        Output features (even).
    temperature : float
        Base of the geometric frequency series.

    Returns
    -------
    Tensor, (N, dim) float32
    """
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32, device=pos.device)
    dim_t = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)
    a = pos[:, None] / dim_t
    return torch.cat([a.sin(), a.cos()], dim=-1)


def frame_features(model, pixels: torch.Tensor) -> FrameFeatures:
    """(1, 3, S, S) 0-255 pixels -> `FrameFeatures`.

    Parameters
    ----------
    model : Sam2
    pixels : Tensor, (1, 3, S, S) float
        Pixels in 0-255, resized to the model input (`Sam2.to_input`).

    Returns
    -------
    FrameFeatures
    """
    s0, s1, f2 = model.backbone(pixels)
    return FrameFeatures([s0, s1], f2, model.vision_pos(f2.shape[-1]).to(f2.dtype))


def memory_tokens(model, frame: int, cond: Dict[int, FrameOutput],
                  non_cond: Dict[int, FrameOutput], num_frames: int, reverse: bool,
                  mem_pos: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """The memory bank seen from `frame`: tokens (1, M, mem_dim), their position
    encodings and how many trailing tokens are object pointers.

    Parameters
    ----------
    model : Sam2
    frame : int
        The frame being tracked.
    cond, non_cond : dict of int to FrameOutput
        Outputs of the prompted frames and of the tracked (unprompted) ones, by frame index.
    num_frames : int
        Frames in the stack.
    reverse : bool
        Tracking towards lower frame indexes.
    mem_pos : Tensor, (1, mem_dim, g, g)
        `memory_position`.

    Returns
    -------
    tokens : Tensor, (1, M, mem_dim) float32
        Spatial memories (g*g tokens each, raster order) then the pointer tokens.
    pos : Tensor, (1, M, mem_dim)
        Their position encodings.
    n_ptr : int
        Trailing pointer tokens (C / mem_dim per pointer).
    """
    cfg = model.config
    n_mem, c, mdim = cfg.num_maskmem, cfg.prompt_embed_dim, cfg.mem_dim
    step = 1 if reverse else -1  # direction of the frames "before" this one
    mems = [(0, out) for out in cond.values()]
    for t_pos in range(1, n_mem):
        mems.append((t_pos, non_cond.get(frame + step * (n_mem - t_pos))))
    tokens, pos = [], []
    for t_pos, out in mems:
        if out is None or out.maskmem is None:
            continue
        tokens.append(out.maskmem.float().flatten(2).transpose(1, 2))
        pos.append(mem_pos.flatten(2).transpose(1, 2)
                   + model.maskmem_tpos_enc[n_mem - t_pos - 1].view(1, 1, mdim))
    max_ptrs = min(num_frames, cfg.max_obj_ptrs)
    sign = -1 if reverse else 1
    ptrs = [((frame - t) * sign, out.obj_ptr) for t, out in cond.items()
            if (t >= frame if reverse else t <= frame)]
    for dt in range(1, max_ptrs):
        t = frame + step * dt
        if t < 0 or t >= num_frames:
            break
        out = non_cond.get(t)
        if out is not None:
            ptrs.append((dt, out.obj_ptr))
    n_ptr = 0
    if ptrs:
        where = torch.tensor([p for p, _ in ptrs], dtype=torch.float32, device=mem_pos.device)
        ptr_pos = model.obj_ptr_tpos_proj(sine_1d(where / (max_ptrs - 1), c))  # (N, mdim)
        vec = torch.cat([p for _, p in ptrs], dim=0)  # (N, C)
        split = c // mdim  # each pointer becomes C/mem_dim tokens of width mem_dim
        tokens.append(vec.reshape(1, -1, mdim))
        pos.append(ptr_pos.repeat_interleave(split, dim=0)[None])
        n_ptr = vec.shape[0] * split
    return torch.cat(tokens, dim=1), torch.cat(pos, dim=1), n_ptr


def conditioned_features(model, ff: FrameFeatures, frame: int, first: bool,
                         cond: Dict[int, FrameOutput], non_cond: Dict[int, FrameOutput],
                         num_frames: int, reverse: bool, mem_pos: torch.Tensor) -> torch.Tensor:
    """(1, C, g, g) features the decoder reads: the frame's own (+ no_mem_embed) on a
    frame prompted for the first time, else after memory attention.

    Parameters
    ----------
    model : Sam2
    ff : FrameFeatures
    frame : int
    first : bool
        The frame is prompted for the first time (no memory attention).
    cond, non_cond, num_frames, reverse, mem_pos
        As in `memory_tokens`.

    Returns
    -------
    Tensor, (1, C, g, g)
    """
    x = ff.feats
    _, c, h, w = x.shape
    if first:
        return x + model.no_mem_embed.view(1, c, 1, 1)
    mem, pos, n_ptr = memory_tokens(model, frame, cond, non_cond, num_frames, reverse, mem_pos)
    curr = x.flatten(2).transpose(1, 2)
    curr_pos = ff.pos.flatten(2).transpose(1, 2)
    out = model.memory_attention(curr, curr_pos, mem.to(curr.dtype), pos.to(curr.dtype),
                                 (h, w), n_ptr)
    return out.transpose(1, 2).reshape(1, c, h, w)


def decode_frame(model, pix: torch.Tensor, ff: FrameFeatures, points=None,
                 mask_input: Optional[torch.Tensor] = None,
                 multimask: Optional[bool] = None) -> FrameOutput:
    """SAM heads on conditioned features: points (xy (1, N, 2), labels (1, N)) in the
    model frame, mask_input (1, 1, m, m) logits. Returns the best mask and its pointer.
    multimask: None = when at most one point (box corners count) is given.

    Parameters
    ----------
    model : Sam2
    pix : Tensor, (1, C, g, g)
        `conditioned_features`.
    ff : FrameFeatures
    points : (Tensor (1, N, 2), Tensor (1, N)), optional
        (x, y) in pixels of the S x S model input, and labels (1, 0, -1, or 2/3 box corners).
    mask_input : Tensor, (1, 1, m', m'), optional
        Mask logits; resized to the low-res size m when m' differs.
    multimask : bool, optional

    Returns
    -------
    FrameOutput
        Without `maskmem`; pred_masks set to -1024 where the object-score logit is <= 0.
    """
    cfg = model.config
    if multimask is None:
        multimask = (0 if points is None else points[1].shape[1]) <= 1
    if points is None:
        points = (torch.zeros(1, 1, 2, device=pix.device),
                  torch.full((1, 1), -1, dtype=torch.long, device=pix.device))
    if mask_input is not None and mask_input.shape[-1] != cfg.mask_size:
        mask_input = F.interpolate(mask_input.float(), (cfg.mask_size, cfg.mask_size),
                                   mode="bilinear", align_corners=False, antialias=True)
    sparse, dense = model.sam_prompt_encoder(points, None, mask_input)
    masks, iou, tokens, obj = model.sam_mask_decoder(
        pix, model.sam_prompt_encoder.get_dense_pe(), sparse, dense, ff.high_res, multimask)
    appearing = obj > 0
    masks = torch.where(appearing[:, :, None, None], masks, NO_OBJ_SCORE).float()
    best = iou.argmax(-1) if multimask else torch.zeros(1, dtype=torch.long, device=iou.device)
    rows = torch.arange(masks.shape[0], device=masks.device)
    low = masks[rows, best][:, None]
    token = tokens[rows, best] if tokens.shape[1] > 1 else tokens[:, 0]
    ptr = model.obj_ptr_proj(token)
    lam = appearing.float()
    ptr = lam * ptr + (1 - lam) * model.no_obj_ptr
    return FrameOutput(low, ptr, obj)


def mask_as_output(model, ff: FrameFeatures, mask: torch.Tensor) -> FrameOutput:
    """A mask prompt (1, 1, S, S) in 0/1 taken as the frame's output without decoding;
    the pointer comes from the decoder run on the mask downsampled to the low-res size.

    Parameters
    ----------
    model : Sam2
    ff : FrameFeatures
    mask : Tensor, (1, 1, S, S)
        0/1 (bool or number) in the model frame.

    Returns
    -------
    FrameOutput
        pred_masks (1, 1, m, m): the mask scaled to -10/+10 and resized; object_score +10
        if the mask has any pixel, else -10; no `maskmem`.
    """
    hi = mask.float() * MEM_SCALE + MEM_BIAS
    m = model.config.mask_size
    low = F.interpolate(hi, (m, m), mode="bilinear", align_corners=False, antialias=True)
    pix = ff.feats
    out = decode_frame(model, pix, ff, None, model.mask_downsample(mask.float()),
                       multimask=False)
    appearing = (mask.flatten(1).float() > 0).any(dim=1, keepdim=True)
    lam = appearing.float()
    score = MEM_SCALE * lam + MEM_BIAS
    ptr = out.obj_ptr
    ptr = lam * ptr + (1 - lam) * model.no_obj_ptr
    return FrameOutput(low, ptr, score)


def encode_memory(model, ff: FrameFeatures, out: FrameOutput, from_clicks: bool,
                  dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The frame's memory (1, mem_dim, g, g) from its features and output mask, stored in
    `dtype` (bfloat16 as in SAM 2's predictor: half the memory of float32).

    Parameters
    ----------
    model : Sam2
    ff : FrameFeatures
    out : FrameOutput
        The frame's output (its pred_masks and object_score are read).
    from_clicks : bool
        Binarise the mask (from clicks) instead of taking its sigmoid.
    dtype : torch.dtype

    Returns
    -------
    Tensor, (1, mem_dim, g, g)
    """
    s = model.config.image_size
    hi = F.interpolate(out.pred_masks, (s, s), mode="bilinear", align_corners=False)
    mask = (hi > 0).float() if from_clicks else torch.sigmoid(hi)
    mask = mask * MEM_SCALE + MEM_BIAS
    feats, _ = model.memory_encoder(ff.feats, mask)
    absent = 1.0 - (out.object_score > 0).float()
    feats = feats + absent[..., None, None] * model.no_obj_embed_spatial[..., None, None]
    return feats.to(dtype)


def memory_position(model, g: int, device) -> torch.Tensor:
    """(1, mem_dim, g, g) position encoding of a memory (the same for every frame).

    Parameters
    ----------
    model : Sam2
    g : int
        Side of the stride-16 grid.
    device : torch.device

    Returns
    -------
    Tensor, (1, mem_dim, g, g) float32
    """
    from .hiera import sine_position_encoding

    return sine_position_encoding(g, g, model.config.mem_dim, device)
