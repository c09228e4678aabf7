"""Named splits: which image/label files make up a split, from the lists the datasets ship.

Names, as used by `data.train_split` / `data.val_split` / `data.test_split`:

- `<source>_<list>`: a list shipped with a source, e.g. `voc2012_train` (from
  `ImageSets/Segmentation/train.txt`), `voc2011_val`, `sbd_train` (from `train.txt`),
  `synthetic_val`. Sources are listed in `fcn_lightning.data.sources`.
- `seg11valid`: the paper's validation set, the 736 images of VOC2011 val that are not in
  SBD train (VOC2011 val itself overlaps SBD train, so scoring on it leaks training
  images). Its list ships with the package; where VOC2011's own val list and SBD's train
  list are both present, the composition is checked against them.
- `voc_aug_train`: VOC2012 train + SBD train + SBD val - VOC2012 val (10,582 images with a
  full download). An image with a VOC2012 label uses it; the others use SBD's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fcn_lightning.data.sources import SOURCES, Roots, get_source
from fcn_lightning.errors import ConfigError, DataError


@dataclass(frozen=True)
class Sample:
    """One image and its label file; the label's suffix says how to read it."""

    id: str
    image: Path
    label: Path


def resource_path(*parts: str) -> Path:
    """A file shipped inside the package under `fcn_lightning/resources/`."""
    return Path(str(resources.files("fcn_lightning").joinpath("resources", *parts)))


def read_id_list(path: Path) -> list[str]:
    """The image IDs of a split list, one per line, in file order."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"split list {path} is missing: the dataset is incomplete") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"split list {path} is unreadable ({err})") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise DataError(f"split list {path} lists no image IDs")
    return ids


def load_class_names(classes: str) -> list[str]:
    """Class names from a shipped list (`pascal`, `synthetic`) or a text file's path.

    A file holds one name per line; a blank line ends the list (the reference's PASCAL
    list has a note after it).
    """
    if classes == "synthetic":
        from fcn_lightning.data.synthetic import SYNTHETIC_CLASSES

        return list(SYNTHETIC_CLASSES)
    shipped = resource_path(classes, "classes.txt")
    path = shipped if shipped.is_file() else Path(classes).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"data.classes={classes!r}: no such class list ({path}); use 'pascal', "
            "'synthetic' or the path of a text file with one class name per line"
        )
    names = []
    for line in path.read_text().splitlines():
        if not line.strip():
            break
        names.append(line.strip())
    return names


def voc_samples(root: Path, ids: list[str]) -> list[Sample]:
    return [
        Sample(i, root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png")
        for i in ids
    ]


def sbd_samples(root: Path, ids: list[str]) -> list[Sample]:
    return [Sample(i, root / "img" / f"{i}.jpg", root / "cls" / f"{i}.mat") for i in ids]


def list_path(source: str, root: Path, list_name: str) -> Path:
    if get_source(source).kind == "sbd":
        return root / f"{list_name}.txt"
    return root / "ImageSets" / "Segmentation" / f"{list_name}.txt"


def _source_list(source: str, list_name: str, roots: Roots) -> list[Sample]:
    root = roots.require(source)
    path = list_path(source, root, list_name)
    if not path.is_file() and path.parent.is_dir():
        there = sorted(f"{source}_{p.stem}" for p in path.parent.glob("*.txt"))
        raise DataError(f"split list {path} is missing: splits of {source} here are {there}")
    ids = read_id_list(path)
    to_samples = sbd_samples if get_source(source).kind == "sbd" else voc_samples
    return to_samples(root, ids)


def _seg11valid(roots: Roots) -> list[Sample]:
    ids = read_id_list(resource_path("pascal", "seg11valid.txt"))
    voc = roots.require("voc2011")
    check_seg11valid(ids, voc, roots.find("sbd"))
    return voc_samples(voc, ids)


def check_seg11valid(ids: list[str], voc2011: Path, sbd: Path | None) -> None:
    """Check `ids` against VOC2011 val - SBD train, when both lists are there to read.

    A VOC2012 tree standing in for VOC2011 has another val list, so it proves nothing.
    """
    if voc2011.name != "VOC2011" or sbd is None:
        return
    voc_val, sbd_train = list_path("voc2011", voc2011, "val"), sbd / "train.txt"
    if not (voc_val.is_file() and sbd_train.is_file()):
        return
    train = set(read_id_list(sbd_train))
    composed = {i for i in read_id_list(voc_val) if i not in train}
    if composed != set(ids):
        raise DataError(
            f"seg11valid: {voc_val} minus {sbd_train} gives {len(composed)} IDs, "
            f"{len(composed ^ set(ids))} of them differ from the paper's {len(ids)}: one of the "
            "two lists is not the original, so validation could overlap training"
        )


def _voc_aug_train(roots: Roots) -> list[Sample]:
    voc, sbd = roots.require("voc2012"), roots.require("sbd")
    voc_train = set(read_id_list(list_path("voc2012", voc, "train")))
    voc_val = set(read_id_list(list_path("voc2012", voc, "val")))
    sbd_ids = set(read_id_list(sbd / "train.txt")) | set(read_id_list(sbd / "val.txt"))
    # VOC's own labels are finer than SBD's, so they win where an image has both.
    ids = sorted((voc_train | sbd_ids) - voc_val)
    return [voc_samples(voc, [i])[0] if i in voc_train else sbd_samples(sbd, [i])[0] for i in ids]


COMPOSED: dict[str, tuple[tuple[str, ...], Callable[[Roots], list[Sample]]]] = {
    "seg11valid": (("voc2011",), _seg11valid),  # SBD only to check it, when present
    "voc_aug_train": (("voc2012", "sbd"), _voc_aug_train),
}


def _parse(name: str) -> tuple[str, str]:
    for source in sorted(SOURCES, key=len, reverse=True):
        if name.startswith(f"{source}_") and len(name) > len(source) + 1:
            return source, name[len(source) + 1 :]
    raise ConfigError(
        f"unknown split {name!r}: use {' or '.join(sorted(COMPOSED))}, or "
        f"<source>_<list> with a source among {sorted(SOURCES)}, e.g. voc2012_val"
    )


def split_sources(name: str) -> tuple[str, ...]:
    """The sources a split reads; raises ConfigError for an unknown name."""
    if name in COMPOSED:
        return COMPOSED[name][0]
    return (_parse(name)[0],)


def load_split(name: str, roots: Roots) -> list[Sample]:
    """The samples of split `name` (its lists read, its files not yet checked)."""
    if name in COMPOSED:
        return COMPOSED[name][1](roots)
    source, list_name = _parse(name)
    return _source_list(source, list_name, roots)


def missing_files(samples: list[Sample]) -> list[tuple[Path, str]]:
    """(path, what) for every image or label file of `samples` that is not there."""
    problems = []
    for sample in samples:
        for path, what in ((sample.image, "image"), (sample.label, "label")):
            if not path.is_file():
                problems.append((path, f"missing {what} of ID {sample.id}"))
    return problems


def check_split(name: str, samples: list[Sample], expected: int | None) -> None:
    """Raise a DataError when files are missing or the count differs from `expected`."""
    if not samples:
        raise DataError(f"split {name} has no images")
    if expected is not None and len(samples) != expected:
        raise DataError(
            f"split {name} has {len(samples)} images but a full download has {expected} "
            f"(data.expected_counts.{name}): complete the download, or set "
            f"data.expected_counts.{name}=null to use these {len(samples)}"
        )
    missing = missing_files(samples)
    if missing:
        path, what = missing[0]
        raise DataError(
            f"{path}: {what} in split {name} ({len(missing)} files missing in all; "
            "`python -m fcn_lightning.verify_data` lists them)"
        )
