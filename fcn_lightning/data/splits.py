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
- `nyud_train`, `nyud_val`, `nyud_test`, `nyud_trainval` (train + val): NYUDv2's lists,
  shipped with the package and checked against the dataset folder's (`data/nyud.py`).
- `pascal_context_train`, `pascal_context_val`: VOC2010's `ImageSets/Main` lists with the
  Context annotations (`fcn_lightning.data.pascal_context`).
- `siftflow_trainval`, `siftflow_test`: the reference's lists, shipped with the package
  (`fcn_lightning.data.siftflow`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fcn_lightning.data.sample_files import unusable_path
from fcn_lightning.data.sources import SOURCES, Roots, get_source
from fcn_lightning.errors import ConfigError, DataError


@dataclass(frozen=True)
class Sample:
    """One image and its label file; the label's suffix says how to read it, unless
    `label_format` names a dataset's own rules (`readers.LABEL_FORMATS`). `more_labels`:
    the label files of further heads (SIFT Flow's geometric labels). `extra`: the other
    input files of the sample by modality, e.g. NYUDv2's `(("depth", path), ("hha", path))`
    (`image` is then the first modality's file)."""

    id: str
    image: Path
    label: Path
    extra: tuple[tuple[str, Path], ...] = ()
    more_labels: tuple[Path, ...] = ()
    label_format: str = ""


def resource_path(*parts: str) -> Path:
    """A file shipped inside the package under `fcn_lightning/resources/`."""
    return Path(str(resources.files("fcn_lightning").joinpath("resources", *parts)))


class RepeatedIds(DataError):
    """A split list naming an image more than once (it would count twice)."""


def read_id_list(path: Path, *, repeats_ok: bool = False) -> list[str]:
    """The image IDs of a split list, one per line, in file order.

    A UTF-8 byte-order mark, CRLF line ends and spaces around an ID are not part of it;
    blank lines are skipped. An ID listed twice raises RepeatedIds unless `repeats_ok`
    (then it is kept twice).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"split list {path} is missing: the dataset is incomplete") from None
    except IsADirectoryError:
        raise DataError(
            f"split list {path} is a directory: put the text file of image IDs there"
        ) from None
    except UnicodeDecodeError as err:
        raise DataError(
            f"split list {path} is not UTF-8 text ({err.reason} at byte {err.start}): save it "
            "as UTF-8, one image ID per line"
        ) from None
    except OSError as err:
        raise DataError(f"split list {path} is unreadable ({err})") from None
    ids = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not ids:
        raise DataError(f"split list {path} lists no image IDs")
    lines: dict[str, list[int]] = {}
    for number, i in ids:
        lines.setdefault(i, []).append(number)
    repeated = {i: numbers for i, numbers in lines.items() if len(numbers) > 1}
    if repeated and not repeats_ok:
        raise RepeatedIds(f"split list {path}: {_repeats(repeated)}")
    return [i for _, i in ids]


def _repeats(repeated: dict[str, list[int]]) -> str:
    shown = [
        f"{i} (lines {', '.join(map(str, numbers))})" for i, numbers in list(repeated.items())[:3]
    ]
    more = f" and {len(repeated) - 3} more" if len(repeated) > 3 else ""
    return (
        f"{len(repeated)} ID(s) listed more than once: {'; '.join(shown)}{more}; each would be "
        "trained on or scored twice: delete the repeated lines"
    )


def load_class_names(classes: str) -> list[str]:
    """Class names from a shipped list (`pascal`, `synthetic`) or a text file's path.

    A shipped list holds one name per line; a blank line ends it (the reference's PASCAL
    list has a note after it). A user's file is read by `class_list.read_class_list`: one
    class a line, optionally with its colour, blank lines skipped.
    """
    if classes == "synthetic":
        from fcn_lightning.data.synthetic import SYNTHETIC_CLASSES

        return list(SYNTHETIC_CLASSES)
    shipped = resource_path(classes, "classes.txt")
    path = shipped if shipped.is_file() else Path(classes).expanduser()
    if not path.is_file():
        if not path.parent.is_dir():
            raise ConfigError(
                f"data.classes={classes!r}: no such class list: the folder {path.parent} "
                "does not exist (with data=folder, set data.root to your dataset's folder; "
                "see docs/own_dataset.md)"
            )
        raise ConfigError(
            f"data.classes={classes!r}: no such class list ({path}); use 'pascal', "
            "'synthetic' or the path of a text file with one class name per line (data=folder "
            "reads classes.txt in data.root: see docs/own_dataset.md)"
        )
    if not shipped.is_file():  # a user's list: names, optionally colours
        from fcn_lightning.data.class_list import read_class_list

        return read_class_list(path).names
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


def _source_list(source: str, list_name: str, roots: Roots, repeats_ok: bool) -> list[Sample]:
    kind = get_source(source).kind
    if kind == "context":
        from fcn_lightning.data.pascal_context import context_samples

        return context_samples(roots, list_name, repeats_ok)
    if kind == "siftflow":
        from fcn_lightning.data.siftflow import siftflow_samples

        return siftflow_samples(roots, list_name, repeats_ok)
    root = roots.require(source)
    if get_source(source).kind == "nyud":
        from fcn_lightning.data.nyud import nyud_split

        return nyud_split(root, list_name, repeats_ok=repeats_ok)
    path = list_path(source, root, list_name)
    if not path.exists() and path.parent.is_dir():
        there = sorted(f"{source}_{p.stem}" for p in path.parent.glob("*.txt"))
        raise DataError(f"split list {path} is missing: splits of {source} here are {there}")
    ids = read_id_list(path, repeats_ok=repeats_ok)
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
    train = set(read_id_list(sbd_train, repeats_ok=True))
    composed = {i for i in read_id_list(voc_val, repeats_ok=True) if i not in train}
    if composed != set(ids):
        raise DataError(
            f"seg11valid: {voc_val} minus {sbd_train} gives {len(composed)} IDs, "
            f"{len(composed ^ set(ids))} of them differ from the paper's {len(ids)}: one of the "
            "two lists is not the original, so validation could overlap training"
        )


def _voc_aug_train(roots: Roots) -> list[Sample]:
    voc, sbd = roots.require("voc2012"), roots.require("sbd")

    def id_set(path: Path) -> set[str]:  # an ID repeated in a list still counts once
        return set(read_id_list(path, repeats_ok=True))

    voc_train = id_set(list_path("voc2012", voc, "train"))
    voc_val = id_set(list_path("voc2012", voc, "val"))
    sbd_ids = id_set(sbd / "train.txt") | id_set(sbd / "val.txt")
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
    source, list_name = _parse(name)
    if get_source(source).kind == "nyud":  # its lists ship with the package: known now
        from fcn_lightning.data.nyud import check_list_name

        check_list_name(list_name)
    return (*get_source(source).needs, source)


def load_split(name: str, roots: Roots, *, repeats_ok: bool = False) -> list[Sample]:
    """The samples of split `name` (its lists read, its files not yet checked).

    An image listed twice in a list used as the split raises RepeatedIds, unless
    `repeats_ok` (verify_data, to check the files all the same). Composed splits are
    sets of their lists' IDs, so a repeat there counts once.
    """
    if name in COMPOSED:
        return COMPOSED[name][1](roots)
    source, list_name = _parse(name)
    return _source_list(source, list_name, roots, repeats_ok)


def missing_files(samples: list[Sample]) -> list[tuple[Path, str]]:
    """(path, what is wrong) for every image or label file of `samples` that is not there
    (or is a directory, a broken or looping symbolic link: no file to read)."""
    problems = []
    for sample in samples:
        labels = [(label, "label") for label in (sample.label, *sample.more_labels)]
        files = [(sample.image, "image"), *labels]
        files += [(path, modality) for modality, path in sample.extra]
        for path, what in files:
            why = unusable_path(path)
            if why == "missing":
                problems.append((path, f"missing {what} of ID {sample.id}"))
            elif why is not None:
                problems.append((path, f"{what} of ID {sample.id} is {why}"))
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
            f"{path}: {what}, in split {name} ({len(missing)} file(s) missing or unusable; "
            "put the dataset's files there, `python -m fcn_lightning.verify_data` lists them)"
        )
