"""Type stubs of regionseek's native module (python/src/)."""

import datetime
from os import PathLike
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

_Path = Union[str, "PathLike[str]"]
Hit = Dict[str, Any]
"""A hit, as the CLI's ``--json`` writes it: ``image``, ``region_id``, ``box`` [x0, y0, x1, y1], ``mask_rle``
(COCO RLE: ``size`` [h, w], ``counts``), ``score``, ``method``, ``source``, ``label``, ``row``, ``exif_rotated``, ``taken_at`` (ISO 8601 as the camera
wrote it, or None) and ``camera`` (EXIF make and model, or None)."""

__version__: str

class RegionseekError(RuntimeError):
    """A regionseek call failed (a missing or damaged file, a model that does not load, an index in use)."""

class RegionError(ValueError):
    """Some regions could not be embedded."""

    errors: Dict[int, str]
    """Each bad mask's position and why."""
    embeddings: npt.NDArray[np.float32]
    """Every mask's row; NaN for the bad ones."""

class Model:
    """A CLIP model: ``random:<arch>[:seed]`` (random weights of a real architecture, for trials) or a weights
    folder (Hugging Face CLIPModel or OpenCLIP layout)."""

    @staticmethod
    def load(
        spec: str,
        device: str = "cpu",
        precision: Literal["fp32", "tf32", "bf16", "bf16-jacobian"] = "fp32",
        gpu_memory: float = 16.0,
    ) -> "Model":
        """Loads a model; ``device`` is ``"cpu"`` or ``"cuda"`` (a build with the cuda feature).

        ``precision``: arithmetic of the image forward and the Jacobian build (fp32 is the parity-checked
        default; tf32 only changes GPU products; bf16 runs the products in bfloat16; bf16-jacobian keeps the forward f32 and only the Jacobian in bfloat16, half its memory). ``gpu_memory``: GiB an inversion
        may use on a GPU, weights included."""
    @property
    def id(self) -> str:
        """The model's id as indexes record it."""
    @property
    def embed_dim(self) -> int: ...
    @property
    def patch_size(self) -> int:
        """An inversion's ``size`` must be a multiple of it."""
    @property
    def is_random(self) -> bool: ...
    def embed_text(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit text embeddings, ``(N, embed_dim)`` float32. Empty texts raise ValueError."""
    @overload
    def invert(
        self,
        image: Any,
        masks: npt.ArrayLike,
        size: int = 448,
        steps: int = 10,
        lr: float = 0.5,
        alpha: float = 0.0,
        grad: Literal["auto", "jacobian", "direct"] = "auto",
        errors: Literal["raise"] = "raise",
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def invert(
        self,
        image: Any,
        masks: npt.ArrayLike,
        size: int = 448,
        steps: int = 10,
        lr: float = 0.5,
        alpha: float = 0.0,
        grad: Literal["auto", "jacobian", "direct"] = "auto",
        *,
        errors: Literal["return"],
    ) -> Tuple[npt.NDArray[np.float32], List[Optional[str]]]:
        """MaskInversion: ``(M, embed_dim)`` raw tokens (L2-normalise to compare), one per mask.

        ``image``: HxWx3 uint8 array or PIL image; ``masks``: (M, H, W) bool (or uint8, non-zero inside) at the
        image's resolution. Bad masks raise RegionError, or with ``errors="return"`` come back as NaN rows with
        ``errors[k]`` saying why."""

class TextModel:
    """A model's text tower alone (``random:<arch>[:seed]`` or a weights folder), for processes that only embed
    queries: the vision tower's weights are never read."""

    @staticmethod
    def load(spec: str, device: str = "cpu") -> "TextModel": ...
    @property
    def id(self) -> str:
        """The model's id as indexes record it."""
    @property
    def embed_dim(self) -> int: ...
    @property
    def is_random(self) -> bool: ...
    def embed_text(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit text embeddings, ``(N, embed_dim)`` float32, equal to ``Model.embed_text``'s."""

class Index:
    """A region index opened for searching: a snapshot of its last commit."""

    @staticmethod
    def open(path: _Path, model: Union[Model, str, None] = None, device: str = "cpu") -> "Index":
        """Opens an index folder; ``model`` for text queries defaults to the one the index was built with (loaded on
        the first text search); a spec string loads only its text tower."""
    def __len__(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def model_id(self) -> str: ...
    def search(
        self,
        text: str,
        k: int = 10,
        method: Optional[str] = None,
        label: Optional[str] = None,
        image: Optional[str] = None,
        ef: Optional[int] = None,
        exact: bool = False,
        source: Optional[str] = None,
        min_score: Optional[float] = None,
        group_by: Optional[str] = None,
        after: Union[str, "datetime.date", None] = None,
        before: Union[str, "datetime.date", None] = None,
        camera: Optional[str] = None,
        near: Optional[Tuple[float, float, float]] = None,
    ) -> List[Hit]:
        """The ``k`` regions closest to a text query, best first (the text tower alone embeds it; a query longer
        than its context is cut, with a UserWarning). Filters (``method``, ``label``, ``image``, ``source``) keep
        rows whose field equals the value; one that keeps none raises ValueError saying what the index holds.
        ``min_score`` keeps hits scoring at least that cosine similarity; ``group_by="photo"`` returns the best region of
        each photo, with ``other_matches`` (how many more of its regions matched). ``after``/``before`` keep photos
        whose EXIF capture time is at or after / before a date (``YYYY-MM-DD``, midnight UTC), an RFC 3339 time, a
        ``datetime.date`` or a ``datetime.datetime`` (naive: UTC); ``camera`` keeps those whose make and model
        contain the text (any case); ``near=(lat, lon, km)`` those taken within ``km`` of a place."""
    def search_vectors(
        self,
        vectors: npt.NDArray[np.floating[Any]],
        k: int = 10,
        method: Optional[str] = None,
        label: Optional[str] = None,
        image: Optional[str] = None,
        ef: Optional[int] = None,
        exact: bool = False,
        source: Optional[str] = None,
        min_score: Optional[float] = None,
        group_by: Optional[str] = None,
        after: Union[str, "datetime.date", None] = None,
        before: Union[str, "datetime.date", None] = None,
        camera: Optional[str] = None,
        near: Optional[Tuple[float, float, float]] = None,
    ) -> Union[List[Hit], List[List[Hit]]]:
        """A ``(d,)`` vector gives one list of hits, a ``(Q, d)`` array one list per row."""
    def search_region(
        self,
        image: Union[npt.NDArray[np.uint8], Any],
        mask: Optional[npt.NDArray[Any]] = None,
        box: Optional[Sequence[float]] = None,
        k: int = 10,
        text: Union[str, Sequence[str], None] = None,
        minus: Union[str, Sequence[str], None] = None,
        method: Optional[str] = None,
        label: Optional[str] = None,
        source: Optional[str] = None,
        ef: Optional[int] = None,
        exact: bool = False,
        min_score: Optional[float] = None,
        group_by: Optional[str] = None,
        after: Union[str, "datetime.date", None] = None,
        before: Union[str, "datetime.date", None] = None,
        camera: Optional[str] = None,
        near: Optional[Tuple[float, float, float]] = None,
    ) -> List[Hit]:
        """Regions like a region of a photo (HxWx3 uint8 array or PIL image): ``mask`` (an (H, W) bool array) or
        ``box`` ([x0, y0, x1, y1]), or the whole photo; embedded as the index embedded its own regions, so an
        indexed region asked with its own mask finds itself first. ``text``/``minus``: texts (``"red"`` or
        ``"0.5:red"``) added to or taken from the region's embedding."""
    def embeddings(self) -> npt.NDArray[np.float32]:
        """Every row's stored unit embedding, ``(len, d)``, in row order."""
    def segment_paths(self) -> List[str]:
        """The committed Parquet segments, in row order."""
    def to_arrow(self) -> Any:
        """The region table as a ``pyarrow.Table`` (needs pyarrow)."""

def index_photos(
    images: _Path,
    *,
    out: _Path,
    coco: Optional[_Path] = None,
    boxes: Optional[_Path] = None,
    masks: Optional[_Path] = None,
    pipeline: Optional[str] = None,
    model: Union[Model, str, None] = None,
    device: str = "cpu",
    sam: Optional[_Path] = None,
    limit: Optional[int] = None,
    shard: Optional[Tuple[int, int]] = None,
    progress: bool = True,
    wait: bool = False,
    exif_rotate: bool = False,
    max_pixels: Optional[int] = None,
    keep_vanished: bool = False,
) -> Dict[str, Any]:
    """Indexes a photo folder by region as ``regionseek index`` does (same files, same resume, and the same
    sync: rows of photos gone from the input are deleted unless ``keep_vanished``, edited photos' replaced,
    moved photos' carried to their new path).
    ``shard=(k, n)`` takes only shard k of n (photos split by a hash of their name). Returns the
    run's report (the CLI's ``--json`` keys: ``regions_added``, ``failures``, ``error_log``, ...)."""

def mask_from_rle(rle: Dict[str, Any]) -> npt.NDArray[np.bool_]:
    """A hit's ``mask_rle`` (COCO RLE) as an ``(h, w)`` bool array, decoded as pycocotools decodes it."""

def simd_backend() -> str:
    """The SIMD back end of the index's distance kernels on this machine."""
