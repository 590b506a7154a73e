"""index_photos → Index round trips on COCO128 photos: the same rows, hits and files as the CLI's."""

import json

import numpy as np
import pytest

import regionseek
from conftest import TINY


def test_index_photos_reports_as_the_cli_and_resumes(coco_index, coco128, small_spec):
    out, report = coco_index
    assert report["images"] == 12 and report["failures"] == 0 and not report["interrupted"]
    assert report["regions_added"] == report["rows_total"] > 12
    assert json.loads((out / "errors.json").read_text())["failures"] == []
    again = regionseek.index_photos(
        coco128 / "images", coco=coco128 / "instances.json", pipeline=str(small_spec), out=out,
        model=regionseek.Model.load(str(TINY)), limit=12, progress=False,
    )
    assert again["regions_added"] == 0
    assert again["regions_already_indexed"] == report["rows_total"]
    assert again["images_skipped"] == 12


def test_text_search_returns_the_cli_hits(coco_index, cli):
    out, report = coco_index
    ix = regionseek.Index.open(out)
    assert len(ix) == report["rows_total"] and ix.dim == 32 and ix.model_id == str(TINY)
    hits = ix.search("a person riding a horse", k=5)
    theirs = json.loads(cli("search", out, "a person riding a horse", "--k", 5, "--json"))["hits"]
    assert hits == theirs
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert set(hits[0]) == {
        "image", "region_id", "box", "mask_rle", "score", "method", "source", "label", "row", "exif_rotated",
        "taken_at", "camera",
    }


def test_filters_keep_only_matching_rows_and_explain_an_empty_one(coco_index):
    out, _ = coco_index
    ix = regionseek.Index.open(out)
    labels = ix.to_arrow().column("label").to_pylist()
    label = max(set(labels), key=labels.count)
    hits = ix.search("something", k=50, label=label)
    assert len(hits) == labels.count(label) and all(h["label"] == label for h in hits)
    assert all(h["method"] == "maskinversion" for h in ix.search("x", method="maskinversion"))
    with pytest.raises(ValueError, match="nothing to search"):
        ix.search("x", label="unicorn")
    with pytest.raises(ValueError, match="empty"):
        ix.search("   ")


def test_embeddings_round_trip_through_numpy_and_arrow(coco_index, tiny_model):
    out, _ = coco_index
    ix = regionseek.Index.open(out)
    vectors = ix.embeddings()
    assert vectors.shape == (len(ix), ix.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    table = ix.to_arrow()
    assert table.num_rows == len(ix)
    np.testing.assert_array_equal(np.array(table.column("embedding").to_pylist(), dtype=np.float32), vectors)
    # Every stored vector finds its own row first, exactly and through the graph; a batch gives a list per row.
    for i in [0, len(ix) // 2, len(ix) - 1]:
        for exact in [True, False]:
            hit = ix.search_vectors(vectors[i].astype(np.float64) * 3.0, k=1, exact=exact)[0]
            assert hit["row"] == i and hit["score"] == pytest.approx(1.0, abs=1e-5)
    batch = ix.search_vectors(vectors[:3], k=2)
    assert [b[0]["row"] for b in batch] == [0, 1, 2]
    # A text query is the model's unit text embedding searched as a vector.
    q = tiny_model.embed_text(["a dog"])[0]
    assert ix.search_vectors(q, k=4) == ix.search("a dog", k=4)


def test_search_inputs_are_checked(coco_index):
    out, _ = coco_index
    ix = regionseek.Index.open(out)
    with pytest.raises(ValueError, match="32-d"):
        ix.search_vectors(np.ones(16, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        ix.search_vectors(np.full(32, np.nan, np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        ix.search_vectors(np.ones(32, np.int64))
    with pytest.raises(ValueError, match="k must be"):
        ix.search_vectors(np.ones(32, np.float32), k=0)
    with pytest.raises(ValueError, match="either exact"):
        ix.search("x", exact=True, ef=64)


def test_index_photos_refuses_what_it_cannot_run(tmp_path, coco128):
    with pytest.raises(ValueError, match="at most one"):
        regionseek.index_photos(coco128 / "images", coco=coco128 / "instances.json",
                                boxes=tmp_path / "b.json", out=tmp_path / "x")
    # A plain folder is a library; with no model named, the paper's ViT-B/16 is looked for, and where it is
    # absent the error says what to pass instead (random weights only when named).
    with pytest.raises(regionseek.RegionseekError, match="random:vit-b-16"):
        regionseek.index_photos(coco128 / "images", out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    # Boxes with a pipeline that needs masks: refused before any model is loaded, naming the fix; no folder
    # is left behind.
    (tmp_path / "b.json").write_text('[{"image": "000000000009.jpg", "box": [1, 2, 30, 40]}]')
    with pytest.raises(regionseek.RegionseekError, match="boxes-sam"):
        regionseek.index_photos(coco128 / "images", boxes=tmp_path / "b.json", pipeline="gt-masks",
                                out=tmp_path / "y", progress=False)
    assert not (tmp_path / "y").exists()
    with pytest.raises(regionseek.RegionseekError, match="does not exist"):
        regionseek.index_photos(tmp_path / "no-photos-here", coco=coco128 / "instances.json",
                                out=tmp_path / "y", progress=False)
    with pytest.raises(regionseek.RegionseekError, match="no-such-pipeline"):
        regionseek.index_photos(coco128 / "images", coco=coco128 / "instances.json",
                                pipeline="no-such-pipeline", out=tmp_path / "x")
    with pytest.raises(regionseek.RegionseekError):
        regionseek.Index.open(tmp_path / "not-an-index")


def test_hit_masks_decode_to_their_box(coco_index):
    out, _ = coco_index
    ix = regionseek.Index.open(out)
    for h in ix.search("a cat", k=5):
        mask = regionseek.mask_from_rle(h["mask_rle"])
        assert mask.dtype == np.bool_ and mask.shape == tuple(h["mask_rle"]["size"]) and mask.any()
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = h["box"]
        # The mask lies in its (annotated) box, give or take the rasterisation's pixel.
        assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1 and y0 - 1 <= ys.min() and ys.max() <= y1 + 1
    with pytest.raises(ValueError):
        regionseek.mask_from_rle({"size": [4, 4], "counts": "%%%"})


def test_source_filter_and_the_text_tower_alone(coco_index, tiny_model):
    out, _ = coco_index
    ix = regionseek.Index.open(out)
    sources = ix.to_arrow().column("source").to_pylist()
    source = sources[0]
    hits = ix.search("something", k=len(ix), source=source)
    assert len(hits) == sources.count(source) and all(h["source"] == source for h in hits)
    assert ix.search_vectors(tiny_model.embed_text(["a dog"])[0], k=3, source=source) == ix.search(
        "a dog", k=3, source=source
    )
    with pytest.raises(ValueError, match="nothing to search: no region comes from source"):
        ix.search("x", source="nowhere")
    # A spec loads only the text tower; it embeds as the whole model does.
    by_spec = regionseek.Index.open(out, model=str(TINY))
    assert by_spec.search("a dog", k=3) == ix.search("a dog", k=3)
    tower = regionseek.TextModel.load(str(TINY))
    assert tower.id == tiny_model.id and tower.embed_dim == tiny_model.embed_dim
    np.testing.assert_allclose(tower.embed_text(["a dog"]), tiny_model.embed_text(["a dog"]), rtol=1e-6, atol=1e-7)


def test_grouped_by_photo_and_cut_off_as_the_cli(coco_index, cli):
    out, _ = coco_index
    ix = regionseek.Index.open(out)
    text = "a dog on a couch"
    grouped = ix.search(text, k=4, group_by="photo", exact=True)
    theirs = json.loads(cli("search", out, text, "--k", 4, "--group-by", "photo", "--exact", "--json"))["hits"]
    assert grouped == theirs
    photos = [h["image"] for h in grouped]
    assert len(photos) == len(set(photos)) == 4
    regions = ix.search(text, k=len(ix), exact=True)
    bar = grouped[-1]["score"]
    for h in grouped:
        # The photo's best region, and the count of its others scoring at least the last photo's best.
        same_photo = [r for r in regions if r["image"] == h["image"]]
        assert same_photo[0]["row"] == h["row"]
        assert h["other_matches"] == sum(r["score"] >= bar for r in same_photo) - 1
    cut = regions[len(regions) // 2]["score"]
    above = ix.search(text, k=len(ix), exact=True, min_score=cut)
    assert above and all(h["score"] >= cut for h in above)
    assert len(above) == sum(r["score"] >= cut for r in regions)
    with pytest.raises(ValueError, match="group_by"):
        ix.search(text, group_by="album")


def test_search_region_finds_an_indexed_region_first_and_refuses_bad_regions(coco_index, coco128):
    from PIL import Image

    out, _ = coco_index
    ix = regionseek.Index.open(out)
    # A COCO region of the index (inverted at the small spec's 64 px and 3 steps, which the query must repeat).
    hit = ix.search("a photo", k=1, method="maskinversion")[0]
    photo = Image.open(coco128 / "images" / hit["image"])
    mask = regionseek.mask_from_rle(hit["mask_rle"])
    for image in (photo, np.asarray(photo.convert("RGB"))):
        found = ix.search_region(image, mask=mask, k=3)
        assert (found[0]["row"], found[0]["image"]) == (hit["row"], hit["image"])
        assert found[0]["score"] > 0.9999
        assert found[1]["score"] < found[0]["score"]
    # Texts move the query off the region alone; a box and the whole photo run too.
    mixed = ix.search_region(photo, mask=mask, k=1, text="2:a red bus", minus=["a cat"])
    assert mixed[0]["score"] < 0.99
    assert len(ix.search_region(photo, box=hit["box"], k=2)) == 2
    assert len(ix.search_region(photo, k=2, group_by="photo")) == 2
    w, h = photo.size
    with pytest.raises(ValueError, match="not both"):
        ix.search_region(photo, mask=mask, box=[0, 0, 5, 5])
    with pytest.raises(ValueError, match="is not inside"):
        ix.search_region(photo, box=[0, 0, w + 1, 5])
    with pytest.raises(ValueError, match="the mask"):
        ix.search_region(photo, mask=np.zeros((h, w), bool))
    with pytest.raises(ValueError, match="image's own resolution"):
        ix.search_region(photo, mask=np.ones((h // 2, w), bool))
    with pytest.raises(ValueError, match="a number from -100 to 100"):
        ix.search_region(photo, box=hit["box"], text="inf:red")
