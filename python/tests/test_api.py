"""The Model API's contract: input types a notebook passes, and clear errors for the ones it should not."""

import threading
import time

import numpy as np
import pytest
from PIL import Image

import regionseek
from conftest import TINY


def assert_same_direction(a, b):
    """Rows of a different batch: the reference's loss is a mean over the batch's masks, so a token's gradient
    is scaled by 1/M and Adam's epsilon makes the tokens differ in the last digits."""
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert (cos > 0.99999).all(), cos


def test_pil_image_uint8_masks_and_a_single_2d_mask_are_accepted(tiny_model, tiny_image, tiny_masks):
    base = tiny_model.invert(tiny_image, tiny_masks, size=64, steps=3)
    pil = tiny_model.invert(Image.open(TINY / "image.png"), tiny_masks, size=64, steps=3)
    np.testing.assert_array_equal(base, pil)
    as_u8 = tiny_model.invert(tiny_image, tiny_masks.astype(np.uint8) * 255, size=64, steps=3)
    np.testing.assert_array_equal(base, as_u8)
    one = tiny_model.invert(tiny_image, tiny_masks[1], size=64, steps=3)
    assert one.shape == (1, tiny_model.embed_dim)
    assert_same_direction(one[0], base[1])
    # A non-contiguous view is read as the array it shows.
    flipped = np.ascontiguousarray(tiny_image[:, ::-1])
    view = tiny_image[:, ::-1]
    np.testing.assert_array_equal(
        tiny_model.invert(flipped, tiny_masks[:, :, ::-1].copy(), size=64, steps=3),
        tiny_model.invert(view, tiny_masks[:, :, ::-1], size=64, steps=3),
    )


def test_text_embeddings_are_unit_rows(tiny_model):
    e = tiny_model.embed_text(["a dog", "a red car on a street"])
    assert e.shape == (2, tiny_model.embed_dim) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    assert tiny_model.embed_text([]).shape == (0, tiny_model.embed_dim)
    with pytest.raises(ValueError, match="empty"):
        tiny_model.embed_text(["a dog", "  "])


def test_bad_masks_are_named_and_the_good_ones_still_embedded(tiny_model, tiny_image, tiny_masks):
    masks = np.concatenate([tiny_masks, np.zeros_like(tiny_masks[:1])])
    with pytest.raises(regionseek.RegionError) as err:
        tiny_model.invert(tiny_image, masks, size=64, steps=3)
    assert list(err.value.errors) == [2]
    assert "empty" in err.value.errors[2] and "mask 2" in str(err.value)
    assert np.isnan(err.value.embeddings[2]).all()
    good = tiny_model.invert(tiny_image, tiny_masks, size=64, steps=3)
    assert_same_direction(err.value.embeddings[:2], good)

    emb, errors = tiny_model.invert(tiny_image, masks, size=64, steps=3, errors="return")
    assert errors[:2] == [None, None] and "empty" in errors[2]
    np.testing.assert_array_equal(emb, err.value.embeddings)


@pytest.mark.parametrize(
    "change, error, words",
    [
        (dict(image=lambda i: i.astype(np.float32)), TypeError, "uint8"),
        (dict(image=lambda i: i[:, :, :2]), ValueError, "(H, W, 3)"),
        (dict(image=lambda i: i.tolist()), TypeError, "numpy array or a PIL image"),
        (dict(masks=lambda m: m.astype(np.float64)), TypeError, "bool"),
        (dict(masks=lambda m: m[:, :-1]), ValueError, "image's own resolution"),
        (dict(masks=lambda m: m[None]), ValueError, "(M, H, W)"),
        (dict(lr=float("nan")), ValueError, "lr must be finite"),
        (dict(alpha=float("inf")), ValueError, "alpha must be finite"),
        (dict(grad="fast"), ValueError, "grad must be"),
        (dict(errors="ignore"), ValueError, "errors must be"),
        (dict(size=60), ValueError, "multiple of the patch size"),
    ],
)
def test_wrong_inputs_raise_clear_errors(tiny_model, tiny_image, tiny_masks, change, error, words):
    args = dict(image=tiny_image, masks=tiny_masks, size=64, steps=2)
    for key, value in change.items():
        args[key] = value(args[key]) if callable(value) else value
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        tiny_model.invert(**args)


def test_models_load_by_spec_and_refuse_what_they_cannot_load(tmp_path):
    m = regionseek.Model.load("random:vit-b-32")
    assert m.id == "random:vit-b-32:0" and m.is_random and m.embed_dim == 512 and m.patch_size == 32
    with pytest.raises(regionseek.RegionseekError):
        regionseek.Model.load(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cuda|unknown"):
        regionseek.Model.load("random:vit-b-32", device="tpu")
    with pytest.raises(ValueError, match="bf16-jacobian"):
        regionseek.Model.load(str(TINY), precision="fp8")
    with pytest.raises(ValueError, match="positive"):
        regionseek.Model.load(str(TINY), gpu_memory=0.0)


def test_bf16_jacobian_precision_stays_close_to_fp32(tiny_model, tiny_image, tiny_masks):
    half = regionseek.Model.load(str(TINY), precision="bf16-jacobian")
    a = tiny_model.invert(tiny_image, tiny_masks, size=64, grad="jacobian")
    b = half.invert(tiny_image, tiny_masks, size=64, grad="jacobian")
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert not np.array_equal(a, b), "the precision was not applied"
    assert (cos > 0.95).all(), cos


def test_the_gil_is_released_while_inverting(tiny_model, tiny_image, tiny_masks):
    """A Python thread keeps running while another one inverts: the GIL is not held by the computation."""
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        started = time.perf_counter()
        tiny_model.invert(tiny_image, np.repeat(tiny_masks, 8, axis=0), size=128, steps=10, grad="direct")
        ended = time.perf_counter()
    finally:
        stop.set()
        t.join()
    during = [x for x in ticks if started < x < ended]
    # The ticker wakes every ~1 ms: with the GIL held it would not run at all until the call returned.
    assert ended - started > 0.05, "the call should take long enough to measure"
    assert len(during) >= 0.25 * (ended - started) / 0.001, (len(during), ended - started)
