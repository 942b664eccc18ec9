"""The InferenceSession owns the speed state: one lifetime, invalidated when weights change.

- A weight change through `load_state_dict` (or `train()`) is seen by the next call of a live
  Predictor: its results are those of a fresh Predictor of the new weights.
- The modules keep nothing themselves: using a model leaves every submodule's attributes
  as they were (but the model's signature memo).
- A session is active only inside `with`, per thread, and pickles as an empty one.
"""

from __future__ import annotations

import dataclasses
import pickle
import threading

import numpy as np
import torch
from testing_utils import randomize_, torch_threads

from napari_sam.model import Sam
from napari_sam.model.config import TEST_VIT
from napari_sam.predictor import Predictor
from napari_sam.runtime import session as S

IMG = np.random.default_rng(0).integers(0, 255, (120, 90, 3), dtype=np.uint8)


def _model(seed):
    return randomize_(Sam(TEST_VIT), seed=seed).eval()


def test_load_state_dict_is_seen_by_the_next_predict():
    """With the same embedding (the decoder's weights changed under a live predictor) and
    with a new image (the encoder's too)."""
    with torch_threads(1):
        model, other = _model(1), _model(2)
        pred = Predictor(model, "cpu", "bf16", diameter="off")
        emb = pred.set_image(IMG)
        before = pred.predict(points=[[60, 40]])[2]
        kept = dict(pred.session._derived)
        assert kept  # bf16 weight copies, tables ... were kept
        model.load_state_dict(other.state_dict())
        same_image = pred.predict(points=[[60, 40]])[2]  # the old embedding, new decoder
        fresh = Predictor(_model(2), "cpu", "bf16", diameter="off")
        fresh.set_embedding(dataclasses.replace(emb, model_signature=fresh.model.signature()))
        expected_same = fresh.predict(points=[[60, 40]])[2]
        pred.set_image(IMG)
        after = pred.predict(points=[[60, 40]])[2]
        fresh.set_image(IMG)
        expected = fresh.predict(points=[[60, 40]])[2]
    assert not np.array_equal(before, same_image)
    np.testing.assert_array_equal(same_image, expected_same)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, expected)
    # set_image dropped the old state: nothing of it is kept beside the new one
    assert not any(v is pred.session._derived.get(k) for k, v in kept.items())


def test_train_mode_and_invalidate_drop_the_state():
    model = _model(3)
    pred = Predictor(model, "cpu", "bf16", diameter="off")
    pred.set_image(IMG)
    assert pred.session._derived
    model.train()
    assert pred.session.refresh() and not pred.session._derived
    model.eval()
    pred.set_image(IMG)
    assert pred.session._derived
    pred.invalidate()
    assert not pred.session._derived


def test_modules_keep_nothing():
    model = _model(4)
    before = {name: set(m.__dict__) for name, m in model.named_modules()}
    for precision in ("bf16", "fp32"):
        pred = Predictor(model, "cpu", precision, diameter="off")
        pred.set_image(IMG)
        pred.predict(points=[[60, 40]])
        pred.predict(box=[10, 10, 80, 70])
    after = {name: set(m.__dict__) for name, m in model.named_modules()}
    after[""].discard("_signature")
    assert after == before


def test_session_is_active_only_inside_with_and_per_thread():
    model = _model(5)
    s, t = S.InferenceSession(model), S.InferenceSession(model)
    assert S.current() is None
    seen = []
    with s:
        assert S.current() is s
        with t:
            assert S.current() is t
        assert S.current() is s
        worker = threading.Thread(target=lambda: seen.append(S.current()))
        worker.start()
        worker.join()
        with torch.enable_grad():
            assert S.caching() is None  # nothing kept under autograd
        with torch.no_grad():
            assert S.caching() is s
    assert S.current() is None and seen == [None]


def test_session_pickles_as_an_empty_one():
    model = _model(6)
    pred = Predictor(model, "cpu", "bf16", diameter="off")
    pred.set_image(IMG)
    copy = pickle.loads(pickle.dumps(pred.session))
    assert isinstance(copy, S.InferenceSession) and not copy._derived
    assert copy.attention == pred.session.attention
    assert copy.model.signature() == model.signature()


def test_predictor_refuses_another_models_session():
    a, b = _model(7), _model(8)
    try:
        Predictor(a, "cpu", "fp32", session=S.InferenceSession(b))
    except ValueError as err:
        assert "another model" in str(err)
    else:
        raise AssertionError("accepted another model's session")
