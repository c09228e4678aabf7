"""The reference model zoo's registry (``zoo.yaml`` beside this file): reading, checking
and looking up its entries. What to do with an entry (download, convert, cache) is
`fcn_lightning.interop.zoo`.

``FCN_ZOO_REGISTRY=/path/to/registry.yaml`` replaces the shipped registry (the tests point
it at a local server; a site can point it at its own copies).
"""

from __future__ import annotations

import difflib
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fcn_lightning.data.inputs import INPUTS
from fcn_lightning.errors import ConfigError

REGISTRY_ENV = "FCN_ZOO_REGISTRY"
SHIPPED = Path(__file__).with_name("zoo.yaml")
FORMATS = ("caffemodel", "torchfcn_pth", "torchvision")
REQUIRED = ("what", "format", "url", "file", "md5", "size", "min_size", "loadable", "scores",
            "source")  # fmt: skip
SCORE_KEYS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu", "seg12test_mean_iu")


@dataclass(frozen=True)
class ZooFile:
    """One downloadable file of an entry's weights."""

    format: str
    url: str
    file: str
    md5: str | None = None
    sha1: str | None = None
    size: int | None = None  # exact bytes, where a source states them
    min_size: int = 0  # bytes every intact copy has at least
    mirrors: tuple[str, ...] = ()

    def expected(self) -> str:
        """``md5 ..., at least N bytes``: what the advice to fetch it by hand names."""
        sums = [f"{k} {v}" for k, v in (("md5", self.md5), ("sha1", self.sha1)) if v]
        if not self.md5:
            sums.insert(0, "no md5 is known")
        size = f"{self.size:,} bytes" if self.size else f"at least {self.min_size:,} bytes"
        return ", ".join([*sums, size])


@dataclass(frozen=True)
class ZooEntry:
    name: str
    what: str
    main: ZooFile
    alternatives: tuple[ZooFile, ...]
    loadable: bool | str  # True | False | "backbone" (ImageNet weights, not a segmenter)
    refusal: str | None
    variant: str | None
    backbone: str
    num_classes: int | None
    scores: dict[str, Any]
    scores_note: str | None
    source: str
    backbone_weights: dict[str, str] | None = None
    data: str | None = None  # the data preset that evaluates it (data=<preset>)
    input: str = "rgb"  # data.input / model.input of the net
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_backbone(self) -> bool:
        return self.loadable == "backbone"

    def evaluated_with(self) -> str:
        """``data=<preset>`` (and ``data.input=<input>`` for another than rgb): what eval and
        predict take with ``model_zoo=<name>``."""
        if not self.data:
            return "-"
        return f"data={self.data}" + (f" data.input={self.input}" if self.input != "rgb" else "")

    def scores_text(self) -> str:
        if not self.scores:
            return "-"
        split = self.scores.get("split", "?")
        shown = [f"mean IU {self.scores['mean_iu']}"] if "mean_iu" in self.scores else []
        if "seg12test_mean_iu" in self.scores:
            shown.append(f"{self.scores['seg12test_mean_iu']} seg12test")
        return f"{', '.join(shown)} ({split})"


@dataclass(frozen=True)
class Registry:
    path: Path
    entries: dict[str, ZooEntry]
    not_released: dict[str, str]

    def get(self, name: str, *, key: str) -> ZooEntry:
        """The entry ``name``, or one line naming the nearest names (``key``: what named
        it, as the user typed it up to the name: ``model_zoo=``, ``model.init_from=zoo:``)."""
        key = key.removesuffix("=")
        if name in self.entries:
            return self.entries[name]
        if name in self.not_released:
            why = self.not_released[name]
            raise ConfigError(f"{_typed(key, name)}: not released by the FCN authors ({why})")
        names = [*self.entries, *self.not_released]
        near = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
        listed = ", ".join(self.entries)
        hint = f"did you mean {', '.join(near)}?" if near else f"choose one of {listed}"
        raise ConfigError(
            f"{_typed(key, name)}: no such model in the zoo ({self.path}); {hint} "
            "(python -m fcn_lightning.zoo lists them)"
        )


def _typed(key: str, name: str) -> str:
    """``key=name`` as the user typed it (``model.init_from=zoo:`` + ``name``)."""
    key = key.removesuffix("=")
    return f"{key}{name}" if key.endswith((":", " ")) else f"{key}={name}"


def model_source_problem(ckpt_path: object, model_zoo: object) -> str | None:
    """eval, predict and export take their model from exactly one of ``ckpt_path`` and
    ``model_zoo``: why the two given are not that, or None."""
    if ckpt_path and model_zoo:
        return f"ckpt_path={ckpt_path} and model_zoo={model_zoo}: give one of them, not both"
    if not ckpt_path and not model_zoo:
        return (
            "ckpt_path is required: give ckpt_path=<file.ckpt>, or model_zoo=<name> for a "
            "reference model (python -m fcn_lightning.zoo lists them)"
        )
    return None


def registry_path() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or SHIPPED).expanduser()


def load_registry(path: Path | None = None) -> Registry:
    """The registry at ``path`` (default: `registry_path`), every entry checked."""
    path = path or registry_path()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"{REGISTRY_ENV}={path}: cannot be read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ConfigError(f"{path}: not a model zoo registry (no `models:` mapping)")
    entries = {str(name): _entry(path, str(name), raw) for name, raw in data["models"].items()}
    not_released = {str(k): str(v) for k, v in (data.get("not_released") or {}).items()}
    return Registry(path, entries, not_released)


def _entry(path: Path, name: str, raw: Any) -> ZooEntry:
    where = f"{path}: models.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(REQUIRED)}")
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    if raw.get("loadable") not in (True, False, "backbone"):
        raise ConfigError(f"{where}.loadable: true, false or backbone")
    if raw["loadable"] is False and not raw.get("refusal"):
        raise ConfigError(f"{where}: loadable: false needs a `refusal:` line saying why")
    if raw["loadable"] is True and (not raw.get("variant") or not raw.get("num_classes")):
        raise ConfigError(f"{where}: a loadable model needs variant and num_classes")
    classes = raw.get("num_classes")
    if classes is not None and (type(classes) is not int or classes < 1):
        raise ConfigError(f"{where}.num_classes={classes!r}: a number of classes or null")
    if not isinstance(raw["scores"], dict) or (not raw["scores"] and not raw.get("scores_note")):
        raise ConfigError(f"{where}.scores: a mapping; {{}} needs a scores_note saying why")
    if raw.get("input", "rgb") not in INPUTS:
        raise ConfigError(f"{where}.input={raw.get('input')!r}: one of {list(INPUTS)}")
    if raw.get("data") is not None and not isinstance(raw["data"], str):
        raise ConfigError(f"{where}.data={raw['data']!r}: the name of a data preset or null")
    alternatives = tuple(_file(f"{where}.alternatives[{i}]", alt)
                         for i, alt in enumerate(raw.get("alternatives") or []))  # fmt: skip
    return ZooEntry(
        name=name,
        what=str(raw["what"]),
        main=_file(where, raw),
        alternatives=alternatives,
        loadable=raw["loadable"],
        refusal=raw.get("refusal"),
        variant=raw.get("variant"),
        backbone=str(raw.get("backbone", "vgg16")),
        num_classes=raw.get("num_classes"),
        scores=dict(raw["scores"]),
        scores_note=raw.get("scores_note"),
        source=str(raw["source"]),
        backbone_weights=raw.get("backbone_weights"),
        data=raw.get("data"),
        input=str(raw.get("input", "rgb")),
        raw=raw,
    )


def _file(where: str, raw: dict[str, Any]) -> ZooFile:
    if raw.get("format") not in FORMATS:
        raise ConfigError(f"{where}.format={raw.get('format')!r}: one of {list(FORMATS)}")
    for key in ("url", "file"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ConfigError(f"{where}.{key}: give a non-empty string")
    if "/" in raw["file"] or raw["file"] in (".", ".."):
        raise ConfigError(f"{where}.file={raw['file']!r}: a file name, not a path")
    for key, length in (("md5", 32), ("sha1", 40)):
        value = raw.get(key)
        if value is not None and (
            not isinstance(value, str) or len(value) != length
            or not all(c in string.hexdigits for c in value)
        ):  # fmt: skip
            raise ConfigError(f"{where}.{key}={value!r}: {length} hex digits or null")
    mirrors = raw.get("mirrors") or []
    if not isinstance(mirrors, list) or not all(isinstance(m, str) and m for m in mirrors):
        # a string would be tried letter by letter
        raise ConfigError(f"{where}.mirrors={mirrors!r}: a list of URLs, or []")
    size, min_size = raw.get("size"), raw.get("min_size", 0)
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ConfigError(f"{where}.size={size!r}: a number of bytes or null")
    if not isinstance(min_size, int) or min_size < 0:
        raise ConfigError(f"{where}.min_size={min_size!r}: a number of bytes")
    return ZooFile(
        format=raw["format"], url=raw["url"], file=raw["file"], md5=raw.get("md5"),
        sha1=raw.get("sha1"), size=size, min_size=min_size,
        mirrors=tuple(mirrors),
    )  # fmt: skip
