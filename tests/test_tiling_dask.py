"""Tiles as Dask tasks: a LocalCluster of two workers gives the single-process result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_sam import build_model
from napari_sam.automask import tiled_automask
from napari_sam.training.synthetic import nuclei_image

pytest.importorskip("dask.distributed")

KW = dict(tile_size=256, overlap=64, points_per_side=3, pred_iou_thresh=0, stability_thresh=0,
          min_candidate_iou=0, min_candidate_stability=0, precision="fp32")


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    import tifffile

    img, _ = nuclei_image(2, size=(420, 600))  # 2 x 3 tiles
    path = tmp_path_factory.mktemp("dask") / "scene.tif"
    tifffile.imwrite(path, img, tile=(128, 128))
    torch.manual_seed(0)
    model = build_model("test_vit")
    single = tiled_automask(str(path), model, **KW)
    assert single.grid_shape == (2, 3) and len(single.records) > 0
    return path, model, single


def test_local_cluster_of_two_workers_equals_single_process(case, tmp_path):
    """processes=False (workers are threads of this process, but real Dask workers with
    their own state, scheduler and task hand-over): a cluster of processes would start two
    more Python interpreters with torch, too heavy for the shared test machine."""
    from dask.distributed import Client, LocalCluster

    path, model, single = case
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        res = tiled_automask(str(path), model, out=tmp_path / "l.zarr", scheduler=client,
                             tiles_per_task=1, cache=tmp_path / "cache",
                             cache_dtype="float32", **KW)
        ran = client.run(lambda: 1)
    assert len(ran) == 2
    np.testing.assert_array_equal(np.asarray(res.labels), single.labels)
    assert res.records == single.records


def test_thread_pool_equals_single_process(case):
    path, model, single = case
    res = tiled_automask(str(path), model, scheduler="threads", workers=2, **KW)
    np.testing.assert_array_equal(res.labels, single.labels)


def test_many_images_as_tasks_equal_single_process(case, tmp_path):
    """`automask_files`: one task per image (each tiled inside its task)."""
    import zarr
    from dask.distributed import Client, LocalCluster

    from napari_sam.automask.tiled import automask_files

    path, model, single = case
    paths = [path, path.parent / "copy.tif"]
    paths[1].write_bytes(path.read_bytes())
    out = lambda p: tmp_path / (Path(p).stem + ".zarr")  # noqa: E731
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        done = automask_files(paths, out, scheduler=client, model=model, **KW)
    assert [n for _, n in done] == [len(single.records)] * 2
    for p in paths:
        np.testing.assert_array_equal(zarr.open_array(str(out(p)), mode="r")[:], single.labels)
