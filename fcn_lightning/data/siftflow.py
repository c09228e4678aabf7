"""SIFT Flow's two labellings of each image, read as the reference's data layer reads them.

Layout under `paths.data_dir` (SiftFlowDataset.zip extracted there), one folder name
`spatial_envelope_256x256_static_8outdoorcategories` (FOLDER) under each of:

    SiftFlowDataset/Images/FOLDER/<id>.jpg
    SiftFlowDataset/SemanticLabels/FOLDER/<id>.mat   key `S`: 0 = void, 1..33 the classes
    SiftFlowDataset/GeoLabels/FOLDER/<id>.mat        key `S`: -1 and 0 = void, 1..3

The split lists are the reference's (trainval 2,486, test 200; two unannotated images are
in neither), shipped in `fcn_lightning/resources/siftflow/`. The rules
(`siftflow_layers.py`): geometric -1 becomes 0, then both are cast to uint8 and shifted
down by one, so class k becomes k - 1 and void 0 wraps round to 255 (ignore). A label
value outside those ranges would wrap into a wrong class: refused, with its file and head.
An item's label is uint8 2 x H x W: semantic (head `sem`), then geometric (head `geo`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fcn_lightning.data.mat_labels import mat_array, out_of_range
from fcn_lightning.data.sample_files import SampleError
from fcn_lightning.data.sources import Roots
from fcn_lightning.data.splits import Sample, read_id_list, resource_path
from fcn_lightning.errors import DataError

FORMAT = "siftflow"
FOLDER = "spatial_envelope_256x256_static_8outdoorcategories"
SPLITS = ("trainval", "test")
ARCHIVE = "SiftFlowDataset.zip"
# head name, label folder, lowest and highest value in the file
HEADS = (("sem", "SemanticLabels", 0, 33), ("geo", "GeoLabels", -1, 3))


def siftflow_samples(roots: Roots, list_name: str, repeats_ok: bool) -> list[Sample]:
    """The samples of `siftflow_<list_name>` from the shipped list."""
    if list_name not in SPLITS:
        raise DataError(
            f"split siftflow_{list_name}: SIFT Flow's splits are "
            f"{[f'siftflow_{s}' for s in SPLITS]}"
        )
    root = roots.require("siftflow")
    ids = read_id_list(resource_path("siftflow", f"{list_name}.txt"), repeats_ok=repeats_ok)
    return [siftflow_sample(root, i) for i in ids]


def siftflow_sample(root: Path, image_id: str) -> Sample:
    sem, geo = (root / folder / FOLDER / f"{image_id}.mat" for _, folder, _, _ in HEADS)
    image = root / "Images" / FOLDER / f"{image_id}.jpg"
    return Sample(image_id, image, sem, more_labels=(geo,), label_format=FORMAT)


def read_siftflow_labels(sample: Sample) -> torch.Tensor:
    """uint8 2 x H x W: semantic 0..32 and geometric 0..2, 255 = void in both."""
    paths = (sample.label, *sample.more_labels)
    labels = []
    for path, (head, _, low, high) in zip(paths, HEADS, strict=True):
        values = mat_array(path, "S", ARCHIVE)
        bad = out_of_range(values, low, high)
        if bad:
            raise SampleError(
                f"{path}: label values {bad} of head {head} are none of SIFT Flow's "
                f"{low}..{high} (void, then the classes): replace it from {ARCHIVE}"
            )
        if head == "geo":
            values[values == -1] = 0
        labels.append((values.astype(np.uint8) - np.uint8(1)).astype(np.uint8))
    (sem_path, geo_path), (sem, geo) = paths, labels
    if sem.shape != geo.shape:
        raise SampleError(
            f"{geo_path}: geometric label is {geo.shape[0]}x{geo.shape[1]} (HxW) but the "
            f"semantic label {sem_path} is {sem.shape[0]}x{sem.shape[1]}: replace them from "
            f"{ARCHIVE}"
        )
    return torch.from_numpy(np.stack(labels))
