"""Where each dataset lives under `paths.data_dir`, and the archive that provides it.

The archives are used as they come: extracting them into `data_dir` gives the layout
below, so a user who downloaded them by hand only has to unpack them there.

    data_dir/VOCdevkit/VOC2012/            VOCtrainval_11-May-2012.tar
    data_dir/VOCdevkit/VOC2011/            (optional; else VOC2011 is read from VOC2012)
    data_dir/benchmark_RELEASE/dataset/    benchmark.tgz (SBD)
    data_dir/VOCdevkit/VOC2010/            VOCtrainval_03-May-2010.tar (PASCAL-Context's images)
    data_dir/pascal-context/               trainval.tar.gz extracted there (trainval/*.mat,
                                           labels.txt), plus 59_labels.txt beside them
    data_dir/SiftFlowDataset/              SiftFlowDataset.zip
    data_dir/synthetic/                    written by fcn_lightning.data.synthetic
    data_dir/nyud/                         nyud.tar.gz (NYUDv2 as the reference prepared it:
                                           data/images, data/depth, data/hha, segmentation;
                                           fcn_lightning.data.nyud)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fcn_lightning.download import download_and_extract, download_file, extraction_unfinished
from fcn_lightning.errors import ConfigError, DataError, DownloadError

DOWNLOADS = "downloads"


@dataclass(frozen=True)
class Archive:
    filename: str
    url: str
    md5: str  # "" when no stable checksum is published: the file is then not checked
    size: str  # for messages: a user fetching it by hand wants to know what to expect ("": unknown)
    mirrors: tuple[str, ...] = ()
    into: str = ""  # the folder under data_dir it is extracted (or, a plain file, put) into
    extract: bool = True  # False: a plain file (a class list), kept as it is in `into`


@dataclass(frozen=True)
class Source:
    name: str
    title: str
    kind: str  # "voc" (JPEG + palette PNG), "sbd", "context", "siftflow" (JPEG + .mat), "nyud"
    candidates: tuple[str, ...]  # directories under data_dir; the first that exists wins
    archive: Archive | None  # None: not downloadable (generated instead)
    inputs: tuple[str, ...] = ("rgb",)  # the data.input values it can feed (data/inputs.py)
    needs: tuple[str, ...] = ()  # other sources its splits read (Context: VOC2010's images)
    extras: tuple[Archive, ...] = ()  # further files fetched with the archive
    contents: tuple[str, ...] = ()  # what its folder holds, to spot it unpacked elsewhere


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

VOC2010_ARCHIVE = Archive(
    filename="VOCtrainval_03-May-2010.tar",
    url="http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
    md5="da459979d0c395079b5c75ee67908abb",
    size="1.3 GB",
)
CONTEXT_HOME = "https://cs.stanford.edu/~roozbeh/pascal-context"
# The Context site publishes no checksums: these files are used unchecked.
CONTEXT_ARCHIVE = Archive(
    filename="trainval.tar.gz",
    url=f"{CONTEXT_HOME}/trainval.tar.gz",
    md5="",
    size="",
    into="pascal-context",
)
CONTEXT_59_LABELS = Archive(
    filename="59_labels.txt",
    url=f"{CONTEXT_HOME}/59_labels.txt",
    md5="",
    size="",
    into="pascal-context",
    extract=False,
)
SIFTFLOW_ARCHIVE = Archive(
    filename="SiftFlowDataset.zip",
    url="http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip",
    md5="",
    size="",
)
# The reference's prepared NYUDv2; its host publishes no checksum.
NYUD_ARCHIVE = Archive(
    filename="nyud.tar.gz",
    url="http://dl.caffe.berkeleyvision.org/nyud.tar.gz",
    md5="",
    size="",
)
NYUD_INPUTS = ("color", "hha", "depth", "color_depth", "color_hha")

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
    "nyud": Source("nyud", "NYUDv2", "nyud", ("nyud",), NYUD_ARCHIVE, NYUD_INPUTS),
    "voc2010": Source("voc2010", "PASCAL VOC2010", "voc", ("VOCdevkit/VOC2010",), VOC2010_ARCHIVE),
    "pascal_context": Source(
        "pascal_context",
        "PASCAL-Context annotations",
        "context",
        ("pascal-context",),
        CONTEXT_ARCHIVE,
        needs=("voc2010",),
        extras=(CONTEXT_59_LABELS,),
        contents=("trainval", "labels.txt", "59_labels.txt"),
    ),
    "siftflow": Source(
        "siftflow",
        "SIFT Flow",
        "siftflow",
        ("SiftFlowDataset",),
        SIFTFLOW_ARCHIVE,
        contents=("Images", "SemanticLabels", "GeoLabels"),
    ),
}


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset source {name!r}: choose one of {sorted(SOURCES)}"
        ) from None


DATA_DIR_KEY = "paths.data_dir"


def data_dir_problem(data_dir: Path | str | None) -> str | None:
    """What makes `data_dir` unusable as the folder of the datasets, or None.

    A folder that does not exist yet is no problem here: each missing dataset says how to
    get it, and generating or downloading creates the folder.
    """
    if data_dir is None or not str(data_dir).strip():
        return (
            f"{DATA_DIR_KEY} is empty: set it to the folder that holds the datasets, e.g. "
            f"{DATA_DIR_KEY}=data or export FCN_DATA_DIR=/datasets (an empty one would read "
            "and write the current folder)"
        )
    path = Path(data_dir).expanduser()
    try:
        os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            return (
                f"{DATA_DIR_KEY}={path} is a loop of symbolic links ({_link_chain(path)}): "
                "point it at a real folder, or fix the link"
            )
        if err.errno == errno.ENOTDIR:
            blocking = next((p for p in reversed(path.parents) if p.is_file()), path.parent)
            return (
                f"{DATA_DIR_KEY}={path}: {blocking} is a file, not a folder; point "
                f"{DATA_DIR_KEY} at the folder that holds the datasets"
            )
        if err.errno == errno.EACCES:
            return _unreadable(path)
        return f"{DATA_DIR_KEY}={path} cannot be read ({err.strerror}); check the path"
    if not path.is_dir():
        return (
            f"{DATA_DIR_KEY}={path} is a file, not a folder: point {DATA_DIR_KEY} at the "
            "folder that holds the datasets"
        )
    if not os.access(path, os.R_OK | os.X_OK):
        return _unreadable(path)
    return None


def _unreadable(path: Path) -> str:
    return (
        f"{DATA_DIR_KEY}={path} cannot be read (permission denied): give this user read "
        f"access (chmod u+rx {path}), or point {DATA_DIR_KEY} at a readable folder"
    )


def _link_chain(path: Path) -> str:
    chain, seen = [str(path)], {str(path)}
    current = path
    while current.is_symlink() and len(chain) < 4:
        current = current.parent / os.readlink(current)
        chain.append(str(current))
        if str(current) in seen:
            break
        seen.add(str(current))
    return " -> ".join(chain)


class Roots:
    """The directory of each source under one `data_dir`, found on demand."""

    def __init__(self, data_dir: Path | str):
        self.given = data_dir
        self.data_dir = Path(data_dir).expanduser()

    def find(self, name: str) -> Path | None:
        """The source's directory, or None when it is absent or only partly extracted."""
        source = get_source(name)
        try:
            archive = source.archive
            if archive and extraction_unfinished(
                archive.filename, extract_dir(archive, self.data_dir)
            ):
                return None
            for candidate in source.candidates:
                if (self.data_dir / candidate).is_dir():
                    return self.data_dir / candidate
        except OSError:  # an unreadable data_dir: `problem` says so
            return None
        return None

    def problem(self, name: str) -> str | None:
        """Why source `name` cannot be read here (the first thing to fix), or None."""
        if self.find(name) is not None:
            return None
        return missing_message(get_source(name), self.data_dir, given=self.given)

    def require(self, name: str) -> Path:
        problem = self.problem(name)
        if problem is not None:
            raise DataError(problem)
        return self.find(name)


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
    # Unpacked beside the other folders, or into the images' tree (as some guides do).
    places = [data_dir, *(data_dir / c for n in source.needs for c in SOURCES[n].candidates)]
    for place in places:
        beside = [name for name in source.contents if (place / name).exists()]
        if beside:
            where = data_dir / source.candidates[0]
            them = "them" if len(beside) > 1 else "it"
            return f"; found {', '.join(beside)} in {place}: move {them} into {where}"
    return ""


def archive_facts(archive: Archive) -> str:
    """`(1.3 GB, md5 ...)` for a message; only the facts that are known."""
    facts = [archive.size] if archive.size else []
    facts += [f"md5 {archive.md5}" if archive.md5 else "no published checksum"]
    return f" ({', '.join(facts)})" if facts else ""


def extract_dir(archive: Archive, data_dir: Path) -> Path:
    """Where `archive` is extracted: data_dir, or the folder under it that it belongs in."""
    return Path(data_dir) / archive.into if archive.into else Path(data_dir)


def missing_message(source: Source, data_dir: Path, *, given: Path | str | None = None) -> str:
    """Why `source` is not found under `data_dir` (`given`: the configured value, when it
    was empty), and what to do."""
    unusable = data_dir_problem(data_dir if given is None else given)
    if unusable is not None:
        return unusable
    where = data_dir / source.candidates[0]
    hint = near_miss(source, data_dir)
    if source.archive is None:
        return (
            f"{source.title} not found at {where}{hint}: set data.generate=true, or run "
            f"`python -m fcn_lightning.data.synthetic --root {where}`"
        )
    archive = source.archive
    into = extract_dir(archive, data_dir)
    if source.kind == "nyud":
        from fcn_lightning.data.nyud import nyud_near_miss

        hint = hint or nyud_near_miss(data_dir)
    if extraction_unfinished(archive.filename, into):
        return (
            f"extracting {archive.filename} into {into} was interrupted: set "
            f"data.download=true to extract it again"
        )
    extras = "".join(
        f", and {extra.filename}{archive_facts(extra)} from {extra.url} into "
        f"{extract_dir(extra, data_dir)}"
        for extra in source.extras
    )
    return (
        f"{source.title} not found at {where} (data_dir={data_dir}){hint}: set data.download=true, "
        f"or download {archive.filename}{archive_facts(archive)} from "
        f"{archive.url} and extract it into {into}{extras}"
    )


def ensure_sources(names: Sequence[str], roots: Roots, *, mirrors: Sequence[str] = ()) -> None:
    """Download and extract every archive a missing source of `names` comes from.

    `mirrors` are base URLs tried before the archive's own hosts: a user names them
    because the official servers are slow or down.
    """
    done: set[str] = set()
    for name in names:
        source = get_source(name)
        if source.archive is None:
            continue
        wanted = [] if roots.find(name) is not None else [source.archive]
        wanted += [e for e in source.extras if not archive_path(e, roots.data_dir).is_file()]
        for archive in wanted:
            if archive.filename not in done:
                _fetch_archive(archive, roots.data_dir, mirrors)
                done.add(archive.filename)


def _fetch_archive(archive: Archive, data_dir: Path, mirrors: Sequence[str]) -> None:
    user = [f"{base.rstrip('/')}/{archive.filename}" for base in mirrors]
    urls = [*user, archive.url, *archive.mirrors]
    into = extract_dir(archive, data_dir)
    fetch = download_and_extract if archive.extract else _download_only
    try:
        fetch(
            urls[0],
            archive_path(archive, data_dir),
            into,
            md5=archive.md5 or None,
            mirrors=urls[1:],
            desc=f"{archive.filename} ({archive.size})" if archive.size else archive.filename,
            official=archive.url,
        )
    except DownloadError as err:
        if archive.extract and not archive_path(archive, data_dir).is_file():  # fetch failed
            raise DownloadError(
                f"{err} (a run with data.download=true then extracts it into "
                f"{into}; or extract it there yourself)"
            ) from None
        raise


def _download_only(url: str, dest: Path, into: Path, **kwargs) -> Path:
    """A plain file (a class list): fetched straight to where it is read from."""
    return download_file(url, dest, **kwargs)


def archive_path(archive: Archive, data_dir: Path) -> Path:
    """Where a download keeps `archive` (and where a copy fetched by hand is used from);
    a plain file (extract=False) is kept where it is read, in its `into` folder."""
    if not archive.extract:
        return extract_dir(archive, data_dir) / archive.filename
    return Path(data_dir) / DOWNLOADS / archive.filename
