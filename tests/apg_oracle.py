"""Our Predictor behind the interface micro-sam's `batched_inference` calls on a
segment-anything `SamPredictor`, so that micro-sam's `AutomaticPromptGenerator` rules can
be run on exactly our mask logits (test helper; also used by benchmarks/bench_ais.py)."""

from __future__ import annotations

import types

import torch


class OursAsSamPredictor:
    def __init__(self, predictor) -> None:
        self._p = predictor
        emb = predictor.get_embedding()
        self.original_size, self.input_size = emb.original_size, emb.input_size
        self.device = torch.device("cpu")
        self.model = types.SimpleNamespace(mask_threshold=0.0)

    def get_image_embedding(self):
        return self._p.get_embedding().features

    @torch.no_grad()
    def predict_torch(self, point_coords=None, point_labels=None, boxes=None, mask_input=None,
                      multimask_output=True, return_logits=False):
        # micro-sam's batched_inference maps prompts to a 1024 frame (ResizeLongestSide(1024));
        # a tiny test model's frame is smaller: map them to ours
        from segment_anything.utils.transforms import ResizeLongestSide

        h, w = self.original_size
        nh, nw = ResizeLongestSide.get_preprocess_shape(h, w, 1024)
        fx, fy = self.input_size[1] / nw, self.input_size[0] / nh
        if point_coords is not None:
            point_coords = point_coords * torch.tensor([fx, fy])
        if boxes is not None:
            boxes = boxes * torch.tensor([fx, fy, fx, fy])
        lab = None if point_labels is None else point_labels.long()
        low, iou = self._p.predict_lowres(point_coords, lab, boxes, mask_input,
                                          multimask_output)
        logits = self._p.upscale(low).float()
        return (logits if return_logits else logits > 0), iou, low
