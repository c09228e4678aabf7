"""NYUDv2 as the reference prepared it: where its files are, its splits, its modalities.

The reference's archive (nyud.tar.gz, http://dl.caffe.berkeleyvision.org/nyud.tar.gz) is
read from `paths.data_dir/nyud/`, laid out as the reference's data layer reads it
(nyud_layers.py):

    nyud/data/images/img_<id>.png    colour, RGB
    nyud/data/depth/img_<id>.png     depth, 16-bit greyscale (millimetres)
    nyud/data/hha/img_<id>.png       HHA (Gupta et al.), an RGB PNG; or made from depth by
                                     `python -m fcn_lightning.hha`
    nyud/segmentation/img_<id>.mat   key `segmentation`: 0 void, 1..40 the classes
    nyud/{train,val,test,trainval}.txt   optional: the split lists

The split lists ship with the package (resources/nyud/: train 381, val 414, test 654, the
reference's; trainval = train + val, 795), so a tree without them is complete. A list the
tree does have must name the same images, or the split would not be the paper's.

Only the modalities `data.input` reads must be there (`select_input`): training on colour
needs no HHA.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fcn_lightning.data.splits import Sample, read_id_list, resource_path
from fcn_lightning.errors import ConfigError, DataError

LISTS = ("train", "val", "test", "trainval")
MODALITY_DIRS = {"color": "data/images", "depth": "data/depth", "hha": "data/hha"}
# data.input -> the files it reads, in the order their channels are concatenated.
INPUT_MODALITIES: dict[str, tuple[str, ...]] = {
    "color": ("color",),
    "hha": ("hha",),
    "depth": ("depth",),
    "color_depth": ("color", "depth"),
    "color_hha": ("color", "hha"),
}
LABEL_DIR = "segmentation"


def shipped_ids(list_name: str) -> list[str]:
    """The reference's IDs of NYUDv2 list `list_name` (trainval: train then val)."""
    if list_name == "trainval":
        return shipped_ids("train") + shipped_ids("val")
    return read_id_list(resource_path("nyud", f"{list_name}.txt"))


def nyud_samples(root: Path, ids: Sequence[str]) -> list[Sample]:
    """Every modality's file of each ID: `image` the colour, `extra` depth then HHA."""
    samples = []
    for i in ids:
        name = f"img_{i}"
        files = {m: root / folder / f"{name}.png" for m, folder in MODALITY_DIRS.items()}
        extra = (("depth", files["depth"]), ("hha", files["hha"]))
        samples.append(Sample(i, files["color"], root / LABEL_DIR / f"{name}.mat", extra))
    return samples


def nyud_split(root: Path, list_name: str, *, repeats_ok: bool = False) -> list[Sample]:
    """The samples of split `nyud_<list_name>` under the NYUDv2 folder `root`."""
    check_list_name(list_name)
    parts = ("train", "val") if list_name == "trainval" else ()
    for name in (*parts, list_name):  # trainval's parts too: it is composed of them
        check_tree_list(root / f"{name}.txt", shipped_ids(name), repeats_ok=repeats_ok)
    return nyud_samples(root, shipped_ids(list_name))


def check_list_name(list_name: str) -> None:
    if list_name not in LISTS:
        raise ConfigError(
            f"unknown split nyud_{list_name}: NYUDv2's splits are "
            f"{', '.join(f'nyud_{n}' for n in LISTS)}"
        )


def check_tree_list(path: Path, ids: list[str], *, repeats_ok: bool = False) -> None:
    """Refuse a split list in the tree that names other images than the reference's."""
    if not path.is_file():
        return
    theirs = read_id_list(path, repeats_ok=repeats_ok)
    shipped = set(ids)
    if set(theirs) != shipped:
        extra = sorted(set(theirs) - shipped)
        lacking = sorted(shipped - set(theirs))
        raise DataError(
            f"split list {path} names {len(set(theirs))} images, the reference's "
            f"{len(ids)}: {len(extra)} not in it (e.g. {extra[:3]}), {len(lacking)} of it "
            f"missing (e.g. {lacking[:3]}); the split would not be the paper's: restore the "
            "list from nyud.tar.gz, or delete it to use the shipped one"
        )


def input_modalities(input_name: str) -> tuple[str, ...]:
    """The NYUDv2 files that `data.input` reads, in channel order."""
    try:
        return INPUT_MODALITIES[input_name]
    except KeyError:
        raise ConfigError(
            f"data.input={input_name!r}: NYUDv2 feeds one of {list(INPUT_MODALITIES)}"
        ) from None


def present_modalities(samples: Sequence[Sample]) -> tuple[str, ...]:
    """The modalities whose folder exists for `samples` (NYUDv2 samples from the tree)."""
    if not samples:
        return ()
    paths = _paths(samples[0])
    return tuple(m for m in MODALITY_DIRS if paths[m].parent.is_dir())


def select_input(
    samples: Sequence[Sample], input_name: str, *, modalities: Sequence[str] | None = None
) -> list[Sample]:
    """`samples` with only the files `input_name` reads (`modalities`: these instead):
    `image` the first modality's file, `extra` the others'. A modality whose folder is
    missing raises a DataError naming the folder; input `rgb` leaves samples as they are."""
    if input_name == "rgb":
        return list(samples)
    wanted = tuple(modalities) if modalities is not None else input_modalities(input_name)
    if not samples:
        return []
    first = _paths(samples[0])
    for modality in wanted:
        folder = first[modality].parent
        if not folder.is_dir():
            raise DataError(missing_modality(folder, modality, input_name))
    selected = []
    for sample in samples:
        paths = _paths(sample)
        extra = tuple((m, paths[m]) for m in wanted[1:])
        selected.append(Sample(sample.id, paths[wanted[0]], sample.label, extra))
    return selected


def missing_modality(folder: Path, modality: str, input_name: str) -> str:
    how = (
        "extract it from nyud.tar.gz, or make it from data/depth with "
        "`python -m fcn_lightning.hha` (docs/data.md)"
        if modality == "hha"
        else "extract it from nyud.tar.gz (http://dl.caffe.berkeleyvision.org/nyud.tar.gz)"
    )
    return f"{folder} is missing: data.input={input_name} reads its {modality} images: {how}"


def _paths(sample: Sample) -> dict[str, Path]:
    """Modality -> file of a NYUDv2 sample as `nyud_samples` made it."""
    return {"color": sample.image, **dict(sample.extra)}


def nyud_near_miss(data_dir: Path) -> str:
    """A hint when NYUDv2 is under `data_dir` in another place than `data_dir/nyud/`."""
    try:
        if (data_dir / LABEL_DIR).is_dir() or (data_dir / "data" / "images").is_dir():
            return (
                f"; {data_dir} holds NYUDv2's own folders: set paths.data_dir to the folder "
                "that holds nyud/, or move them into a folder nyud/ there"
            )
        if (data_dir / "data" / "nyud" / LABEL_DIR).is_dir():  # the reference repo's place
            return f"; found {data_dir / 'data' / 'nyud'}: set paths.data_dir={data_dir / 'data'}"
        for child in sorted(p for p in data_dir.glob("*") if p.is_dir()):
            if (child / LABEL_DIR).is_dir() and (child / "data").is_dir():
                return f"; found {child}: rename it to {data_dir / 'nyud'}"
    except OSError:
        return ""
    return ""
