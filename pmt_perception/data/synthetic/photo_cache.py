"""Real photographs for the synthetic scenes' textures: found inside installed packages, copied
once into a cache folder by `pmt-fetch-textures` (fetch_textures.py), and read back by
`PhotoLibrary`.

Sources: scikit-image's `skimage/data`, matplotlib's `mpl-data/sample_data`, Debian's
`opencv-doc` examples (`/usr/share/doc/opencv-doc/examples/data`), and any `--source` folder
(e.g. a wheel unzipped with `pip download --no-deps scikit-image`). Nothing is downloaded here.

Never a stereo pair or an evaluation image: those packages also ship Middlebury's Aloe, Tsukuba
and the stereo motorcycle, OpenCV's calibration pairs and Middlebury optical-flow frames, and a
network trained on them would be evaluated on its training data. `is_excluded` rejects them by an
explicit list and a name pattern, at fetch time AND again when the cache is read, so a photo
dropped into the cache by hand goes through the same filter. Files whose content equals an image
under an `--exclude-dir` (e.g. ../shared/data/real_stereo) are rejected by hash as well.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
from pathlib import Path

import cv2
import numpy as np

from ...atomic import write_json_atomic

LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Files known to be stereo pairs, their ground truth, or frames of evaluation sequences.
EXCLUDED_NAMES = frozenset(name.lower() for name in (
    "motorcycle_left.png", "motorcycle_right.png", "motorcycle_disp.npz",   # skimage: Middlebury 2014
    "aloeL.jpg", "aloeR.jpg", "aloeGT.png",                                 # opencv: Middlebury Aloe
    "tsukuba_l.png", "tsukuba_r.png",                                       # Middlebury Tsukuba
    "left.jpg", "right.jpg", "stereo_calib.xml",                            # opencv calibration pairs
    "rubberwhale1.png", "rubberwhale2.png",                                 # Middlebury optical flow
    "basketball1.png", "basketball2.png",
))
# Any name (or folder on its path) that looks like a view of a pair, a disparity or depth map,
# or a benchmark: left/right/stereo/disp/depth anywhere, Middlebury and KITTI scene names,
# im0/im1 and view1/view5 (Middlebury layouts), and a trailing _l/_r or L/R view letter.
EXCLUDED_PATTERN = re.compile(
    r"left|right|stereo|disp|depth|middlebury|kitti|real_stereo|motorcycle|aloe|tsukuba|cones|teddy"
    r"|venus|sawtooth|rubberwhale|basketball|^im\d$|^view\d$|[_\-.][lr]$",
    re.IGNORECASE)
# A view letter glued to a name (aloeL, sceneR) must be an upper-case L or R: case-sensitive.
VIEW_LETTER = re.compile(r"[a-z0-9][LR]$")

MIN_SIDE = 128          # smaller images are icons, not textures
MAX_SIDE = 1024         # the cache keeps at most this many pixels on the longer side
MIN_GREY_LEVELS = 24    # fewer distinct levels: a binary mask or a line drawing
MAX_FLAT_FRACTION = 0.7  # more neighbours with equal grey: a logo, a diagram, a rendered shape


def is_excluded(path: str | Path) -> bool:
    """True for anything that may be a view of a stereo pair or an evaluation image. `path` is a
    file name or a path relative to a source folder: every folder on it is checked too."""
    path = Path(path)
    if path.name.lower() in EXCLUDED_NAMES:
        return True
    return any(EXCLUDED_PATTERN.search(part) or VIEW_LETTER.search(part)
               for part in (*path.parent.parts, path.stem))


def package_sources() -> dict[str, Path]:
    """The sample-image folders of installed packages: {label: folder}, those that exist."""
    found: dict[str, Path] = {}
    for label, module, relative in (("skimage", "skimage", "data"),
                                    ("matplotlib", "matplotlib", "mpl-data/sample_data")):
        spec = importlib.util.find_spec(module)  # locates the package without importing it
        if spec is not None and spec.submodule_search_locations:
            folder = Path(list(spec.submodule_search_locations)[0]) / relative
            if folder.is_dir():
                found[label] = folder
    opencv_doc = Path("/usr/share/doc/opencv-doc/examples/data")
    if opencv_doc.is_dir():
        found["opencv-doc"] = opencv_doc
    return found


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hashes_under(folders: list[Path]) -> set[str]:
    return {_file_hash(p) for folder in folders for p in Path(folder).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def usable_photo(image: np.ndarray | None) -> bool:
    """A photograph-like image: big enough, not a handful of grey levels (a mask, a line
    drawing) and not mostly flat (a logo, a diagram): real photos vary from pixel to pixel."""
    if image is None or image.ndim not in (2, 3) or min(image.shape[:2]) < MIN_SIDE:
        return False
    grey = (image if image.ndim == 2 else image[..., :3].mean(axis=2)).astype(np.float32)
    small = grey[::max(1, grey.shape[0] // 128), ::max(1, grey.shape[1] // 128)]
    if np.unique(np.round(small)).size < MIN_GREY_LEVELS:
        return False
    flat = float((np.abs(np.diff(grey, axis=1)) < 1.0).mean())
    return flat < MAX_FLAT_FRACTION


def _read_rgb8(path: Path) -> np.ndarray | None:
    """Any 8/16-bit grey, RGB or RGBA file as uint8 RGB, or None when OpenCV cannot read it."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = (image / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def fetch_textures(out: str | Path, sources: dict[str, Path], *,
                   exclude_dirs: list[Path] = ()) -> list[dict]:
    """Copy every usable, not excluded photo under `sources` into `out` (PNG, RGB, longer side
    <= MAX_SIDE) and write out/manifest.json. Returns the manifest's entries."""
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    forbidden = _hashes_under(list(exclude_dirs))
    entries, seen = [], set()
    for label, folder in sorted(sources.items()):
        for path in sorted(Path(folder).rglob("*")):
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if is_excluded(path.relative_to(folder)):
                LOG.info("skipping %s: stereo / evaluation image", path)
                continue
            digest = _file_hash(path)
            if digest in forbidden or digest in seen:
                continue
            image = _read_rgb8(path)
            if not usable_photo(image):
                continue
            seen.add(digest)
            scale = MAX_SIDE / max(image.shape[:2])
            if scale < 1:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            name = f"{label}__{path.stem}.png"
            cv2.imwrite(str(out / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            entries.append({"file": name, "source": str(path), "package": label,
                            "size": list(image.shape[:2]), "sha256": digest})
    write_json_atomic(out / "manifest.json", {"photos": entries})
    return entries


# --------------------------------------------------------------------------- reading the cache
class PhotoLibrary:
    """The cached photos, decoded lazily (each at most once per process), as float32 sRGB in
    [0, 1]. Paths are sorted, so a seed picks the same photo while the cache is unchanged."""

    def __init__(self, paths: list[Path]):
        self.paths = sorted(Path(p) for p in paths if not is_excluded(Path(p).name))
        if not self.paths:
            raise ValueError("PhotoLibrary needs at least one photo")
        self._images: dict[int, np.ndarray] = {}

    @classmethod
    def from_folder(cls, folder: str | Path) -> "PhotoLibrary | None":
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            return None
        paths = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        return cls(paths) if paths else None

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> np.ndarray:
        if index not in self._images:
            image = _read_rgb8(self.paths[index])
            if image is None:
                raise ValueError(f"{self.paths[index]}: unreadable photo in the texture cache")
            self._images[index] = image.astype(np.float32) * np.float32(1.0 / 255.0)
        return self._images[index]


_LIBRARIES: dict[str, PhotoLibrary | None] = {}


def open_library(photo_dir: str | Path | None) -> PhotoLibrary | None:
    """The library of `photo_dir`, opened once per process; None (with one warning per folder)
    when there is no cache: the generator then uses procedural textures only."""
    key = str(photo_dir)
    if key not in _LIBRARIES:
        library = PhotoLibrary.from_folder(photo_dir) if photo_dir else None
        if library is None:
            where = f"in {photo_dir}" if photo_dir else "(textures.photo_dir is null)"
            LOG.warning("no photo textures %s: synthetic scenes use procedural textures only "
                        "(fill the cache with `pmt-fetch-textures`)", where)
        _LIBRARIES[key] = library
    return _LIBRARIES[key]
