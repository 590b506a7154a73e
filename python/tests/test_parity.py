"""The binding computes what the Rust library computes: LETs bit for bit against the CLI, and against the
official maskinversion_torch numbers the Rust tests check."""

import json
import struct

import numpy as np

from conftest import MASK_FILES, TINY


def cli_lets(cli, *flags):
    out = cli(
        "invert", TINY / "image.png",
        *[a for f in MASK_FILES for a in ("--mask", TINY / f)],
        "--model", TINY, "--size", 64, "--steps", 10, "--json", *flags,
    )
    rows = [json.loads(line) for line in out.splitlines()]
    return np.array([r["embedding"] for r in rows if "embedding" in r], dtype=np.float32)


def test_lets_equal_the_cli_bit_for_bit(cli, tiny_model, tiny_image, tiny_masks):
    for grad in ["direct", "jacobian"]:
        ours = tiny_model.invert(tiny_image, tiny_masks, size=64, steps=10, grad=grad)
        theirs = cli_lets(cli, "--grad", grad)
        assert ours.shape == theirs.shape == (2, tiny_model.embed_dim)
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, theirs, err_msg=f"grad={grad}")


def test_alpha_reaches_the_rust_path(cli, tiny_model, tiny_image, tiny_masks):
    ours = tiny_model.invert(tiny_image, tiny_masks, size=64, steps=10, alpha=5.0, grad="direct")
    np.testing.assert_array_equal(ours, cli_lets(cli, "--grad", "direct", "--alpha", 5))
    plain = tiny_model.invert(tiny_image, tiny_masks, size=64, steps=10, grad="direct")
    assert not np.array_equal(ours, plain)


def read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        lo, hi = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + lo : 8 + n + hi], dtype="<f4").reshape(info["shape"])
    return out


def test_text_embeddings_match_open_clip():
    """The reference's unit text embeddings of the fixture prompts (tests/fixtures/make_reference.py)."""
    import regionseek

    expected = json.loads((TINY / "expected.json").read_text())
    tensors = read_safetensors(TINY / "expected.safetensors")
    texts = expected.get("prompts")
    assert texts, "expected.json lists the reference prompts"
    ours = regionseek.Model.load(str(TINY)).embed_text(texts)
    want = tensors["text_embeddings"]
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, want, atol=1e-5)


def test_lets_match_maskinversion_torch(tiny_model, tiny_image, tiny_masks):
    """maskinversion_torch 1.1 on the same photo and masks (tests/fixtures/make_reference.py): cos >= 0.9999."""
    tensors = read_safetensors(TINY / "expected.safetensors")
    for tag, alpha in [("alpha0", 0.0), ("alpha5", 5.0)]:
        ours = tiny_model.invert(tiny_image, tiny_masks, size=64, steps=10, alpha=alpha)
        want = tensors[f"let_{tag}"]
        cos = (ours * want).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(want, axis=1)
        assert (cos >= 0.9999).all(), (tag, cos)
