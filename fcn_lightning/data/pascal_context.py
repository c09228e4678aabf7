"""PASCAL-Context's 59-class task, labelled as the reference's data layer labels it.

Layout under `paths.data_dir` (`fcn_lightning.data.sources`):

    VOCdevkit/VOC2010/JPEGImages/<id>.jpg         VOCtrainval_03-May-2010.tar
    VOCdevkit/VOC2010/ImageSets/Main/<split>.txt  the split lists (train 4,998, val 5,105)
    pascal-context/trainval/<id>.mat              trainval.tar.gz, key `LabelMap`
    pascal-context/labels.txt                     the full list: "N: name", 459 names
    pascal-context/59_labels.txt                  the task's 59 names, "N: name"

The mapping (`pascalcontext_layers.py`): names are compared with their spaces removed;
three task names are spelt otherwise in the full list (diningtable is `table`, bedcloth
`bedclothes`, clothes `cloth`); the k-th task name (59_labels.txt order) becomes class k
(1..59) where `LabelMap` holds its full-list id (its position in labels.txt + 1); every
other id, and 0 (unlabelled), becomes 0 = background, trained and scored like any class.
The mapping is one lookup table of len(labels.txt) + 1 entries, built once per dataset.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from fcn_lightning.data.mat_labels import mat_array, out_of_range
from fcn_lightning.data.sample_files import SampleError
from fcn_lightning.data.sources import CONTEXT_59_LABELS, CONTEXT_ARCHIVE, Roots
from fcn_lightning.data.splits import Sample, read_id_list
from fcn_lightning.errors import DataError

FORMAT = "pascal_context"
TASK_CLASSES = 59
# The 59-class list's name -> the full list's name for the same class.
RENAMES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}
SPLITS = ("train", "val", "trainval")  # VOC2010's ImageSets/Main lists Context annotates


def read_name_list(path: Path, origin: str) -> list[str]:
    """The names of an "N: name" list, spaces removed, numbered 1, 2, ... in file order.

    The reference takes a class's id from its line's position, so a list whose numbers
    do not count up from 1 is not the file the annotations were made with: refused.
    `origin` says where the file comes from, for the message.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path} is missing: {origin}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is unreadable ({err}): {origin}") from None
    names: list[str] = []
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        number, colon, name = line.partition(":")
        expected = len(names) + 1
        if not colon or not number.strip().isdigit() or not name.strip():
            raise DataError(
                f"{path}, line {line_number}: {line.strip()!r} is no 'N: name' entry: this is "
                f"not PASCAL-Context's list ({origin})"
            )
        if int(number) != expected:
            raise DataError(
                f"{path}, line {line_number}: entry {int(number)} where {expected} belongs: "
                f"the ids count 1, 2, ... in file order, so this is not PASCAL-Context's list "
                f"({origin})"
            )
        names.append("".join(name.split()))
    if not names:
        raise DataError(f"{path} lists no classes: {origin}")
    return names


def _origins(root: Path) -> tuple[str, str]:
    full = f"it comes with {CONTEXT_ARCHIVE.filename} ({CONTEXT_ARCHIVE.url}), in {root}"
    task = (
        f"download {CONTEXT_59_LABELS.filename} from {CONTEXT_59_LABELS.url} into {root} "
        "(data.download=true fetches it)"
    )
    return full, task


@functools.lru_cache(maxsize=8)
def context_lookup(root: Path) -> np.ndarray:
    """Full-list id (0..len(labels.txt)) -> task class (0 = background, 1..59), read-only."""
    full_origin, task_origin = _origins(root)
    full = read_name_list(root / "labels.txt", full_origin)
    task = read_name_list(root / "59_labels.txt", task_origin)
    if len(task) != TASK_CLASSES:
        raise DataError(
            f"{root / '59_labels.txt'} names {len(task)} classes, the 59-class task's list "
            f"names {TASK_CLASSES}: {task_origin}"
        )
    lookup = np.zeros(len(full) + 1, dtype=np.uint8)
    for task_class, name in enumerate(task, 1):
        full_name = RENAMES.get(name, name)
        if full_name not in full:
            raise DataError(
                f"{root / '59_labels.txt'}: class {task_class} ({name!r}) is not in "
                f"{root / 'labels.txt'}: the two lists are not PASCAL-Context's ({full_origin})"
            )
        lookup[full.index(full_name) + 1] = task_class
    lookup.setflags(write=False)
    return lookup


def context_samples(roots: Roots, list_name: str, repeats_ok: bool) -> list[Sample]:
    """The samples of `pascal_context_<list_name>`; the class lists are checked now."""
    voc, context = roots.require("voc2010"), roots.require("pascal_context")
    context_lookup(context)
    path = voc / "ImageSets" / "Main" / f"{list_name}.txt"
    if not path.exists() and path.parent.is_dir():
        there = [f"pascal_context_{s}" for s in SPLITS if (path.parent / f"{s}.txt").is_file()]
        raise DataError(f"split list {path} is missing: splits of pascal_context here are {there}")
    ids = read_id_list(path, repeats_ok=repeats_ok)
    return [
        Sample(
            i,
            voc / "JPEGImages" / f"{i}.jpg",
            context / "trainval" / f"{i}.mat",
            label_format=FORMAT,
        )
        for i in ids
    ]


def read_context_label(sample: Sample) -> torch.Tensor:
    """The 59-class task label of `sample` (uint8 H x W, 0 = background, 1..59)."""
    path = sample.label
    root = path.parent.parent  # <root>/trainval/<id>.mat, as context_samples builds it
    lookup = context_lookup(root)
    ids = mat_array(path, "LabelMap", CONTEXT_ARCHIVE.filename)
    bad = out_of_range(ids, 0, len(lookup) - 1)
    if bad:
        raise SampleError(
            f"{path}: LabelMap holds ids {bad}, which {root / 'labels.txt'} (ids 1.."
            f"{len(lookup) - 1}) does not list: the annotations and labels.txt are from "
            f"different releases; take both from {CONTEXT_ARCHIVE.filename}"
        )
    return torch.from_numpy(lookup[ids])
