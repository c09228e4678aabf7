"""Where each dataset lives under `paths.data_dir`, and the archive that provides it.

The archives are used as they come: extracting them into `data_dir` gives the layout
below, so a user who downloaded them by hand only has to unpack them there.

    data_dir/VOCdevkit/VOC2012/            VOCtrainval_11-May-2012.tar
    data_dir/VOCdevkit/VOC2011/            (optional; else VOC2011 is read from VOC2012)
    data_dir/benchmark_RELEASE/dataset/    benchmark.tgz (SBD)
    data_dir/synthetic/                    written by fcn_lightning.data.synthetic
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fcn_lightning.download import download_and_extract, extraction_unfinished
from fcn_lightning.errors import ConfigError, DataError

DOWNLOADS = "downloads"


@dataclass(frozen=True)
class Archive:
    filename: str
    url: str
    md5: str
    size: str  # for messages: a user fetching it by hand wants to know what to expect
    mirrors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    name: str
    title: str
    kind: str  # "voc" (JPEG + palette PNG) or "sbd" (JPEG + MATLAB .mat)
    candidates: tuple[str, ...]  # directories under data_dir; the first that exists wins
    archive: Archive | None  # None: not downloadable (generated instead)


VOC2012_ARCHIVE = Archive(
    filename="VOCtrainval_11-May-2012.tar",
    url="https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    md5="6cd6e144f989b92b3379bac3b3de84fd",
    size="1.9 GB",
    mirrors=(
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        "https://pjreddie.com/media/files/VOCtrainval_11-May-2012.tar",
    ),
)
SBD_ARCHIVE = Archive(
    filename="benchmark.tgz",
    url="https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
    md5="82b4d87ceb2ed10f6038a1cba92111cb",
    size="1.4 GB",
)

SOURCES: dict[str, Source] = {
    "voc2012": Source("voc2012", "PASCAL VOC2012", "voc", ("VOCdevkit/VOC2012",), VOC2012_ARCHIVE),
    # VOC2011 is a subset of VOC2012, so a 2012 tree serves when no 2011 tree is there;
    # "TrainVal/..." is where the 2011 archive itself unpacks.
    "voc2011": Source(
        "voc2011",
        "PASCAL VOC2011",
        "voc",
        ("VOCdevkit/VOC2011", "TrainVal/VOCdevkit/VOC2011", "VOCdevkit/VOC2012"),
        VOC2012_ARCHIVE,
    ),
    "sbd": Source("sbd", "SBD", "sbd", ("benchmark_RELEASE/dataset",), SBD_ARCHIVE),
    "synthetic": Source("synthetic", "synthetic dataset", "voc", ("synthetic",), None),
}


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset source {name!r}: choose one of {sorted(SOURCES)}"
        ) from None


class Roots:
    """The directory of each source under one `data_dir`, found on demand."""

    def __init__(self, data_dir: Path | str):
        self.data_dir = Path(data_dir).expanduser()

    def find(self, name: str) -> Path | None:
        """The source's directory, or None when it is absent or only partly extracted."""
        source = get_source(name)
        if source.archive and extraction_unfinished(source.archive.filename, self.data_dir):
            return None
        for candidate in source.candidates:
            if (self.data_dir / candidate).is_dir():
                return self.data_dir / candidate
        return None

    def require(self, name: str) -> Path:
        root = self.find(name)
        if root is None:
            raise DataError(missing_message(get_source(name), self.data_dir))
        return root


def near_miss(source: Source, data_dir: Path) -> str:
    """A hint when the dataset is there under another name, or data_dir points into it."""
    for candidate in source.candidates:
        parts = Path(candidate).parts
        if data_dir.parts[-len(parts) :] == parts or data_dir.name == parts[0]:
            return (
                f"; paths.data_dir points into the dataset: set it to the folder that holds "
                f"{parts[0]}/"
            )
        folder = data_dir
        for part in parts:
            if (folder / part).is_dir():
                folder = folder / part
                continue
            alike = [p for p in folder.glob("*") if p.is_dir() and p.name.lower() == part.lower()]
            if alike:
                return f"; found {alike[0]}: rename it to {folder / part}"
            break
    return ""


def missing_message(source: Source, data_dir: Path) -> str:
    where = data_dir / source.candidates[0]
    hint = near_miss(source, data_dir)
    if source.archive is None:
        return (
            f"{source.title} not found at {where}{hint}: set data.generate=true, or run "
            f"`python -m fcn_lightning.data.synthetic --root {where}`"
        )
    archive = source.archive
    if extraction_unfinished(archive.filename, data_dir):
        return (
            f"extracting {archive.filename} into {data_dir} was interrupted: set "
            f"data.download=true to extract it again"
        )
    return (
        f"{source.title} not found at {where} (data_dir={data_dir}){hint}: set data.download=true, "
        f"or download {archive.filename} ({archive.size}, md5 {archive.md5}) from "
        f"{archive.url} and extract it into {data_dir}"
    )


def ensure_sources(names: Sequence[str], roots: Roots, *, mirrors: Sequence[str] = ()) -> None:
    """Download and extract every archive a missing source of `names` comes from.

    `mirrors` are base URLs tried before the archive's own hosts: a user names them
    because the official servers are slow or down.
    """
    done: set[str] = set()
    for name in names:
        source = get_source(name)
        if roots.find(name) is not None or source.archive is None:
            continue
        archive = source.archive
        if archive.filename in done:
            continue
        user = [f"{base.rstrip('/')}/{archive.filename}" for base in mirrors]
        urls = [*user, archive.url, *archive.mirrors]
        download_and_extract(
            urls[0],
            roots.data_dir / DOWNLOADS / archive.filename,
            roots.data_dir,
            md5=archive.md5,
            mirrors=urls[1:],
            desc=archive.filename,
        )
        done.add(archive.filename)
