"""Middlebury stereo (disparity only, no labels) in its real on-disk layouts, for evaluation.

One folder per scene (OpenCV samples, scikit-image: per pair); four layouts are recognised by
the files a folder holds:

    2014 / MiddEval3   im0.png, im1.png (left, right), disp0.pfm or disp0GT.pfm (left disparity,
                       float PFM, inf = unknown), calib.txt (cam0, baseline in mm, doffs,
                       ndisp, ...), optional mask0nocc.png (MiddEval3: 255 = not occluded)
    2005 / 2006        view1.png, view5.png (left, right), disp1.png (8 bit, 0 = unknown,
                       stored value = disparity x factor), optional dmin.txt
    OpenCV samples     <name>L.jpg|png, <name>R.jpg|png, <name>GT.png: the flat copy of a 2006
                       scene that OpenCV ships (samples/data/aloeL.jpg, aloeR.jpg, aloeGT.png),
                       GT encoded like disp1.png; one folder may hold several such pairs
    scikit-image data  <name>_left.png, <name>_right.png, <name>_disp.npz (one float array,
                       non-finite = unknown): the Middlebury 2014 "Motorcycle" pair at 741 x 500
                       that `skimage.data.stereo_motorcycle()` reads from skimage/data

The 2005/2006 PNG factor: the site says "disparity values are multiplied by 3 for third-size"
(and by 2 for half size, by 1 for full size). The factor is decided from the PNG's own width:
full-size 2006 images are 1240-1396 px wide, half size 620-698, third size 413-465, so
>= 1000 px -> 1, >= 540 px -> 2, smaller -> 3 (`png_disparity_factor` in the loader config
overrides this). Aloe as OpenCV ships it is 1282 px wide, so its GT is read unscaled.

`ROOT` is a scene folder, a folder of scene folders, or a folder of those (MiddEval3/trainingH/
Adirondack); a split other than "all" picks the subfolder of that name (--split trainingH).
There is no training split: this is evaluation data.

The evaluation scale (`scale`, pmt-evaluate --scale) resizes the images with area
interpolation and the ground truth with nearest neighbour, multiplying disparities by the
scale; unknown pixels stay unknown. Samples follow the contract: seg is all 255 (ignore).
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..atomic import write_bytes_atomic
from .base import IGNORE_LABEL, RawSample, StereoDataset, Transform, base_meta, require_same_size
from .io import read_png_raw, read_rgb

ALL_SCENES = "all"
NO_TRAINING_SPLIT = "none"
LAYOUT_2014, LAYOUT_2006, LAYOUT_FLAT = "2014", "2006", "opencv_samples"
LAYOUT_SKIMAGE = "scikit_image"
_FLAT_LEFT = re.compile(r"^(?P<name>.+)L\.(?P<ext>jpe?g|png)$", re.IGNORECASE)
_SKIMAGE_LEFT = re.compile(r"^(?P<name>.+)_left\.png$")


# ----------------------------------------------------------------------------- PFM
def read_pfm(path: str | os.PathLike) -> np.ndarray:
    """A PFM image as float32, top row first: HxW for 'Pf', HxWx3 for 'PF'.

    The third header line is the scale: its sign gives the byte order (negative: little endian),
    its magnitude is kept by the format but carries no meaning for disparity. Rows are stored
    bottom row first. Non-finite values (Middlebury: inf = unknown) are returned as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    with open(path, "rb") as handle:
        data = handle.read()
    # Header: three whitespace-separated tokens lines; binary data follows one whitespace byte.
    match = re.match(rb"(P[Ff])\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s", data)
    if match is None:
        raise ValueError(f"{path}: not a PFM file (expected 'Pf' or 'PF', size and scale lines)")
    kind, width, height = match.group(1), int(match.group(2)), int(match.group(3))
    try:
        scale = float(match.group(4))
    except ValueError:
        raise ValueError(f"{path}: malformed PFM scale {match.group(4)!r}") from None
    if scale == 0:
        raise ValueError(f"{path}: PFM scale is 0 (its sign must give the byte order)")
    channels = 3 if kind == b"PF" else 1
    count = width * height * channels
    payload = data[match.end():]
    if len(payload) < 4 * count:
        raise ValueError(f"{path}: PFM holds {len(payload) // 4} values, header says "
                         f"{width}x{height}x{channels}")
    values = np.frombuffer(payload, dtype="<f4" if scale < 0 else ">f4", count=count)
    shape = (height, width, 3) if channels == 3 else (height, width)
    return np.ascontiguousarray(values.reshape(shape)[::-1]).astype(np.float32)


def write_pfm(path: str | os.PathLike, image: np.ndarray, *, little_endian: bool = True,
              scale: float = 1.0) -> None:
    """HxW ('Pf') or HxWx3 ('PF') float image -> PFM, bottom row first, written atomically.
    Unknown disparities are written as inf, as Middlebury does (pass them as inf or NaN)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        kind = "Pf"
    elif image.ndim == 3 and image.shape[2] == 3:
        kind = "PF"
    else:
        raise ValueError(f"write_pfm {path}: expected HxW or HxWx3, got shape {image.shape}")
    if not scale > 0:
        raise ValueError(f"write_pfm {path}: scale must be > 0 (the byte order is its sign), got {scale}")
    signed = -abs(scale) if little_endian else abs(scale)
    header = f"{kind}\n{image.shape[1]} {image.shape[0]}\n{signed:g}\n".encode("ascii")
    body = np.ascontiguousarray(image[::-1]).astype("<f4" if little_endian else ">f4").tobytes()
    write_bytes_atomic(path, header + body)


# ----------------------------------------------------------------------------- calib / GT
def read_calibration(path: Path) -> dict[str, Any]:
    """calib.txt of the 2014 / MiddEval3 datasets: key=value lines, cam0/cam1 as 3x3 matrices."""
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    values: dict[str, Any] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}:{number}: expected key=value, got {line!r}")
        key, value = key.strip(), value.strip()
        try:
            if key.startswith("cam"):
                numbers = [float(v) for v in value.strip("[]").replace(";", " ").split()]
                if len(numbers) != 9:
                    raise ValueError
                values[key] = np.array(numbers).reshape(3, 3)
            else:
                values[key] = float(value)
        except ValueError:
            raise ValueError(f"{path}:{number}: cannot parse {key} = {value!r}") from None
    return values


def read_npz_disparity(path: Path) -> np.ndarray:
    """scikit-image's `<name>_disp.npz`: its one array, float disparity; unknown (non-finite or
    <= 0) becomes 0, the loader's unknown."""
    with np.load(path, allow_pickle=False) as archive:
        if len(archive.files) != 1:
            raise ValueError(f"{path}: expected one disparity array, found {archive.files}")
        disparity = np.asarray(archive[archive.files[0]], dtype=np.float32)
    if disparity.ndim != 2:
        raise ValueError(f"{path}: expected an H x W disparity array, got shape {disparity.shape}")
    return np.where(np.isfinite(disparity) & (disparity > 0), disparity, 0.0).astype(np.float32)


def png_disparity_factor(width: int) -> int:
    """What a 2005/2006 disp1.png value is multiplied by, from the image width (module doc)."""
    if width >= 1000:
        return 1
    if width >= 540:
        return 2
    return 3


def decode_disparity_png_scaled(raw: np.ndarray, factor: float) -> np.ndarray:
    """8-bit Middlebury 2006 disparity PNG -> float32 pixels; 0 stays 0 (unknown)."""
    return np.where(raw > 0, raw.astype(np.float32) / np.float32(factor), 0.0).astype(np.float32)


def rescale_sample(raw: RawSample, scale: float) -> RawSample:
    """Images area-resized, disparity nearest-resized and multiplied by `scale` (0 stays 0),
    labels nearest-resized. Returns a new raw sample; scale 1 returns it unchanged."""
    if scale == 1.0:
        return raw
    height, width = raw["disparity"].shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2: (W, H)
    disparity = cv2.resize(raw["disparity"], size, interpolation=cv2.INTER_NEAREST)
    out = dict(raw)
    out["left"] = cv2.resize(raw["left"], size, interpolation=cv2.INTER_AREA)
    out["right"] = cv2.resize(raw["right"], size, interpolation=cv2.INTER_AREA)
    out["disparity"] = np.where(disparity > 0, disparity * np.float32(scale), 0.0).astype(np.float32)
    out["seg"] = cv2.resize(raw["seg"], size, interpolation=cv2.INTER_NEAREST)
    return out


# ----------------------------------------------------------------------------- dataset
@dataclasses.dataclass(frozen=True)
class MiddleburyLayout:
    scale: float                          # evaluation scale: 0.5 = half size
    right_image: str                      # 2014: im1.png, or a lighting variant (im1E.png, im1L.png)
    png_disparity_factor: float | None    # 2005/2006 PNGs: null = decided by width (module doc)
    nonoccluded_only: bool                # MiddEval3: GT only where mask0nocc.png is 255

    def __post_init__(self) -> None:
        if not 0.0 < self.scale <= 4.0:
            raise ValueError(f"middlebury loader scale must be in (0, 4], got {self.scale}")
        if self.png_disparity_factor is not None and not self.png_disparity_factor > 0:
            raise ValueError("middlebury loader png_disparity_factor must be > 0 or null, "
                             f"got {self.png_disparity_factor}")


@dataclasses.dataclass(frozen=True)
class Scene:
    folder: Path
    layout: str
    left: Path
    right: Path
    disparity: Path


def scenes_in(folder: Path, *, right_image: str = "im1.png") -> list[Scene]:
    """The scene stored in `folder` (or its OpenCV-style pairs, one per name); [] for none."""
    if (folder / "im0.png").is_file():
        disparity = next((folder / name for name in ("disp0GT.pfm", "disp0.pfm")
                          if (folder / name).is_file()), folder / "disp0GT.pfm")
        return [Scene(folder, LAYOUT_2014, folder / "im0.png", folder / right_image, disparity)]
    if (folder / "view1.png").is_file():
        return [Scene(folder, LAYOUT_2006, folder / "view1.png", folder / "view5.png",
                      folder / "disp1.png")]
    pairs = []
    for path in sorted(folder.iterdir()):
        match = _FLAT_LEFT.match(path.name)
        if match is None or not path.is_file():
            continue
        name = match.group("name")
        right_letter = "R" if path.name[len(name)] == "L" else "r"
        right = folder / f"{name}{right_letter}.{match.group('ext')}"
        if right.is_file():   # a lone *L.jpg is not a stereo pair
            pairs.append(Scene(folder, LAYOUT_FLAT, path, right, folder / f"{name}GT.png"))
    for path in sorted(folder.glob("*_left.png")):
        match = _SKIMAGE_LEFT.match(path.name)
        if match is None or not path.is_file():
            continue
        name = match.group("name")
        right, disparity = folder / f"{name}_right.png", folder / f"{name}_disp.npz"
        if right.is_file() and disparity.is_file():
            pairs.append(Scene(folder, LAYOUT_SKIMAGE, path, right, disparity))
    return pairs


def find_scenes(root: Path, *, right_image: str = "im1.png") -> list[Scene]:
    """Scenes in root itself, in its subfolders, or in their subfolders (first level that has any)."""
    scenes = scenes_in(root, right_image=right_image)
    level = [root]
    for _depth in range(2):
        if scenes:
            return scenes
        level = sorted(child for folder in level for child in folder.iterdir() if child.is_dir())
        scenes = [s for folder in level for s in scenes_in(folder, right_image=right_image)]
    return scenes


class Middlebury(StereoDataset):
    name = "middlebury"
    layout_type = MiddleburyLayout
    class_names: tuple[str, ...] = ()              # disparity only: no segmentation labels
    palette = np.zeros((0, 3), dtype=np.uint8)

    def __init__(self, root: str | Path, *, split: str, layout: MiddleburyLayout,
                 transform: Transform | None = None):
        super().__init__(transform=transform)
        self.root, self.split, self.layout = Path(root), split, layout
        if split == NO_TRAINING_SPLIT:
            raise ValueError("middlebury is evaluation data: it has no training split "
                             "(never train on it)")
        if not self.root.is_dir():
            raise FileNotFoundError(f"missing Middlebury folder: {self.root}")
        folder = self.root if split == ALL_SCENES else self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"Middlebury split {split!r}: no folder {folder} (use "
                                    f"'{ALL_SCENES}' or the name of a subfolder of {self.root})")
        self.scenes = find_scenes(folder, right_image=layout.right_image)
        if not self.scenes:
            raise FileNotFoundError(f"no Middlebury scene under {folder}: expected folders with "
                                    "im0.png + im1.png + disp0[GT].pfm (2014), view1.png + "
                                    "view5.png + disp1.png (2006), <name>L/R.jpg + <name>GT.png, "
                                    "or <name>_left/_right.png + <name>_disp.npz")
        self.folder = folder

    def __len__(self) -> int:
        return len(self.scenes)

    def sample_id(self, index: int) -> str:
        scene = self.scenes[index]
        if scene.layout == LAYOUT_FLAT:
            return scene.left.name[:-len(scene.left.suffix) - 1]
        if scene.layout == LAYOUT_SKIMAGE:
            return scene.left.name[:-len("_left.png")]
        relative = scene.folder.relative_to(self.folder).as_posix()
        return relative if relative != "." else scene.folder.name

    def load_labels(self, index: int) -> np.ndarray:
        return np.full(self.load(index)["disparity"].shape, IGNORE_LABEL, dtype=np.uint8)

    def _disparity(self, scene: Scene, width: int) -> tuple[np.ndarray, dict[str, Any]]:
        """GT at the file's size (0 = unknown) and what the meta says about its encoding."""
        if scene.layout == LAYOUT_2014:
            disparity = read_pfm(scene.disparity)
            if disparity.ndim != 2:
                raise ValueError(f"{scene.disparity}: expected a single-channel PFM")
            disparity = np.where(np.isfinite(disparity) & (disparity > 0), disparity, 0.0)
            mask_path = scene.folder / "mask0nocc.png"
            if self.layout.nonoccluded_only and mask_path.is_file():
                mask = read_png_raw(mask_path, dtype=np.uint8)
                require_same_size({scene.disparity: disparity, mask_path: mask})
                disparity = np.where(mask == 255, disparity, 0.0)
            return disparity.astype(np.float32), {}
        if scene.layout == LAYOUT_SKIMAGE:
            return read_npz_disparity(scene.disparity), {}
        factor = self.layout.png_disparity_factor or png_disparity_factor(width)
        raw = read_png_raw(scene.disparity)
        if raw.dtype != np.uint8:
            raise ValueError(f"{scene.disparity}: expected an 8-bit disparity PNG, got {raw.dtype}")
        return decode_disparity_png_scaled(raw, factor), {"png_disparity_factor": float(factor)}

    def load(self, index: int) -> RawSample:
        scene = self.scenes[index]
        left, right = read_rgb(scene.left), read_rgb(scene.right)
        disparity, encoding = self._disparity(scene, left.shape[1])
        require_same_size({scene.left: left, scene.right: right, scene.disparity: disparity})
        scale = self.layout.scale
        extra: dict[str, Any] = {"layout": scene.layout, "scale": scale,
                                 "original_size": list(left.shape[:2]), **encoding}
        fx = baseline = None
        calibration = scene.folder / "calib.txt"
        if scene.layout == LAYOUT_2014 and calibration.is_file():
            calib = read_calibration(calibration)
            if "cam0" in calib:
                fx = float(calib["cam0"][0, 0]) * scale
            if "baseline" in calib:
                baseline = calib["baseline"] / 1000.0   # mm -> m
            if "doffs" in calib:   # Z = baseline * f / (d + doffs)
                extra["doffs"] = calib["doffs"] * scale
            if "ndisp" in calib:
                extra["ndisp"] = int(np.ceil(calib["ndisp"] * scale))
        dmin = scene.folder / "dmin.txt"
        if scene.layout == LAYOUT_2006 and dmin.is_file():
            extra["dmin"] = float(dmin.read_text(encoding="utf-8").split()[0]) * scale
        seg = np.full(disparity.shape, IGNORE_LABEL, dtype=np.uint8)
        raw = {"left": left, "right": right, "seg": seg, "disparity": disparity,
               "meta": base_meta(self.name, self.sample_id(index), fx=fx, baseline=baseline,
                                 split=self.split, **extra)}
        return rescale_sample(raw, scale)

