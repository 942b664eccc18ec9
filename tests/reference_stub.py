"""Test-only stand-in for the few torchvision functions `segment_anything` and `sam2` import.

torchvision cannot be installed beside this torch build, and the reference package is only
a test oracle, so `install()` registers a minimal `torchvision` in `sys.modules` before
`segment_anything` is imported. Never imported by the package itself.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import torch


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order = scores.argsort(descending=True)
    keep = []
    area = _box_area(boxes)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        lt = torch.maximum(boxes[i, :2], boxes[:, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[:, 2:])
        wh = (rb - lt).clamp(min=0)
        inter = wh[:, 0] * wh[:, 1]
        iou = inter / (area[i] + area - inter)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long)


def _batched_nms(boxes, scores, idxs, iou_threshold):
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return _nms(boxes + offsets[:, None], scores, iou_threshold)


def _to_pil_image(arr):
    from PIL import Image

    return Image.fromarray(np.asarray(arr))


def _resize(img, size):
    from PIL import Image

    h, w = size
    return img.resize((w, h), Image.BILINEAR)


class _ToTensor(torch.nn.Module):
    """(H, W, C) uint8 array -> (C, H, W) float in 0-1, as torchvision's ToTensor."""

    def __call__(self, pic):
        arr = np.asarray(pic)
        if arr.ndim == 2:
            arr = arr[..., None]
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        return t.float().div(255) if t.dtype == torch.uint8 else t.float()


class _Resize(torch.nn.Module):
    """torchvision's Resize on tensors: bilinear with antialiasing (its default)."""

    def __init__(self, size):
        super().__init__()
        self.size = [int(s) for s in size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x[None], size=self.size, mode="bilinear",
                                               align_corners=False, antialias=True)[0]


class _Normalize(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std


def install() -> None:
    if "torchvision" in sys.modules and not getattr(sys.modules["torchvision"], "_stub", False):
        return
    tv = types.ModuleType("torchvision")
    tv._stub = True
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms, boxes.box_area, boxes.nms = _batched_nms, _box_area, _nms
    ops.boxes = boxes
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.resize, functional.to_pil_image = _resize, _to_pil_image
    transforms.functional = functional
    # the tensor modules sam2's SAM2Transforms builds (and scripts)
    transforms.ToTensor, transforms.Resize, transforms.Normalize = _ToTensor, _Resize, _Normalize
    tv.ops, tv.transforms = ops, transforms
    sys.modules.update({
        "torchvision": tv, "torchvision.ops": ops, "torchvision.ops.boxes": boxes,
        "torchvision.transforms": transforms, "torchvision.transforms.functional": functional,
    })


def build_reference(cfg):
    """The reference model for one of our configs, with its own random init."""
    install()
    from functools import partial

    from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                           TwoWayTransformer)

    enc = cfg.encoder
    d = cfg.prompt_embed_dim
    image_encoder = ImageEncoderViT(
        depth=enc.depth, embed_dim=enc.embed_dim, img_size=cfg.image_size, mlp_ratio=enc.mlp_ratio,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=enc.num_heads,
        patch_size=enc.patch_size, qkv_bias=True, use_rel_pos=True,
        global_attn_indexes=enc.global_attn_indexes, window_size=enc.window_size, out_chans=d)
    g = cfg.embed_grid
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(embed_dim=d, image_embedding_size=(g, g),
                                     input_image_size=(cfg.image_size, cfg.image_size),
                                     mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=cfg.num_multimask_outputs,
            transformer=TwoWayTransformer(depth=cfg.decoder_depth, embedding_dim=d,
                                          mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_heads),
            transformer_dim=d, iou_head_depth=3, iou_head_hidden_dim=cfg.iou_head_hidden_dim),
        pixel_mean=list(cfg.pixel_mean), pixel_std=list(cfg.pixel_std),
    ).eval()
