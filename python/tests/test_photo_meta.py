"""Search filters on photo metadata, against the EXIF Pillow writes (as a camera or an editor does)."""

import datetime as dt

import numpy as np
import pytest
from PIL import Image

import regionseek
from conftest import ROOT, TINY

EXIF_IFD, GPS_IFD = 0x8769, 0x8825


def write_photo(path, seed, make=None, model=None, taken=None, offset=None, gps=None):
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    if taken:
        ifd = exif.get_ifd(EXIF_IFD)
        ifd[0x9003] = taken
        if offset:
            ifd[0x9011] = offset
    if gps:
        g = exif.get_ifd(GPS_IFD)
        (lat, lon) = gps
        g[1], g[3] = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
        g[2] = (float(int(abs(lat))), float(int(abs(lat) % 1 * 60)), round(abs(lat) * 3600 % 60, 3))
        g[4] = (float(int(abs(lon))), float(int(abs(lon) % 1 * 60)), round(abs(lon) * 3600 % 60, 3))
    Image.fromarray(pixels).save(path, exif=exif)


@pytest.fixture(scope="module")
def exif_index(tmp_path_factory):
    photos = tmp_path_factory.mktemp("exif-photos")
    write_photo(photos / "paris.jpg", 1, "Canon", "Canon EOS R5", "2024:05:01 14:03:00", "+02:00", (48.8566, 2.3522))
    write_photo(photos / "newyork.jpg", 2, "NIKON CORPORATION", "NIKON D850", "2023:12:24 20:00:00", "-05:00",
                (40.7128, -74.006))
    write_photo(photos / "bare.jpg", 3)
    text = (ROOT / "pipelines" / "library.toml").read_text()
    text = text.replace("size = 448", "size = 64").replace("steps = 10", "steps = 3")
    spec = photos.parent / "small-library.toml"
    spec.write_text(text.replace('name = "library"', 'name = "small-library"'))
    out = tmp_path_factory.mktemp("exif-index") / "index"
    report = regionseek.index_photos(photos, pipeline=str(spec), out=out, model=str(TINY), progress=False)
    assert report["failures"] == 0, report
    return regionseek.Index.open(out)


def photos(hits):
    return sorted({h["image"] for h in hits})


def test_keywords_filter_on_exif_and_hits_carry_it(exif_index):
    ix = exif_index
    ask = lambda **kw: photos(ix.search("a photo", k=100, group_by="photo", **kw))
    assert ask() == ["bare.jpg", "newyork.jpg", "paris.jpg"]
    assert ask(after="2024-01-01") == ["paris.jpg"]
    assert ask(after=dt.date(2023, 12, 25), before=dt.date(2024, 1, 1)) == ["newyork.jpg"]
    assert ask(before=dt.datetime(2024, 5, 1, 12, 3, 1, tzinfo=dt.timezone.utc)) == ["newyork.jpg", "paris.jpg"]
    assert ask(before=dt.datetime(2024, 5, 1, 12, 3)) == ["newyork.jpg"], "a naive datetime is UTC"
    assert ask(camera="nikon") == ["newyork.jpg"]
    assert ask(near=(48.8049, 2.1204, 20)) == ["paris.jpg"]
    vectors = ix.embeddings()[:1]
    assert photos(ix.search_vectors(vectors[0], k=100, camera="canon")) == ["paris.jpg"]
    hit = ix.search("a photo", k=1, camera="canon")[0]
    assert hit["taken_at"] == "2024-05-01T14:03:00+02:00" and hit["camera"] == "Canon EOS R5"
    bare = ix.search("a photo", k=1, image="bare.jpg")[0]
    assert bare["taken_at"] is None and bare["camera"] is None
    table = ix.to_arrow()
    for column in ["taken_at", "taken_at_utc", "camera", "gps_lat", "gps_lon", "width", "height"]:
        assert column in table.column_names
    assert set(table.column("width").to_pylist()) == {96}


def test_bad_keywords_are_refused_in_words(exif_index):
    ix = exif_index
    with pytest.raises(ValueError, match="after must be a date"):
        ix.search("x", after="May 1st")
    with pytest.raises(ValueError, match="near must be"):
        ix.search("x", near=(91, 0, 1))
    with pytest.raises(TypeError, match="near is a"):
        ix.search("x", near="48,2,10")
    with pytest.raises(TypeError, match="a date is"):
        ix.search("x", before=20240101)
    with pytest.raises(ValueError, match="nothing to search.*Canon EOS R5"):
        ix.search("x", camera="leica")
