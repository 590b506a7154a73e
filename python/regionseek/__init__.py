"""regionseek: search photo collections by region.

Boxes or masks become localized CLIP embeddings by MaskInversion; the embeddings go into a region index that
text queries search. This package is the Rust library itself (built by maturin), not a wrapper around the CLI:

    import regionseek
    report = regionseek.index_photos("photos/", coco="instances.json", out="my-index")
    ix = regionseek.Index.open("my-index")
    ix.search("a red car", k=10)

Every call that computes releases the GIL; Ctrl-C interrupts it cleanly (an index run commits what it
embedded and resumes when rerun).
"""

from ._native import (
    Index,
    Model,
    RegionError,
    RegionseekError,
    TextModel,
    __version__,
    index_photos,
    mask_from_rle,
    simd_backend,
)

__all__ = [
    "Index",
    "Model",
    "RegionError",
    "RegionseekError",
    "TextModel",
    "__version__",
    "index_photos",
    "mask_from_rle",
    "simd_backend",
]
