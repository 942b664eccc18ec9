"""A LocalCluster of two worker *processes* (`scheduler="local"`) equals the single-process
run: the model, the image path and the settings travel to other interpreters, and results
come back through the shared work folder. About 15 s here (two interpreters import torch)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam import build_model
from napari_sam.automask import tiled_automask
from napari_sam.training.synthetic import nuclei_image

pytest.importorskip("dask.distributed")


@pytest.mark.slow
def test_local_cluster_of_two_processes_equals_single_process(tmp_path):
    import tifffile

    img, _ = nuclei_image(2, size=(420, 600))
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, img, tile=(128, 128))
    model = build_model("test_vit")
    kw = dict(tile_size=256, overlap=64, points_per_side=3, pred_iou_thresh=0,
              stability_thresh=0, min_candidate_iou=0, min_candidate_stability=0,
              precision="fp32")
    single = tiled_automask(str(path), model, **kw)
    res = tiled_automask(str(path), model, scheduler="local", workers=2, **kw)
    assert len(single.records) > 0
    np.testing.assert_array_equal(res.labels, single.labels)
    assert res.records == single.records
