"""A user's own dataset (`data=folder data.root=ROOT`): its class list, its layout, its splits.

Two layouts, told apart by their folders (or named with `data.layout`):

    folders   ROOT/images/<split>/<name>.jpg|.jpeg|.png, ROOT/masks/<split>/<name>.png
    voc       ROOT/JPEGImages/<id>.jpg, ROOT/SegmentationClass/<id>.png,
              ROOT/ImageSets/Segmentation/<split>.txt (one ID per line)

Both keep their classes in ROOT/classes.txt, one class a line, in index order (line 1 is
class 0). A line is a name, optionally followed by its colour, either three integers 0-255
or `#RRGGBB`: `road`, `road 128 64 128`, `traffic light #FAAA1E`. A name may hold spaces but
not end in a number (`car 2` would read as half a colour). Blank lines, a UTF-8 byte-order
mark and CRLF line ends are ignored. Either every class has a colour or none does (then
the PASCAL VOC colour map is used); a name given twice is refused.

Masks are class-index PNGs (255 = void, any depth and mode `label_png` reads). The folder's
own counts are its expected counts; every mismatch is found before training starts
(`folder_problems`), each kind in one line naming a file and how many share it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf.errors import InterpolationResolutionError

from fcn_lightning.data.splits import Sample, read_id_list
from fcn_lightning.errors import ConfigError, DataError, FCNError

LAYOUTS = ("auto", "folders", "voc")
CLASSES_FILE = "classes.txt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
GRAMMAR = "a class name, optionally followed by its colour as R G B (0-255) or #RRGGBB"
NO_FOLDER_COUNT = 2  # `class_count` without a dataset folder: the schema's smallest count
_HEX = re.compile(r"#[0-9a-fA-F]{6}")


@dataclass(frozen=True)
class ClassList:
    names: list[str]
    colours: list[tuple[int, int, int]] | None  # None: the file gives none


def read_class_list(path: Path) -> ClassList:
    """The classes of the text file at `path` (grammar in the module docstring)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path} is missing: write one class name per line there") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror or err})") from None
    names: list[str] = []
    colours: list[tuple[int, int, int] | None] = []
    first: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, colour = _parse_line(line, f"{path}:{number}")
        if name in first:
            raise DataError(
                f"{path}:{number}: class {name!r} is already on line {first[name]}: each "
                "class once (its line number counts from 0 as its mask value)"
            )
        first[name] = number
        names.append(name)
        colours.append(colour)
    if len(names) < 2:
        raise DataError(
            f"{path} lists {len(names)} class(es): a segmentation needs at least 2 (e.g. "
            "background and your class), one name per line"
        )
    if len(names) > 255:
        raise DataError(f"{path} lists {len(names)} classes: at most 255 (255 marks void)")
    given = [c is not None for c in colours]
    if any(given) and not all(given):
        index = given.index(not given[0])
        line = list(first.values())[index]
        raise DataError(
            f"{path}:{line}: class {names[index]!r} has {'a' if given[index] else 'no'} "
            f"colour but {names[0]!r} on line {next(iter(first.values()))} has "
            f"{'one' if given[0] else 'none'}: give every class a colour, or none"
        )
    return ClassList(names, [c for c in colours if c is not None] if all(given) else None)


def _parse_line(line: str, where: str) -> tuple[str, tuple[int, int, int] | None]:
    tokens = line.split()
    if len(tokens) == 1:
        name, colour = tokens[0], None
    elif tokens[-1].startswith("#"):
        if not _HEX.fullmatch(tokens[-1]):
            raise DataError(f"{where}: {tokens[-1]!r} is no #RRGGBB colour; a line is {GRAMMAR}")
        value = tokens[-1]
        name = " ".join(tokens[:-1])
        colour = (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
    else:
        numbers = 0
        while numbers < len(tokens) and tokens[-1 - numbers].isdigit():
            numbers += 1
        if numbers == 0:
            name, colour = " ".join(tokens), None
        elif numbers == 3 and len(tokens) > 3:
            rgb = tuple(int(t) for t in tokens[-3:])
            if max(rgb) > 255:
                raise DataError(f"{where}: colour {' '.join(tokens[-3:])}: each of R G B is 0-255")
            name, colour = " ".join(tokens[:-3]), rgb
        else:
            raise DataError(f"{where}: {line.strip()!r} does not parse: a line is {GRAMMAR}")
    if name.startswith("#"):
        raise DataError(f"{where}: {line.strip()!r} has no class name: a line is {GRAMMAR}")
    return name, colour  # type: ignore[return-value]


class UnreadableClassList(DataError, InterpolationResolutionError):
    """A class list `${class_count:}` cannot count. OmegaConf passes its own error type on
    as it is, so the config check shows this line, not a wrapped traceback summary."""


def class_count(classes: Any) -> int:
    """How many classes `data.classes` names (the `${class_count:}` resolver of data=folder).

    A list in a folder that exists but cannot be counted fails the config check with its
    own line. Where the folder itself is missing (data.root unset or mistyped) there is
    nothing to count, and the config holds no count to check yet: this returns
    NO_FOLDER_COUNT, and the first step that reads data (train's prerequisites, setup,
    verify_data) refuses the folder in one line naming it.
    """
    from fcn_lightning.data.splits import load_class_names

    path = Path(str(classes)).expanduser()
    if not path.parent.is_dir():
        return NO_FOLDER_COUNT
    try:
        return len(load_class_names(str(classes)))
    except FCNError as err:
        raise UnreadableClassList(str(err)) from None


def class_palette(names: Sequence[str], colours: Sequence[Sequence[int]] | None) -> list[list[int]]:
    """One [R, G, B] per class: the given colours, else the PASCAL VOC colour map's."""
    if colours is None:
        from fcn_lightning.visualize import voc_palette

        colours = voc_palette(len(names)).tolist()
    return [[int(v) for v in c] for c in colours]


# -- layout and splits -------------------------------------------------------------------

MARKERS = {"folders": ("images", "masks"), "voc": ("JPEGImages", "SegmentationClass")}


def detect_layout(root: Path, layout: str = "auto") -> str:
    """`folders` or `voc`: the layout `root` has (checked against `layout` unless auto)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"data.layout={layout!r}: choose one of {list(LAYOUTS)}")
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"data.root={root} {what}: point it at the folder of your dataset")
    found = [k for k, dirs in MARKERS.items() if all((root / d).is_dir() for d in dirs)]
    if layout != "auto":
        if layout not in found:
            need = " and ".join(f"{d}/" for d in MARKERS[layout])
            raise DataError(f"data.root={root}: data.layout={layout} needs {need} in it")
        return layout
    if len(found) == 1:
        return found[0]
    if found:
        raise ConfigError(
            f"data.root={root} holds both layouts (images/+masks/ and JPEGImages/+"
            "SegmentationClass/): set data.layout=folders or data.layout=voc"
        )
    there = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())[:6]
    raise DataError(
        f"data.root={root} is neither layout: expected images/<split>/ and masks/<split>/, or "
        f"JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/<split>.txt (found "
        f"{there or 'no folders'}); see docs/own_dataset.md"
    )


def folder_split(root: Path | str, split: str, layout: str = "auto") -> list[Sample]:
    """The image/mask pairs of `split`, every image with its mask; raises DataError."""
    root = Path(root).expanduser()
    kind = detect_layout(root, layout)
    samples = _voc_split(root, split) if kind == "voc" else _folders_split(root, split)
    if not samples:
        raise DataError(f"split {split} of {root} is empty: put its image/mask pairs there")
    return samples


def _files(folder: Path, suffixes: tuple[str, ...], what: str, split: str) -> dict[str, Path]:
    if not folder.is_dir():
        others = sorted(p.name for p in folder.parent.iterdir() if p.is_dir())
        raise DataError(f"{folder} is missing: split {split} needs it (splits there: {others})")
    by_stem: dict[str, Path] = {}
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    stray = [p for p in entries if p.is_dir() or p.suffix.lower() not in suffixes]
    if stray:
        raise DataError(
            f"{stray[0]}: not {what} ({'/'.join(suffixes)}); {len(stray)} such entr"
            f"{'y' if len(stray) == 1 else 'ies'} in {folder}: move them out"
        )
    for path in entries:
        if path.stem in by_stem:
            raise DataError(
                f"{path} and {by_stem[path.stem]} share the name {path.stem!r}: rename one"
            )
        by_stem[path.stem] = path
    return by_stem


def _unpaired(have: dict[str, Path], lack: dict[str, Path], what: str, where: Path) -> None:
    alone = sorted(set(have) - set(lack))
    if alone:
        raise DataError(
            f"{have[alone[0]]}: no {what} for it in {where} ({len(alone)} file(s) without "
            f"one): add the {what}s, or move those files out"
        )


def _folders_split(root: Path, split: str) -> list[Sample]:
    image_dir, mask_dir = root / "images" / split, root / "masks" / split
    images = _files(image_dir, IMAGE_SUFFIXES, "an image", split)
    masks = _files(mask_dir, (".png",), "a mask PNG", split)
    _unpaired(images, masks, "mask", mask_dir)
    _unpaired(masks, images, "image", image_dir)
    return [Sample(stem, images[stem], masks[stem]) for stem in sorted(images)]


def _voc_split(root: Path, split: str) -> list[Sample]:
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        there = sorted(p.stem for p in listing.parent.glob("*.txt"))
        raise DataError(f"{listing} is missing: split {split} needs it (splits there: {there})")
    samples, no_image, no_mask = [], [], []
    for i in read_id_list(listing):
        image = next(
            (p for s in IMAGE_SUFFIXES if (p := root / "JPEGImages" / f"{i}{s}").is_file()),
            None,
        )
        mask = root / "SegmentationClass" / f"{i}.png"
        if image is None:
            no_image.append(root / "JPEGImages" / f"{i}.jpg")
        if not mask.is_file():
            no_mask.append(mask)
        if image is not None and mask.is_file():
            samples.append(Sample(i, image, mask))
    for missing, what in ((no_mask, "mask"), (no_image, "image")):
        if missing:
            raise DataError(
                f"{missing[0]}: missing {what} of an ID in {listing} ({len(missing)} "
                f"ID(s) without one): add the {what}s, or drop those IDs from the list"
            )
    return samples


# -- the check before training -------------------------------------------------------------


def folder_problems(data: Mapping[str, Any], stages: Sequence[str]) -> list[FCNError]:
    """Every mismatch of the splits `stages` use, each kind once: pairs, then every mask's
    values against the class list and every pair's sizes (the files all read)."""
    from fcn_lightning.data.folder_scan import scan_pairs

    root, layout = Path(str(data["root"])).expanduser(), str(data.get("layout", "auto"))
    classes = Path(str(data["classes"])).expanduser()
    if not classes.is_file():
        return []  # said by the class list's own check (`load_class_names`), naming it
    splits = dict.fromkeys(data.get(f"{s}_split") or data.get("val_split") for s in stages)
    try:
        kind = detect_layout(root, layout)
    except FCNError as err:  # said once, not once per split
        return [err]
    problems: list[FCNError] = []
    samples: dict[str, list[Sample]] = {}
    for split in splits:
        try:
            samples[str(split)] = folder_split(root, str(split), kind)
        except FCNError as err:
            problems.append(err)
    try:
        num_classes = len(read_class_list(classes).names)
    except FCNError:
        return problems  # the class list's own check says why (`load_class_names`)
    if not problems:
        problems += scan_pairs(samples, num_classes, classes)
    return problems


def absolute_root(root: Any) -> str | None:
    """`data.root` as an absolute path (eval finds it from the checkpoint wherever it is
    run); no disk read, so the data module's construction stays a configuration check."""
    if root is None:
        return None
    if not str(root).strip():
        raise ConfigError("data.root is empty: set it to the folder of your dataset")
    return os.path.abspath(os.path.expanduser(str(root)))


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ConfigError(f"data.layout={layout!r}: choose one of {list(LAYOUTS)}")


def file_palette(classes: str, names: Sequence[str]) -> list[list[int]] | None:
    """The palette of `data.classes` when it is a file (its colours, else VOC's map)."""
    from fcn_lightning.data.splits import resource_path

    if classes == "synthetic" or resource_path(classes, CLASSES_FILE).is_file():
        return None  # a shipped list: predict's VOC colours, as before
    return class_palette(names, read_class_list(Path(classes).expanduser()).colours)
