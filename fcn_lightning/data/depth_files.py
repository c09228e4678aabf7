"""Depth images to encode as HHA: a folder of 16-bit PNGs or the official NYUDv2 release.

- A folder of 16-bit greyscale PNGs (the prepared NYUD ``data/depth/img_<id>.png``, depth in
  millimetres); optionally a second folder of raw depth PNGs of the same names whose zeros
  mark the pixels the first one has filled in (Gupta's ``rawdepth``).
- ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3, HDF5: needs h5py, the ``nyud`` extra): its
  ``depths`` (in-painted, metres) with ``rawDepths`` == 0 as the filled-in pixels. MATLAB
  stores each 480 x 640 frame transposed (HDF5 shape 1449 x 640 x 480). Frame ``i`` (from 0)
  is written as ``img_<5001 + i>.png``, the ids of Gupta's data and of the FCN's split lists.

Every file is checked (exists, decodes as a 16-bit PNG header, sizes agree) by `scan_folder`
/ `scan_mat` before anything is written; `load_depth` reads one item's depth in metres.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fcn_lightning.data.sample_files import SampleError
from fcn_lightning.errors import DataError

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")  # "I": how older Pillows open them
MAT_FIRST_ID = 5001
MAT_DEPTHS, MAT_RAW_DEPTHS = "depths", "rawDepths"
H5PY_HINT = "pip install 'fcn-lightning[nyud]' (or pip install h5py)"


@dataclass(frozen=True)
class DepthItem:
    """One depth image: the name its HHA PNG gets, its size, where it is read from."""

    name: str
    shape: tuple[int, int]  # rows, columns
    path: Path  # the PNG, or the .mat
    index: int | None = None  # the frame in the .mat
    raw: Path | None = None  # the raw depth PNG marking the filled-in pixels


def png_shape(path: Path, what: str = "depth") -> tuple[int, int]:
    """The size of the 16-bit greyscale PNG at `path`, from its header; a SampleError
    naming the file otherwise."""
    try:
        with Image.open(path) as image:
            fmt, mode, (width, height) = image.format, image.mode, image.size
    except (UnidentifiedImageError, OSError) as err:
        raise SampleError(f"{path}: not a readable PNG ({err}): put the {what} PNG there") from None
    if fmt != "PNG" or mode not in SIXTEEN_BIT_MODES:
        raise SampleError(
            f"{path}: a {fmt} image of mode {mode}, not a 16-bit greyscale PNG: {what} images "
            "must be 16-bit PNGs (as NYUD's data/depth/img_<id>.png, in millimetres)"
        )
    return height, width


def scan_folder(folder: Path, raw_folder: Path | None = None) -> list[DepthItem]:
    """Every ``*.png`` of `folder` (sorted by name), each checked, with its raw depth PNG."""
    items = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png"):
        shape = png_shape(path)
        raw = None
        if raw_folder is not None:
            raw = raw_folder / path.name
            if not raw.is_file():
                raise DataError(f"{raw}: missing; --raw-depth needs a PNG for each depth PNG")
            if png_shape(raw, "raw depth") != shape:
                raise DataError(f"{raw}: size differs from {path}; give the matching raw depth")
        items.append(DepthItem(path.name, shape, path, raw=raw))
    if not items:
        raise DataError(f"{folder}: no .png files: give the folder of 16-bit depth PNGs")
    return items


def read_png_depth(path: Path, scale: float) -> np.ndarray:
    """The PNG's values times `scale` (metres per unit) as float64; 0 stays 0 (no depth)."""
    try:
        with Image.open(path) as image:
            values = np.asarray(image, dtype=np.float64)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise SampleError(f"{path}: cannot decode the depth PNG ({err}): replace it") from None
    return values * scale


def _h5py():
    try:
        import h5py
    except ImportError:
        raise DataError(f"reading nyu_depth_v2_labeled.mat needs h5py: {H5PY_HINT}") from None
    return h5py


def open_mat(path: Path):
    """The .mat as an open h5py File (a DataError if it is not a v7.3 file with depths)."""
    h5py = _h5py()
    try:
        mat = h5py.File(path, "r")
    except OSError as err:
        raise DataError(
            f"{path}: not a MATLAB v7.3 (HDF5) file ({err}): give the official "
            "nyu_depth_v2_labeled.mat"
        ) from None
    depths = mat.get(MAT_DEPTHS)
    if depths is None or getattr(depths, "ndim", 0) != 3:
        mat.close()
        raise DataError(f"{path}: no 3-d '{MAT_DEPTHS}' dataset: give nyu_depth_v2_labeled.mat")
    raw = mat.get(MAT_RAW_DEPTHS)
    if raw is not None and getattr(raw, "shape", None) != depths.shape:
        mat.close()
        raise DataError(f"{path}: '{MAT_RAW_DEPTHS}' and '{MAT_DEPTHS}' differ in shape")
    return mat


def scan_mat(path: Path) -> list[DepthItem]:
    """One item per frame of the .mat's ``depths``."""
    with open_mat(path) as mat:
        count, width, height = mat[MAT_DEPTHS].shape
    return [
        DepthItem(f"img_{MAT_FIRST_ID + i}.png", (height, width), path, index=i)
        for i in range(count)
    ]


_open_mats: dict[Path, object] = {}  # one open file per process (workers open their own)


def _mat_frame(path: Path, dataset: str, index: int) -> np.ndarray | None:
    mat = _open_mats.get(path)
    if mat is None:
        mat = _open_mats[path] = open_mat(path)
    if dataset not in mat:
        return None
    return np.asarray(mat[dataset][index], dtype=np.float64).T


def close_mats() -> None:
    """Close the .mat files this process opened (before forking workers, and at the end)."""
    while _open_mats:
        _open_mats.popitem()[1].close()


def load_depth(item: DepthItem, scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The item's depth in metres (`scale`: metres per stored unit) and its filled-in mask."""
    if item.index is not None:
        depth = _mat_frame(item.path, MAT_DEPTHS, item.index)
        raw = _mat_frame(item.path, MAT_RAW_DEPTHS, item.index)
        return depth * scale, None if raw is None else raw == 0
    depth = read_png_depth(item.path, scale)
    if item.raw is None:
        return depth, None
    return depth, read_png_depth(item.raw, 1.0) == 0
