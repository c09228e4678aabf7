"""Fake PASCAL VOC and SBD trees in their real formats, written without the package's code.

Images are tiny; every label is kept in memory so tests can compare what the package
reads with what was written. Images are drawn from their labels (one colour per class),
so a test can also tell whether image and label still line up.
"""

from __future__ import annotations

import functools
import tarfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

SIZES = [(12, 16), (16, 12), (10, 14)]  # (height, width): unequal on purpose
VOID_COLOUR = (224, 224, 192)


@functools.cache
def voc_palette() -> tuple[int, ...]:
    """The VOC devkit colour map, written out again here on purpose."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return tuple(palette)


@functools.cache
def class_colours(num_classes: int = 21) -> np.ndarray:
    """Well separated colours per class (survive JPEG on 4 px blocks)."""
    rng = np.random.default_rng(1234)
    colours = [rng.integers(0, 256, 3)]
    while len(colours) < num_classes:
        c = rng.integers(0, 256, 3)
        if min(np.abs(c - o).sum() for o in colours) > 120:
            colours.append(c)
    return np.array(colours, dtype=np.uint8)


def make_label(rng: np.random.Generator, height: int, width: int, num_classes: int = 21):
    """Blocks of random classes with a void (255) band like VOC's on some block edges."""
    blocks = rng.integers(0, num_classes, ((height + 3) // 4, (width + 3) // 4))
    label = np.kron(blocks, np.ones((4, 4), dtype=np.int64))[:height, :width].astype(np.uint8)
    label[:, 0] = 255
    return label


def image_from_label(label: np.ndarray, num_classes: int = 21) -> np.ndarray:
    colours = np.concatenate([class_colours(num_classes), [VOID_COLOUR]]).astype(np.uint8)
    index = np.where(label == 255, num_classes, label).astype(np.int64)
    return colours[index]


def write_jpeg(path: Path, rgb: np.ndarray, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).convert(mode).save(path, "JPEG", quality=95)


def write_palette_png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    png = Image.fromarray(label, mode="P")
    png.putpalette(list(voc_palette()))
    png.save(path)


def write_sbd_mat(path: Path, label: np.ndarray) -> None:
    """A MATLAB struct as SBD ships it: GTcls with Segmentation, Boundaries, CategoriesPresent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    present = np.unique(label[label != 255]).astype(np.uint8).reshape(-1, 1)
    gtcls = {"Segmentation": label, "Boundaries": np.zeros((21, 1), object)}
    gtcls["CategoriesPresent"] = present
    scipy.io.savemat(path, {"GTcls": gtcls})


def write_list(path: Path, ids: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def fake_ids(start: int, count: int, year: int = 2008) -> list[str]:
    return [f"{year}_{i:06d}" for i in range(start, start + count)]


class FakeTree:
    """Labels written so far, by (source name, id)."""

    def __init__(self, data_dir: Path, seed: int = 0):
        self.data_dir = Path(data_dir)
        self.rng = np.random.default_rng(seed)
        self.labels: dict[tuple[str, str], np.ndarray] = {}

    def _pair(self, index: int, num_classes: int):
        h, w = SIZES[index % len(SIZES)]
        label = make_label(self.rng, h, w, num_classes)
        return label, image_from_label(label, num_classes)

    def voc(
        self,
        splits: dict[str, list[str]],
        rel: str = "VOCdevkit/VOC2012",
        name: str = "voc2012",
        num_classes: int = 21,
    ) -> Path:
        root = self.data_dir / rel
        ids = dict.fromkeys(i for members in splits.values() for i in members)
        for n, i in enumerate(ids):
            label, image = self._pair(n, num_classes)
            write_jpeg(root / "JPEGImages" / f"{i}.jpg", image)
            write_palette_png(root / "SegmentationClass" / f"{i}.png", label)
            self.labels[name, i] = label
        for split, members in splits.items():
            write_list(root / "ImageSets" / "Segmentation" / f"{split}.txt", members)
        return root

    def sbd(self, splits: dict[str, list[str]]) -> Path:
        root = self.data_dir / "benchmark_RELEASE" / "dataset"
        ids = dict.fromkeys(i for members in splits.values() for i in members)
        for n, i in enumerate(ids):
            label = make_label(self.rng, *SIZES[(n + 1) % len(SIZES)])
            label[label == 255] = 0  # SBD has no void band
            write_jpeg(root / "img" / f"{i}.jpg", image_from_label(label))
            write_sbd_mat(root / "cls" / f"{i}.mat", label)
            self.labels["sbd", i] = label
        for split, members in splits.items():
            write_list(root / f"{split}.txt", members)
        return root


def make_tar(archive: Path, source_dir: Path, members: Iterable[str]) -> Path:
    """Pack `members` (paths relative to `source_dir`) as the real archives do."""
    mode = "w:gz" if archive.name.endswith((".tgz", ".tar.gz")) else "w"
    with tarfile.open(archive, mode) as tf:
        for member in members:
            tf.add(source_dir / member, arcname=member)
    return archive


REPO = Path(__file__).resolve().parents[1]
SHIPPED_SEG11VALID = REPO / "fcn_lightning" / "resources" / "pascal" / "seg11valid.txt"


class PaperTree(FakeTree):
    """Every preset's sources, small, except seg11valid's 736 images (its real count).

    VOC2011 val = seg11valid + `leaked` (also in SBD train), as in the real datasets.
    """

    def __init__(self, data_dir: Path):
        super().__init__(data_dir, seed=1)
        self.seg11valid = SHIPPED_SEG11VALID.read_text().split()
        self.leaked = fake_ids(500, 3, 2011)
        self.sbd_train = fake_ids(100, 5) + self.leaked
        self.sbd_val = fake_ids(200, 2)
        self.voc12_train = fake_ids(300, 2) + self.sbd_train[:1]  # one with both labels
        self.voc12_val = fake_ids(400, 1) + self.sbd_val[:1]  # one SBD val image is VOC val
        self.voc({"val": self.seg11valid + self.leaked}, "VOCdevkit/VOC2011", "voc2011")
        self.voc({"train": self.voc12_train, "val": self.voc12_val})
        self.sbd({"train": self.sbd_train, "val": self.sbd_val})


_PAPER_TREES: dict[str, PaperTree] = {}


def paper_tree(tmp_path_factory) -> PaperTree:
    """One PaperTree per test process (it takes a few seconds to write); do not modify."""
    if "tree" not in _PAPER_TREES:
        _PAPER_TREES["tree"] = PaperTree(tmp_path_factory.mktemp("paper"))
    return _PAPER_TREES["tree"]


def compose_config(overrides=(), config_name: str = "verify_data"):
    """The repository's real Hydra config, composed as the entry points compose it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


NYUD_LISTS = REPO / "fcn_lightning" / "resources" / "nyud"


def nyud_reference_ids() -> dict[str, list[str]]:
    """The reference's NYUDv2 lists (train, val, test), read as plain text here."""
    return {n: (NYUD_LISTS / f"{n}.txt").read_text().split() for n in ("train", "val", "test")}


class NyudTree:
    """A fake NYUDv2 tree as nyud.tar.gz lays it out; what was written, by modality and ID:
    `color[id]` RGB uint8 H x W x 3, `depth[id]` uint16 H x W, `hha[id]` uint8 H x W x 3,
    `segmentation[id]` uint8 H x W (0 void, 1..40)."""

    def __init__(self, root: Path):
        self.root = root
        self.color: dict[str, np.ndarray] = {}
        self.depth: dict[str, np.ndarray] = {}
        self.hha: dict[str, np.ndarray] = {}
        self.segmentation: dict[str, np.ndarray] = {}

    def path(self, modality: str, i: str) -> Path:
        folders = {"color": "data/images", "depth": "data/depth", "hha": "data/hha"}
        if modality == "label":
            return self.root / "segmentation" / f"img_{i}.mat"
        return self.root / folders[modality] / f"img_{i}.png"


def write_nyud_tree(
    data_dir: Path,
    ids: dict[str, list[str]] | None = None,
    *,
    size: tuple[int, int] = (6, 8),
    seed: int = 0,
    modalities: Iterable[str] = ("color", "depth", "hha"),
    lists: bool = True,
) -> NyudTree:
    """Write `data_dir/nyud/` in the real formats: RGB PNGs, 16-bit greyscale depth PNGs
    (raw 500..9999, one 0 = missing pixel in every image whose ID ends in 7), HHA RGB
    PNGs and MATLAB files with the key `segmentation` (uint16, 0 void, 1..40), for the IDs
    of `ids` (list name -> IDs; default the reference's lists, 1449 images); `lists`:
    also write the split lists."""
    ids = nyud_reference_ids() if ids is None else ids
    tree = NyudTree(Path(data_dir) / "nyud")
    rng = np.random.default_rng(seed)
    height, width = size
    modalities = tuple(modalities)
    for i in dict.fromkeys(x for members in ids.values() for x in members):
        segmentation = rng.integers(0, 41, (height, width)).astype(np.uint8)
        color = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
        depth = rng.integers(500, 10000, (height, width)).astype(np.uint16)
        if i.endswith("7"):
            depth[0, 0] = 0
        hha = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
        tree.color[i], tree.depth[i], tree.hha[i] = color, depth, hha
        tree.segmentation[i] = segmentation
        for modality, array in (("color", color), ("depth", depth), ("hha", hha)):
            if modality in modalities:
                path = tree.path(modality, i)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path)
        label = tree.path("label", i)
        label.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(label, {"segmentation": segmentation.astype(np.uint16)})
    if lists:
        for name, members in ids.items():
            write_list(tree.root / f"{name}.txt", members)
    return tree


_NYUD_TREES: dict[str, NyudTree] = {}


def nyud_tree(tmp_path_factory) -> NyudTree:
    """One full-size-lists NyudTree per test process (1449 tiny images); do not modify."""
    if "tree" not in _NYUD_TREES:
        _NYUD_TREES["tree"] = write_nyud_tree(tmp_path_factory.mktemp("nyud_data"))
    return _NYUD_TREES["tree"]


# -- PASCAL-Context ---------------------------------------------------------------------

SHIPPED = REPO / "fcn_lightning" / "resources"
CONTEXT_RENAMED = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}
# Task names written with a space in one list or the other: the reference removes spaces.
CONTEXT_SPACED_FULL = {"pottedplant": "potted plant", "tvmonitor": "tv monitor"}
CONTEXT_SPACED_TASK = {"bedcloth": "bed cloth"}
# Near misses in the full list that must stay background.
CONTEXT_DECOYS = ["dining table", "clothes tree", "bedclothes rack", "sky light"]


def context_task_names() -> list[str]:
    """The 59 names of the task, in 59_labels.txt order (the shipped list minus background)."""
    return (SHIPPED / "pascal_context" / "classes.txt").read_text().split()[1:]


class ContextTree:
    """VOC2010 images and PASCAL-Context annotations in their real formats.

    `raw[id]`: the LabelMap written (uint16 full-list ids); `task_of_id`: full-list id ->
    task class (1..59) by construction, every other id 0; `full_names`: labels.txt's names.
    """

    def __init__(self, data_dir: Path, splits: dict[str, list[str]], size=(12, 16), seed=0):
        self.data_dir = Path(data_dir)
        self.voc = self.data_dir / "VOCdevkit" / "VOC2010"
        self.context = self.data_dir / "pascal-context"
        rng = np.random.default_rng(seed)
        task = context_task_names()
        full = [CONTEXT_SPACED_FULL.get(n, CONTEXT_RENAMED.get(n, n)) for n in task]
        full += CONTEXT_DECOYS
        full += [f"thing {i:03d}" for i in range(459 - len(full))]
        order = rng.permutation(len(full))
        self.full_names = [full[i] for i in order]
        position = {name: p for p, name in enumerate(self.full_names)}
        self.task_of_id = {}
        for k, name in enumerate(task, 1):
            written = CONTEXT_SPACED_FULL.get(name, CONTEXT_RENAMED.get(name, name))
            self.task_of_id[position[written] + 1] = k
        (self.context / "trainval").mkdir(parents=True, exist_ok=True)
        (self.context / "labels.txt").write_text(
            "".join(f"{i}: {n}\n" for i, n in enumerate(self.full_names, 1))
        )
        (self.context / "59_labels.txt").write_text(
            "".join(f"{k}: {CONTEXT_SPACED_TASK.get(n, n)}\n" for k, n in enumerate(task, 1))
        )
        task_ids = np.array(sorted(self.task_of_id), dtype=np.int64)
        self.raw: dict[str, np.ndarray] = {}
        ids = dict.fromkeys(i for members in splits.values() for i in members)
        for n, i in enumerate(ids):
            h, w = size if n % 2 == 0 else size[::-1]
            blocks = np.where(
                rng.random(((h + 3) // 4, (w + 3) // 4)) < 0.6,
                rng.choice(task_ids, ((h + 3) // 4, (w + 3) // 4)),
                rng.integers(0, 460, ((h + 3) // 4, (w + 3) // 4)),
            )
            raw = np.kron(blocks, np.ones((4, 4), np.int64))[:h, :w].astype(np.uint16)
            raw[0, :] = 0  # unlabelled pixels: background too
            self.raw[i] = raw
            scipy.io.savemat(self.context / "trainval" / f"{i}.mat", {"LabelMap": raw})
            write_jpeg(self.voc / "JPEGImages" / f"{i}.jpg", image_from_label(raw % 21))
        for split, members in splits.items():
            write_list(self.voc / "ImageSets" / "Main" / f"{split}.txt", members)
        # Main also holds the per-class lists; they are no splits of the task.
        write_list(self.voc / "ImageSets" / "Main" / "aeroplane_train.txt", ["x -1"])

    def expected(self, image_id: str) -> np.ndarray:
        """The task label by construction (not by the reference's rules)."""
        lookup = np.zeros(460, np.uint8)
        for full_id, k in self.task_of_id.items():
            lookup[full_id] = k
        return lookup[self.raw[image_id]]


def write_pascal_context_tree(data_dir, ids_train, ids_val, size=(12, 16), seed=0) -> ContextTree:
    """A PASCAL-Context tree (VOC2010 + annotations) with Main/{train,val,trainval}.txt."""
    splits = {"train": list(ids_train), "val": list(ids_val)}
    splits["trainval"] = splits["train"] + splits["val"]
    return ContextTree(Path(data_dir), splits, size=size, seed=seed)


# -- SIFT Flow --------------------------------------------------------------------------

SIFTFLOW_FOLDER = "spatial_envelope_256x256_static_8outdoorcategories"


def siftflow_list(name: str) -> list[str]:
    return (SHIPPED / "siftflow" / f"{name}.txt").read_text().split()


class SiftFlowTree:
    """SiftFlowDataset/ in its real format: `sem[id]`, `geo[id]` the `S` arrays written
    (semantic 0..33, geometric -1..3, MATLAB doubles as the dataset stores them)."""

    def __init__(self, data_dir: Path, ids: Iterable[str], size=(8, 8), seed=0):
        self.root = Path(data_dir) / "SiftFlowDataset"
        rng = np.random.default_rng(seed)
        self.sem: dict[str, np.ndarray] = {}
        self.geo: dict[str, np.ndarray] = {}
        for kind in ("Images", "SemanticLabels", "GeoLabels"):
            (self.root / kind / SIFTFLOW_FOLDER).mkdir(parents=True, exist_ok=True)
        h, w = size
        for i in ids:
            sem = np.kron(rng.integers(0, 34, (h // 4, w // 4)), np.ones((4, 4))).astype(float)
            geo = np.kron(rng.integers(-1, 4, (h // 4, w // 4)), np.ones((4, 4))).astype(float)
            self.write(i, sem, geo)
            image = image_from_label((sem % 21).astype(np.uint8))
            write_jpeg(self.root / "Images" / SIFTFLOW_FOLDER / f"{i}.jpg", image)

    def write(self, image_id: str, sem: np.ndarray, geo: np.ndarray) -> None:
        self.sem[image_id], self.geo[image_id] = sem, geo
        scipy.io.savemat(self.label_path("SemanticLabels", image_id), {"S": sem})
        scipy.io.savemat(self.label_path("GeoLabels", image_id), {"S": geo})

    def label_path(self, kind: str, image_id: str) -> Path:
        return self.root / kind / SIFTFLOW_FOLDER / f"{image_id}.mat"


def write_siftflow_tree(data_dir, ids=None, size=(8, 8), seed=0) -> SiftFlowTree:
    """A SIFT Flow tree holding `ids` (default: every image of the shipped lists)."""
    if ids is None:
        ids = siftflow_list("trainval") + siftflow_list("test")
    return SiftFlowTree(Path(data_dir), ids, size=size, seed=seed)
