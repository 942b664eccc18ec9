"""Validation scores of a model being fine-tuned (`finetune.py`) on the user's samples."""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch

from .evaluate import prompt_ious, sweep_automask


def validate(model, samples: List, max_objects: int = 40, automask: bool = False,
             amp: Optional[torch.dtype] = None) -> dict:
    """Scores on validation samples (`user_data.Sample`: uint8 (Y, X, 3) pixels, labels).

    click_miou / box_miou: `evaluate.prompt_ious` over the first `max_objects` objects of
    each sample (0: all); score: their mean. With `automask`: the automask thresholds with
    the best F1@0.5 on the samples (`evaluate.sweep_automask`) as "automask", and that
    F1 as "automask_f1@0.5" (and "automask_f1@0.75")."""
    from ..predictor import Predictor

    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]
    was_training = model.training
    # no automatic zoom: the whole sample at the scale the training views were made at
    pred = Predictor(model, device=model.device, precision=precision, diameter="off")
    try:
        click, box = [], []
        for s in samples:
            c, b = prompt_ious(pred, s.pixels, s.labels, max_objects)
            click += c
            box += b
        res = {"click_miou": round(float(np.mean(click)), 4),
               "box_miou": round(float(np.mean(box)), 4), "objects": len(click)}
        res["score"] = round((res["click_miou"] + res["box_miou"]) / 2, 4)
        if automask:
            rows = sweep_automask([(s.pixels, s.labels) for s in samples], pred)
            res["automask"] = {"pred_iou_thresh": rows[0]["pred_iou_thresh"],
                               "stability_thresh": rows[0]["stability_thresh"]}
            res["automask_f1@0.5"] = round(rows[0]["f1@0.5"], 4)
            res["automask_f1@0.75"] = round(rows[0]["f1@0.75"], 4)
        return res
    finally:
        model.train(was_training)
