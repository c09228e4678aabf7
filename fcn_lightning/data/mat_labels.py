"""One label array from a MATLAB file, checked to be an H x W array of whole numbers.

PASCAL-Context (`LabelMap`) and SIFT Flow (`S`) keep their labels as plain matrices under
one key; SBD's struct has its own reader (`fcn_lightning.data.readers.read_mat_label`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from fcn_lightning.data.sample_files import SampleError, unusable_path


def mat_array(path: Path, key: str, archive: str) -> np.ndarray:
    """The integer H x W array under `key` in the .mat file at `path` (int64).

    `archive` names where a good copy comes from, for the message. A float matrix
    (MATLAB's default) is accepted when every value is a whole number, as the reference's
    `astype(np.uint8)` would read it; a fraction or NaN is refused, not truncated.
    """
    why = unusable_path(path)
    if why is not None:
        raise SampleError(f"{path}: label file is {why}: put the label file there")
    try:
        array = np.asarray(scipy.io.loadmat(path)[key])
    except KeyError:
        raise SampleError(
            f"{path}: no {key!r} in this MATLAB file: it is not a label of this dataset; "
            f"replace it from {archive}"
        ) from None
    except Exception as err:  # loadmat fails in many ways on a bad file
        raise SampleError(
            f"{path}: unreadable MATLAB label ({type(err).__name__}: {err}): replace it "
            f"from {archive}"
        ) from None
    if array.ndim != 2 or array.dtype.kind not in "uifb" or 0 in array.shape:
        raise SampleError(
            f"{path}: {key} is {array.dtype} with shape {array.shape}, expected an H x W "
            f"array of class numbers: replace it from {archive}"
        )
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (array == np.round(array))
        if not whole.all():
            bad = np.unique(array[~whole])[:4].tolist()
            raise SampleError(
                f"{path}: {key} holds values that are no class numbers ({bad}): replace it "
                f"from {archive}"
            )
    return array.astype(np.int64)


def out_of_range(values: np.ndarray, low: int, high: int) -> list[int]:
    """The values of `values` outside low..high, at most 8 of them."""
    wrong = (values < low) | (values > high)
    return np.unique(values[wrong])[:8].tolist() if wrong.any() else []
