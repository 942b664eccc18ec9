"""`Sam.signature()` (the key of embedding caches) follows the weights it is asked about."""

import pickle

import numpy as np
import pytest
import torch

from napari_sam.model import Sam
from napari_sam.model.config import TEST_VIT
from napari_sam.predictor import Predictor
from testing_utils import randomize_


def _model(seed):
    return randomize_(Sam(TEST_VIT), seed=seed).eval()


def test_signature_follows_load_state_dict():
    a, b = _model(1), _model(2)
    sig_a, sig_b = a.signature(), b.signature()
    assert sig_a != sig_b and len(sig_a) == 16
    state_a = {k: v.clone() for k, v in a.state_dict().items()}
    a.load_state_dict(b.state_dict())
    assert a.signature() == sig_b
    a.load_state_dict(state_a)
    assert a.signature() == sig_a


def test_signature_follows_in_place_changes_and_new_parameters():
    m = _model(3)
    before = m.signature()
    assert m.signature() is m.signature()  # kept while nothing changes
    with torch.no_grad():
        m.mask_decoder.iou_prediction_head.layers[0].bias.add_(1.0)
    changed = m.signature()
    assert changed != before
    m.prompt_encoder.no_mask_embed.weight = torch.nn.Parameter(
        m.prompt_encoder.no_mask_embed.weight.detach() * 2)
    assert m.signature() not in (before, changed)


def test_changes_torch_cannot_see_need_invalidate_caches():
    m = _model(4)
    before = m.signature()
    weight = m.prompt_encoder.no_mask_embed.weight
    weight.data.copy_(weight * 0.5)  # `.data` bypasses the version counter
    assert m.signature() == before  # documented limit
    m.invalidate_caches()
    assert m.signature() != before
    fresh = Sam(TEST_VIT).eval()
    fresh.load_state_dict(m.state_dict())
    assert fresh.signature() == m.signature()


def test_predictor_refuses_an_embedding_of_the_old_weights():
    model = _model(5)
    pred = Predictor(model, device="cpu", precision="fp32", diameter="off")
    emb = pred.set_image(np.random.default_rng(0).integers(0, 255, (32, 48), dtype=np.uint8))
    pred.set_embedding(emb)  # same weights: accepted
    model.load_state_dict(_model(6).state_dict())
    with pytest.raises(ValueError, match="another model"):
        pred.set_embedding(emb)


def test_signature_survives_pickling():
    m = _model(7)
    sig = m.signature()
    assert pickle.loads(pickle.dumps(m)).signature() == sig
    assert m.signature() == sig
