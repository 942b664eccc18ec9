"""Fixtures for the napari GUI tests: tiny models and a wait helper.

`disk_model` is the tiny `test_vit` network whose decoder is replaced by a rule that is easy
to check: each positive click gives a disk (radius 8 px of the model's input frame for the
first candidate, larger for the others), a negative click cuts a disk out, a box gives the
box, a mask input alone is returned as is. Everything else (encoder, worker, Predictor,
coordinate conversion, upscaling) is the real code.
"""

from __future__ import annotations


import pytest
import torch

from napari_sam import build_model
from napari_sam.model.sam import Sam

torch.set_num_threads(1)  # the CI box has 2 cores shared with other jobs

RADII = (8.0, 12.0, 16.0)   # in model input pixels
SCORES = (0.9, 0.8, 0.7)


class DiskSam(Sam):
    def decode(self, embeddings, points=None, boxes=None, mask_input=None, multimask=True):
        m, s = self.config.mask_size, self.config.image_size
        yy, xx = torch.meshgrid(torch.arange(m) + 0.5, torch.arange(m) + 0.5, indexing="ij")
        yy, xx = yy * s / m, xx * s / m  # low-res pixel centres in input pixels
        radii = RADII if multimask else RADII[:1]
        out = torch.full((1, len(radii), m, m), -10.0)
        for k, r in enumerate(radii):
            inside = torch.zeros(m, m, dtype=torch.bool)
            if boxes is not None:
                x0, y0, x1, y1 = boxes.reshape(-1, 4)[0].tolist()
                inside |= (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
            elif points is None and mask_input is not None:
                inside |= mask_input.reshape(m, m) > 0
            if points is not None:
                xy, lab = points
                for (x, y), label in zip(xy[0].tolist(), lab[0].tolist()):
                    disk = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
                    inside = inside | disk if label == 1 else inside & ~disk
            out[0, k][inside] = 10.0
        self.last_inputs = dict(points=points, boxes=boxes, mask_input=mask_input,
                                multimask=multimask)
        return out, torch.tensor([SCORES[: len(radii)]])


@pytest.fixture(scope="session")
def disk_model():
    tiny = build_model("test_vit")
    model = DiskSam(tiny.config)
    model.load_state_dict(tiny.state_dict())
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model():
    return build_model("test_vit")


def wait_ready(qtbot, widget, timeout=20_000):
    qtbot.waitUntil(lambda: widget.ready, timeout=timeout)


@pytest.fixture
def wait():
    return wait_ready

