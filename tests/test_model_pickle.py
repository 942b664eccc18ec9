"""A model that has answered prompts still pickles (Dask sends it to worker processes)."""

import pickle

import numpy as np

from napari_sam import Predictor, build_model


def test_used_model_pickles_and_keeps_working():
    model = build_model("test_vit")
    pred = Predictor(model, device="cpu", precision="bf16", diameter="off")
    pred.set_image(np.random.default_rng(0).random((64, 80)))
    before = pred.predict(points=[[10, 20]])[2]
    copy = pickle.loads(pickle.dumps(model))
    again = Predictor(copy, device="cpu", precision="bf16", diameter="off")
    again.set_embedding(pred.get_embedding())
    np.testing.assert_allclose(again.predict(points=[[10, 20]])[2], before, atol=1e-5)
    np.testing.assert_array_equal(pred.predict(points=[[10, 20]])[2], before)
