"""`Sam2.signature()` follows its weights like `Sam.signature()` (one implementation, in
`model/signature.py`): the key of embedding caches must change when the weights do."""

import pickle

import numpy as np
import pytest
import torch

from napari_sam.model.sam2 import TEST_SAM2, Sam2
from napari_sam.predictor import Predictor
from testing_utils import randomize_


def _model(seed):
    return randomize_(Sam2(TEST_SAM2), seed=seed).eval()


def test_sam2_signature_follows_load_state_dict():
    a, b = _model(1), _model(2)
    sig_a, sig_b = a.signature(), b.signature()
    assert sig_a != sig_b and len(sig_a) == 16
    state_a = {k: v.clone() for k, v in a.state_dict().items()}
    a.load_state_dict(b.state_dict())
    assert a.signature() == sig_b
    a.load_state_dict(state_a)
    assert a.signature() == sig_a


def test_sam2_signature_follows_in_place_changes_and_invalidate_caches():
    m = _model(3)
    before = m.signature()
    assert m.signature() is m.signature()  # kept while nothing changes
    with torch.no_grad():
        m.obj_ptr_tpos_proj.bias.add_(1.0)
    changed = m.signature()
    assert changed != before
    weight = m.obj_ptr_tpos_proj.weight
    weight.data.mul_(0.5)  # `.data` bypasses the version counter: invalidate_caches
    assert m.signature() == changed
    m.invalidate_caches()
    assert m.signature() != changed


def test_sam2_predictor_refuses_an_embedding_of_the_old_weights(one_thread):
    model = _model(5)
    pred = Predictor(model, device="cpu", precision="fp32")
    emb = pred.set_image(np.random.default_rng(0).integers(0, 255, (32, 48), dtype=np.uint8))
    pred.set_embedding(emb)
    model.load_state_dict(_model(6).state_dict())
    with pytest.raises(ValueError, match="another model"):
        pred.set_embedding(emb)


def test_sam2_pickles_without_its_memos_and_keeps_its_signature():
    m = _model(7)
    sig = m.signature()
    m.mask_upscaler((64, 64), (40, 50))  # a size-keyed cache on the model
    copy = pickle.loads(pickle.dumps(m))
    assert "_signature" not in copy.__dict__ and "_upscalers" not in copy.__dict__
    assert copy.signature() == sig and m.signature() == sig
    assert "_upscalers" in m.__dict__  # pickling leaves the live model's caches alone
