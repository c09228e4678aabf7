"""The class list of a user's dataset (`classes.txt`): names in mask-value order, optionally
colours, and the palette predict paints with.

One class a line, line 1 being class 0. A line is a name, optionally followed by its
colour, either three integers 0-255 or `#RRGGBB`: `road`, `road 128 64 128`,
`traffic light #FAAA1E`. A name may hold spaces but may not end in a number (`car 2`
is refused: half a colour or a typo). Blank lines, a UTF-8 byte-order mark and CRLF line
ends are ignored. Either every class has a colour or none does (then the PASCAL VOC colour
map is used); a name given twice is refused; 2 to 255 classes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf.errors import InterpolationResolutionError

from fcn_lightning.errors import DataError, FCNError

CLASSES_FILE = "classes.txt"
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
                f"{path}:{number}: class {name!r} is already on line {first[name]}: list each "
                "class once (a class's mask value is its place in the list, from 0)"
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
        while numbers < len(tokens) and _is_number(tokens[-1 - numbers]):
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


def _is_number(token: str) -> bool:
    return token.isascii() and token.isdigit()  # not "²": int() refuses it


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


def file_palette(classes: str, names: Sequence[str]) -> list[list[int]] | None:
    """The palette of `data.classes` when it is a file (its colours, else VOC's map)."""
    from fcn_lightning.data.splits import resource_path

    if classes == "synthetic" or resource_path(classes, CLASSES_FILE).is_file():
        return None  # a shipped list: predict's VOC colours, as before
    return class_palette(names, read_class_list(Path(classes).expanduser()).colours)


def changed_classes(
    classes: str, names: Sequence[str] | None, palette: Sequence[Sequence[int]] | None
) -> str | None:
    """How the class list `classes` differs from the `names` and `palette` a checkpoint
    recorded, in a few words; None if it does not.

    `data.classes` is a path, so a resume sees the same setting when the file's lines
    changed under it: the names and colours themselves are what training used."""
    from fcn_lightning.data.splits import load_class_names

    if names is None:  # a checkpoint from before class names were recorded
        return None
    now = load_class_names(classes)
    if list(now) != list(names):
        if len(now) != len(names):
            return f"{len(names)} classes then, {len(now)} now"
        k = next(k for k, (a, b) in enumerate(zip(names, now, strict=True)) if a != b)
        return f"class {k} was {names[k]!r}, now {now[k]!r}"
    colours = file_palette(classes, now)
    if palette is not None and colours is not None and len(palette) == len(colours):
        then = [[int(v) for v in c] for c in palette]
        for k, (a, b) in enumerate(zip(then, colours, strict=True)):
            if a != b:
                return f"class {k} ({now[k]!r}) was coloured {a}, now {b}"
    return None
