"""A bad-input matrix: files, arrays, prompts, checkpoints, outputs, caches, downloads,
COCO/JSON and the command line.

Every case ends in a correct result or a clear error: one that names the file or the
argument and says what to do. Command-line cases run `napari_sam.cli.main` in-process and
check the exit status, the message and that no traceback reaches stderr. Tiny models
(`test_vit`, saved with `save_checkpoint`) and small images keep the whole module fast.

    pytest tests/test_bad_inputs.py
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import urllib.error

import numpy as np
import pytest
import tifffile
import torch

from napari_sam import build_model
from napari_sam.cli import main
from napari_sam.model import CheckpointError, save_checkpoint
from napari_sam.predictor import Predictor

pytestmark = pytest.mark.usefixtures("one_thread")

CLI_FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0",
            "--device", "cpu", "--precision", "fp32", "--tiling", "off"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("test_vit")


@pytest.fixture(scope="module")
def predictor(model):
    return Predictor(model, device="cpu", precision="fp32", diameter="off")


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    """Inputs on disk, good and bad, shared by the file and command-line cases."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (64, 64)).astype(np.uint8)
    img[20:40, 15:45] += 150
    tifffile.imwrite(d / "good.tif", img)
    tifffile.imwrite(d / "five.tif", np.stack([img] * 5, axis=-1), photometric="minisblack",
                     planarconfig="contig", metadata={"axes": "YXS"})
    tifffile.imwrite(d / "thin.tif", img[:1, :60].repeat(1, axis=0))
    tifffile.imwrite(d / "empty.tif", np.zeros((0, 0), np.uint8))
    (d / "zero_bytes.tif").write_bytes(b"")
    (d / "text.tif").write_text("this is not an image\n")
    good = (d / "good.tif").read_bytes()
    (d / "truncated.tif").write_bytes(good[: len(good) // 3])
    (d / "noimages").mkdir()
    (d / "noimages" / "notes.txt").write_text("x")
    (d / "a_file").write_text("x")
    save_checkpoint(d / "model.pt", model)
    return d


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def run_cli(argv, capsys):
    """(exit status, stdout + stderr) of the command line, run in-process."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse usage errors
        rc = stop.code
    out = capsys.readouterr()
    no_traceback(out.err)
    return rc, out.out + out.err


# ---------------------------------------------------------------------------------------
# arrays given to the core API
ARRAY_ERRORS = {
    "empty_0x0": (np.zeros((0, 0), np.uint8), r"image is empty \(shape \(0, 0\)\)"),
    "empty_0x5": (np.zeros((0, 5), np.float32), "image is empty"),
    "one_dimensional": (np.zeros(32), r"2D image .*got shape \(32,\)"),
    "four_dimensional": (np.zeros((2, 2, 16, 16)), "stacks"),
    "five_channels": (np.zeros((16, 16, 5), np.uint16), r"5 channels.*channels=\[i, j, k\]"),
    "complex": (np.zeros((16, 16), np.complex64), r"dtype complex64.*np\.abs"),
    "strings": (np.full((4, 4), "a"), "dtype <U1"),
    "objects": (np.empty((4, 4), object), "dtype object"),
    "none": (None, r"no image was given \(None\)"),
}


@pytest.mark.parametrize("name", sorted(ARRAY_ERRORS))
def test_array_refused_with_a_clear_error(predictor, name):
    array, match = ARRAY_ERRORS[name]
    with pytest.raises(ValueError, match=match):
        predictor.set_image(array)


ARRAY_OK = {
    "thin_1x600": lambda: np.linspace(0, 1, 600)[None].astype(np.float32),
    "thin_600x1": lambda: np.linspace(0, 1, 600)[:, None].astype(np.float32),
    "single_pixel": lambda: np.ones((1, 1), np.uint16),
    "bool": lambda: np.eye(40, dtype=bool),
    "negative_int64": lambda: (np.arange(1600).reshape(40, 40) - 800).astype(np.int64),
    "nan_and_inf": lambda: np.where(np.eye(40, dtype=bool), np.nan,
                                    np.where(np.fliplr(np.eye(40, dtype=bool)), np.inf,
                                             np.arange(1600.0).reshape(40, 40))),
    "constant": lambda: np.full((40, 40), 7, np.uint16),
    "rgba_uint8": lambda: np.full((40, 40, 4), 255, np.uint8),
}


@pytest.mark.parametrize("name", sorted(ARRAY_OK))
def test_unusual_array_gives_a_correct_result(predictor, name):
    image = ARRAY_OK[name]()
    predictor.set_image(image)
    emb = predictor.get_embedding()
    assert torch.isfinite(emb.features).all()
    masks, scores, logits = predictor.predict(points=[[0, 0]])
    assert masks.shape == (3,) + image.shape[:2] and masks.dtype == bool
    assert np.isfinite(scores).all() and np.isfinite(logits).all()


# ---------------------------------------------------------------------------------------
# prompts
PROMPT_ERRORS = {
    "nothing": (dict(), "empty prompt"),
    "point_nan": (dict(points=[[np.nan, 3]]), "NaN"),
    "point_outside": (dict(points=[[5, 80]]), r"outside the image of shape \(40, 50\)"),
    "point_three_coords": (dict(points=[[1, 2, 3]]), r"\[row, col\] pairs"),
    "labels_count": (dict(points=[[1, 2], [3, 4]], point_labels=[1]), "2 points but 1"),
    "label_value": (dict(points=[[1, 2]], point_labels=[2]), "1 .object. or 0"),
    "labels_without_points": (dict(point_labels=[1], box=[1, 1, 9, 9]), "without points"),
    "box_outside": (dict(box=[100, 100, 120, 130]), "wholly outside the image"),
    "box_outside_negative": (dict(box=[-30, -30, -2, -2]), "wholly outside"),
    "box_zero_area": (dict(box=[5, 5, 5, 20]), "zero area"),
    "box_nan": (dict(box=[1, np.nan, 9, 9]), "finite numbers"),
    "box_three_numbers": (dict(box=[1, 2, 3]), r"\[row0, col0, row1, col1\]"),
    "mask_input_nan": (dict(points=[[5, 5]], mask_input=np.full((64, 64), np.nan)),
                       "mask_input contains NaN"),
    "mask_input_inf": (dict(points=[[5, 5]], mask_input=np.full((64, 64), np.inf)),
                       "NaN or infinite"),
    "mask_input_shape": (dict(points=[[5, 5]], mask_input=np.zeros((40, 50))),
                         r"shape \(64, 64\)"),
}


@pytest.fixture
def small_image_set(predictor):
    predictor.set_image(np.random.default_rng(3).integers(0, 255, (40, 50)).astype(np.uint8))
    return predictor


@pytest.mark.parametrize("name", sorted(PROMPT_ERRORS))
def test_prompt_refused_with_a_clear_error(small_image_set, name):
    kwargs, match = PROMPT_ERRORS[name]
    with pytest.raises(ValueError, match=match):
        small_image_set.predict(**kwargs)


PROMPT_OK = {
    "box_partly_outside": dict(box=[-10, -10, 20, 25]),
    "box_corners_reversed": dict(box=[30, 40, 5, 5]),
    "point_on_border": dict(points=[[39.4, 49.4]]),
    "background_point_and_box": dict(points=[[2, 2]], point_labels=[0], box=[1, 1, 30, 30]),
}


@pytest.mark.parametrize("name", sorted(PROMPT_OK))
def test_unusual_prompt_gives_a_result(small_image_set, name):
    masks, scores, _ = small_image_set.predict(**PROMPT_OK[name])
    assert masks.shape == (3, 40, 50) and np.isfinite(scores).all()


def test_predict_before_set_image(model):
    with pytest.raises(RuntimeError, match="set_image"):
        Predictor(model, device="cpu", diameter="off").predict(points=[[1, 1]])


# ---------------------------------------------------------------------------------------
# checkpoints
class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def _checkpoint_cases(d, model):
    sd = model.state_dict()
    torch.save({k: v for k, v in sd.items()
                if not k.startswith("mask_decoder.transformer.layers.1.")}, d / "no_layer.pth")
    wrong = dict(sd)
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    wrong[key] = torch.zeros(wrong[key].shape[0] + 3, wrong[key].shape[1])
    torch.save(wrong, d / "wrong_shape.pth")
    torch.save(torch.zeros(3), d / "tensor.pth")
    torch.save({"foo.weight": torch.zeros(2)}, d / "other_net.pth")
    torch.save({"a": "string"}, d / "not_tensors.pth")
    with open(d / "evil.pth", "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    good = (d / "model.pt").read_bytes()
    (d / "cut.pt").write_bytes(good[: len(good) // 2])
    (d / "empty.pt").write_bytes(b"")
    (d / "folder.pt").mkdir(exist_ok=True)
    return {
        "missing_file": ("missing.pt", FileNotFoundError, "not found"),
        "empty_file": ("empty.pt", CheckpointError, "could not be read.*--force"),
        "text_file": ("text.tif", CheckpointError, "could not be read"),
        "truncated": ("cut.pt", CheckpointError, "truncated"),
        "malicious_pickle": ("evil.pth", CheckpointError, "could not be read"),
        "bare_tensor": ("tensor.pth", CheckpointError, "holds a Tensor"),
        "other_network": ("other_net.pth", CheckpointError, "does not look like a Segment"),
        "not_tensors": ("not_tensors.pth", CheckpointError, "not a state dict of tensors"),
        "missing_decoder_layer": ("no_layer.pth", CheckpointError,
                                  "damaged or altered test_vit.*36 tensor.s. missing"),
        "wrong_shape": ("wrong_shape.pth", CheckpointError,
                        r"iou_prediction_head\.layers\.0\.weight has shape \[67, 64\] where "
                        r"test_vit has \[64, 64\]"),
        "a_folder": ("folder.pt", FileNotFoundError, "not found"),
    }


CHECKPOINT_NAMES = ["missing_file", "empty_file", "text_file", "truncated", "malicious_pickle",
                    "bare_tensor", "other_network", "not_tensors", "missing_decoder_layer",
                    "wrong_shape", "a_folder"]


@pytest.mark.parametrize("name", CHECKPOINT_NAMES)
def test_bad_checkpoint_refused_naming_the_file(files, model, name, monkeypatch):
    from napari_sam.model import load_model

    monkeypatch.chdir(files)
    fname, err, match = _checkpoint_cases(files, model)[name]
    with pytest.raises(err, match=match) as info:
        load_model(str(files / fname))
    assert fname in str(info.value)
    assert not (files / "PWNED_BY_CHECKPOINT").exists()


def test_unknown_model_name():
    from napari_sam.model import load_model

    with pytest.raises(KeyError, match="unknown model 'vit_q'.*bundled"):
        load_model("vit_q")


# ---------------------------------------------------------------------------------------
# COCO / JSON
def _coco(seg=None, **image):
    im = dict({"id": 1, "height": 20, "width": 30}, **image)
    im = {k: v for k, v in im.items() if v is not None}
    anns = [] if seg is None else [{"id": 7, "image_id": 1, "segmentation": seg}]
    return {"images": [im], "annotations": anns}


COCO_ERRORS = {
    "nan_vertex": (_coco([[1, 1, float("nan"), 5, 10, 10]]), "annotation 7: polygon 0 has a NaN"),
    "huge_vertex": (_coco([[1, 1, 1e9, 5, 10, 10]]), "far outside the 20 x 30 image"),
    "flat_polygon": (_coco([1, 1, 10, 1, 10, 10]), "flat list of numbers.*wrap it in a list"),
    "odd_coordinates": (_coco([[1, 1, 10, 1, 10]]), "even count"),
    "text_coordinates": (_coco([["a", 1, 10, 1, 10, 10]]), "not numbers"),
    "negative_height": (_coco([], height=-5), "height -5; it must be a positive"),
    "missing_width": (_coco([], width=None), "no 'width'"),
    "text_height": (_coco([], height="tall"), "height 'tall'"),
    "gigantic_image": (_coco([], height=10 ** 6, width=10 ** 6), "check its height and width"),
    "huge_slice_index": ({"images": [{"id": 1, "height": 5, "width": 5, "z": 10 ** 9},
                                     {"id": 2, "height": 5, "width": 5, "z": 0}],
                          "annotations": []}, "slice indices"),
    "unknown_image": ({"images": [{"id": 1, "height": 5, "width": 5}],
                       "annotations": [{"id": 1, "image_id": 9, "segmentation": []}]},
                      "refers to image 9"),
    "rle_wrong_total": (_coco({"size": [20, 30], "counts": [5, 5]}), "do not cover"),
    "rle_wrong_size": (_coco({"size": [10, 30], "counts": [300]}), "differs from the image"),
    "rle_truncated_string": (_coco({"size": [20, 30], "counts": "0`"}), "truncated RLE"),
    "annotation_not_object": ({"images": [{"id": 1, "height": 5, "width": 5}],
                               "annotations": [3]}, "annotation 0 is a int"),
    "no_images": ({"images": [], "annotations": []}, "lists no images"),
    "not_coco": ({"hello": 1}, "not a COCO file"),
    "top_level_list": ([1, 2], "not a COCO file"),
}


@pytest.mark.parametrize("name", sorted(COCO_ERRORS))
def test_bad_coco_refused_naming_the_file(tmp_path, name):
    from napari_sam.io.coco import read_coco

    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(COCO_ERRORS[name][0]))
    with pytest.raises(ValueError, match=COCO_ERRORS[name][1]) as info:
        read_coco(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00binary"], ids=["bad_json",
                                                                                 "binary"])
def test_unreadable_json(tmp_path, content):
    from napari_sam.io.coco import read_coco

    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_coco(path)


def test_coco_polygon_partly_outside_is_clipped(tmp_path):
    from napari_sam.io.coco import coco_to_labels

    labels = coco_to_labels(_coco([[-5, -5, 10, -5, 10, 10, -5, 10]]))
    assert labels.shape == (20, 30) and labels[:10, :10].all() and not labels[11:, 11:].any()


# ---------------------------------------------------------------------------------------
# outputs written through the API
def test_labels_that_do_not_fit_uint32(tmp_path):
    from napari_sam.io.labels import write_labels_tif

    with pytest.raises(ValueError, match="negative"):
        write_labels_tif(tmp_path / "l.tif", np.array([[-1, 2]]))
    with pytest.raises(ValueError):
        write_labels_tif(tmp_path / "l.tif", np.array([[0.5, 2]]))
    assert list(tmp_path.iterdir()) == []


def test_existing_output_kept_without_overwrite(tmp_path):
    from napari_sam.io.coco import write_coco

    path = tmp_path / "c.json"
    path.write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_coco(path, np.ones((4, 4), np.uint32), "x")
    assert path.read_text() == "keep me" and len(list(tmp_path.iterdir())) == 1


# ---------------------------------------------------------------------------------------
# embedding caches
@pytest.fixture
def cache_case(model, tmp_path):
    from napari_sam.tiled import TiledEmbeddings

    image = np.random.default_rng(4).integers(0, 4000, (300, 280)).astype(np.uint16)
    cache = tmp_path / "cache"
    emb = TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache,
                          precision="fp32")
    emb.compute()
    truth = emb.store.get((0, 0))
    return image, cache, truth


def _damage(cache, how):
    chunk = cache / "features" / "0.0.0.0.0"
    data = chunk.read_bytes()
    if how == "chunk_deleted":
        chunk.unlink()
    elif how == "chunk_bytes_flipped":
        b = bytearray(data)
        b[len(b) // 2] ^= 0x55
        b[len(b) // 2 + 9] ^= 0x55
        chunk.write_bytes(bytes(b))
    elif how == "chunk_truncated":
        chunk.write_bytes(data[:100])
    elif how == "marker_garbled":
        (cache / "done" / "0_0").write_bytes(b"\x00garbage")


@pytest.mark.parametrize("how", ["chunk_deleted", "chunk_bytes_flipped", "chunk_truncated",
                                 "marker_garbled"])
def test_damaged_cache_tile_is_recomputed(model, cache_case, how):
    from napari_sam.tiled import TiledEmbeddings

    image, cache, truth = cache_case
    _damage(cache, how)
    emb = TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache,
                          precision="fp32")
    with pytest.warns(RuntimeWarning, match=re.escape(str(cache))):
        f = emb.features(emb.grid[0, 0])
    np.testing.assert_allclose(f[0].numpy(), truth, atol=1e-5)


@pytest.mark.parametrize("how", ["zarray_garbled", "signature_garbled", "foreign_folder",
                                 "cache_is_a_file"])
def test_unusable_cache_folder_named_with_the_fix(model, cache_case, tmp_path, how):
    from napari_sam.tiled import CacheMismatchError, TiledEmbeddings

    image, cache, _ = cache_case
    if how == "zarray_garbled":
        (cache / "features" / ".zarray").write_bytes(b"\x00{{{")
    elif how == "signature_garbled":
        (cache / "signature.json").write_text("{")
    elif how == "foreign_folder":
        cache = tmp_path / "holiday_photos"
        cache.mkdir()
        (cache / "beach.jpg").write_bytes(b"x")
    with pytest.raises((CacheMismatchError, ValueError, OSError)) as info:
        if how == "cache_is_a_file":
            cache = tmp_path / "a_file"
            cache.write_text("x")
        TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache)
    assert str(cache) in str(info.value)
    if how == "foreign_folder":
        assert (cache / "beach.jpg").read_bytes() == b"x"


# ---------------------------------------------------------------------------------------
# downloads (a monkeypatched opener: no network)
class _Resp(io.BytesIO):
    def __init__(self, body, length=None):
        super().__init__(body)
        self.headers = {} if length is None else {"Content-Length": str(length)}


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    from napari_sam.model import hub

    monkeypatch.setenv("NAPARI_SAM_CACHE", str(tmp_path / "ckpts"))
    monkeypatch.delenv("NAPARI_SAM_MIRROR", raising=False)
    body = io.BytesIO()
    torch.save({"mask_decoder.w": torch.ones(8)}, body)
    return hub, body.getvalue(), tmp_path / "ckpts"


def _known(hub, body, **kw):
    import hashlib

    fields = dict(name="tiny", url="http://example.invalid/tiny.pt",
                  sha256=hashlib.sha256(body).hexdigest(), size=len(body), arch="vit_b",
                  filename="tiny.pt")
    fields.update(kw)
    return hub.KnownCheckpoint(**fields)


def _raise(err):
    def opener(url):
        raise err
    return opener


DOWNLOAD_CASES = {
    "cut_no_length_no_hash": (lambda b: _Resp(b[: len(b) // 2]), dict(sha256=None, size=None),
                              "not a complete checkpoint"),
    "cut_with_length": (lambda b: _Resp(b[: len(b) // 2], len(b)), dict(size=None),
                        "incomplete"),
    "wrong_hash": (lambda b: _Resp(b, len(b)), dict(sha256="0" * 64), "hash mismatch"),
    "wrong_size": (lambda b: _Resp(b + b"x"), dict(sha256=None), "size mismatch"),
    "http_404": (_raise(urllib.error.HTTPError("u", 404, "Not Found", {}, None)), {},
                 "HTTP 404"),
    "offline": (_raise(urllib.error.URLError("no route")), {}, "offline"),
}


@pytest.mark.parametrize("name", sorted(DOWNLOAD_CASES))
def test_failed_download_leaves_nothing(hub_env, monkeypatch, name):
    hub, body, folder = hub_env
    respond, fields, match = DOWNLOAD_CASES[name]
    opener = respond if respond.__name__ == "opener" else (lambda url: respond(body))
    monkeypatch.setattr(hub, "_open", opener)
    with pytest.raises(hub.DownloadError, match=match) as info:
        hub.fetch(_known(hub, body, **fields), progress=False, verify=False)
    assert "try again" in str(info.value) or "by hand" in str(info.value)
    assert not folder.exists() or list(folder.iterdir()) == []


def test_unverifiable_download_needs_consent(hub_env, monkeypatch):
    hub, body, folder = hub_env
    monkeypatch.setattr(hub, "_open", lambda url: pytest.fail("must not download"))
    with pytest.raises(hub.DownloadError, match="--no-verify"):
        hub.fetch(_known(hub, body, sha256=None, size=None), progress=False)


# ---------------------------------------------------------------------------------------
# the command line
def _cli_cases(d, tmp):
    m = ["--model", d / "model.pt"]
    return {
        "missing_input": (["automask", d / "nope.tif", "-o", tmp / "o", *m], 1,
                          ["nope.tif", "no such file"]),
        "zero_byte_image": (["automask", d / "zero_bytes.tif", "-o", tmp / "o", *m], 1,
                            ["zero_bytes.tif", "could not read"]),
        "text_as_image": (["automask", d / "text.tif", "-o", tmp / "o", *m], 1,
                          ["text.tif", "could not read"]),
        "truncated_image": (["automask", d / "truncated.tif", "-o", tmp / "o", *m], 1,
                            ["truncated.tif"]),
        "empty_image": (["automask", d / "empty.tif", "-o", tmp / "o", *m], 1,
                        ["empty.tif", "image is empty"]),
        "five_channels": (["automask", d / "five.tif", "-o", tmp / "o", *m], 1,
                          ["five.tif", "5 channels", "--channels"]),
        "channel_out_of_range": (["automask", d / "five.tif", "-o", tmp / "o", *m,
                                  "--channels", "9"], 1, ["five.tif", "channels"]),
        "folder_without_images": (["automask", d / "noimages", "-o", tmp / "o", *m], 1,
                                  ["noimages", "no .tif"]),
        "pattern_matches_nothing": (["automask", str(d / "*.png"), "-o", tmp / "o", *m], 1,
                                    ["*.png", "matches no images"]),
        "output_is_a_file": (["automask", d / "good.tif", "-o", d / "a_file", *m], 1,
                             ["a_file", "is a file, not a folder"]),
        "output_under_a_file": (["automask", d / "good.tif", "-o", d / "a_file" / "sub", *m], 1,
                                ["a_file", "is a file"]),
        "model_missing": (["automask", d / "good.tif", "-o", tmp / "o", "--model",
                           d / "nomodel.pt"], 1, ["nomodel.pt", "not found"]),
        "model_not_a_checkpoint": (["automask", d / "good.tif", "-o", tmp / "o", "--model",
                                    d / "text.tif"], 1, ["text.tif", "checkpoint"]),
        "model_unknown_name": (["automask", d / "good.tif", "-o", tmp / "o", "--model",
                                "vit_q"], 1, ["vit_q", "unknown model"]),
        "summary_json_in_missing_folder": (["automask", d / "good.tif", "-o", tmp / "o", *m,
                                            "--summary-json", tmp / "no" / "s.json"], 1,
                                           ["--summary-json", "does not exist"]),
        "summary_json_is_a_folder": (["automask", d / "good.tif", "-o", tmp / "o", *m,
                                      "--summary-json", d / "noimages"], 1,
                                     ["noimages", "directory"]),
        "unknown_format": (["automask", d / "good.tif", "-o", tmp / "o", "--format", "gif"], 2,
                           ["gif", "choose from"]),
        "bad_channels_text": (["automask", d / "good.tif", "-o", tmp / "o", "--channels", "a,b"],
                              2, ["--channels", "integers"]),
        "unknown_download": (["models", "download", "vit_q", "-q"], 1, ["vit_q", "unknown"]),
        "thin_image_works": (["automask", d / "thin.tif", "-o", tmp / "o", *m], 0,
                             ["1 processed"]),
        "five_channels_with_choice_works": (["automask", d / "five.tif", "-o", tmp / "o", *m,
                                             "--channels", "0,1"], 0, ["1 processed"]),
    }


CLI_NAMES = ["missing_input", "zero_byte_image", "text_as_image", "truncated_image",
             "empty_image", "five_channels", "channel_out_of_range", "folder_without_images",
             "pattern_matches_nothing", "output_is_a_file", "output_under_a_file",
             "model_missing", "model_not_a_checkpoint", "model_unknown_name",
             "summary_json_in_missing_folder", "summary_json_is_a_folder", "unknown_format",
             "bad_channels_text", "unknown_download", "thin_image_works",
             "five_channels_with_choice_works"]


@pytest.mark.parametrize("name", CLI_NAMES)
def test_cli_bad_input(files, tmp_path, capsys, name, monkeypatch):
    monkeypatch.setenv("NAPARI_SAM_CACHE", str(tmp_path / "ckpts"))
    argv, want_rc, phrases = _cli_cases(files, tmp_path)[name]
    if argv[0] == "automask" and want_rc != 2:
        argv = argv + CLI_FAST + ["-q"]
    rc, text = run_cli(argv, capsys)
    assert rc == want_rc, text
    for phrase in phrases:
        assert phrase in text, (phrase, text)
    assert not (files / "a_file").is_dir() and (files / "a_file").read_text() == "x"


def test_cli_progress_lines_when_stderr_is_not_a_terminal(files, tmp_path, capsys):
    rc = main(["automask", str(files / "good.tif"), str(files / "thin.tif"), "-o",
               str(tmp_path / "o"), "--model", str(files / "model.pt"), *CLI_FAST])
    err = capsys.readouterr().err
    assert rc == 0
    no_traceback(err)
    lines = [ln for ln in err.splitlines() if ln.startswith("automask: ")]
    assert lines and "\r" not in err, err
    assert any("good.tif" in ln for ln in lines) and any("thin.tif" in ln for ln in lines)
    assert re.search(r"automask: \d+/\d+ \(\d+%\)", lines[-1])
