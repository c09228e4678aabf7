"""The embedded default dataset: synthetic scenes written as a PASCAL VOC tree from a seed.

Every test and the CPU quick start need segmentation data without a download, and it
should be data on which both halves of FCN's argument show: deep, coarse layers know
*what*, shallow, fine layers know *where*. Seven classes (`SYNTHETIC_CLASSES`): three
shapes, each in one of two scenes.

=====  ================  ==================================================================
index  class             what it looks like (sizes in pixels)
=====  ================  ==================================================================
0      background        smooth colour fields, soft-edged blobs in the objects' colours,
                         and the ground: a band 10-14 tall along the bottom, striped or
                         checkered, which names the scene
1, 4   disc@striped,     solid ellipse; two thirds small (12-18 across), the rest 20-44
       disc@checkered
2, 5   cross@...         plus sign 20-36 long, arms 9-13 wide
3, 6   wire@...          curved stroke 9-13 wide across at least half the area above
                         the ground
=====  ================  ==================================================================

*What*: an object's class is its shape *and* its scene, and the scene shows only in the
ground band, usually tens of pixels from the object: a net has to see far to name it, as
pool3 alone (receptive field 44 px) cannot and fc7 (the whole image) can. All objects paint
with one nine-colour palette and the background has blobs in those colours, so a pixel's
colour does not decide its class either. *Where*: strokes and small discs vanish at
FCN-32s's output stride and are resolved at FCN-8s's. Each image holds 3-6 objects of one
scene, later ones occluding earlier ones.

Images come in four sizes (`image_size` or three quarters of it, per side) so batching
meets unequal sizes; object sizes do not scale with `image_size`. Boundary pixels are 255
(void), as in VOC (see `synthetic_shapes`).

Layout as VOC: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG whose
pixel values are class indices), ``ImageSets/Segmentation/{train,val,trainval}.txt``, plus
``classes.txt`` and ``manifest.json`` (seed, generator version, counts, sizes, digest).

A tree is written under a hidden sibling directory and renamed into place after its
manifest, so an interrupted run never leaves a tree that looks complete. One seed gives
byte-identical files (given the same Pillow, libjpeg and zlib). Each image has its own
random stream, so a larger `num_train` extends a split without changing its first images.

    python -m fcn_lightning.data.synthetic --root data/synthetic
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fcn_lightning.data.synthetic_shapes import CLASSES, SCENES, SHAPES, Scene, render_scene
from fcn_lightning.errors import DataError, FCNError
from fcn_lightning.visualize import palette_image

log = logging.getLogger(__name__)

SYNTHETIC_CLASSES: tuple[str, ...] = CLASSES
# Bump whenever the files a seed produces change, so stale trees are refused, not reused.
GENERATOR_VERSION = 2
GENERATOR = "fcn_lightning.data.synthetic"
MANIFEST = "manifest.json"
SPLITS = ("train", "val")
_SPLIT_STREAM = {"train": 0, "val": 1}
JPEG_OPTIONS = {"quality": 90, "subsampling": 2, "optimize": False, "progressive": False}
OBJECTS_PER_IMAGE = (3, 6)
DEFAULT_NUM_TRAIN = 1000
DEFAULT_NUM_VAL = 100
DEFAULT_IMAGE_SIZE = 96
MIN_IMAGE_SIZE = 48  # the largest objects and the ground band need about this much


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything the files depend on; equal specs give identical trees."""

    seed: int = 0
    num_train: int = DEFAULT_NUM_TRAIN
    num_val: int = DEFAULT_NUM_VAL
    image_size: int = DEFAULT_IMAGE_SIZE

    def __post_init__(self) -> None:
        for name in ("seed", "num_train", "num_val", "image_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise DataError(f"synthetic data: {name}={value!r} must be an integer >= 0")
        if self.num_train < 1 or self.num_val < 1:
            raise DataError("synthetic data: num_train and num_val must be at least 1")
        if self.image_size < MIN_IMAGE_SIZE:
            raise DataError(
                f"synthetic data: image_size={self.image_size} must be >= {MIN_IMAGE_SIZE}"
            )

    def count(self, split: str) -> int:
        return self.num_train if split == "train" else self.num_val

    def sizes(self) -> list[tuple[int, int]]:
        """The (height, width) choices: unequal sizes so collate code meets them."""
        big, small = self.image_size, round(0.75 * self.image_size)
        return [(big, big), (big, small), (small, big), (small, small)]


def image_ids(split: str, count: int) -> list[str]:
    return [f"{split}_{i:05d}" for i in range(count)]


def _sample(spec: SyntheticSpec, split: str, index: int) -> Scene:
    """Image `index` of `split` from its own stream: independent of the other counts."""
    rng = np.random.default_rng([spec.seed, _SPLIT_STREAM[split], index])
    sizes = spec.sizes()
    height, width = sizes[rng.integers(len(sizes))]
    count = rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1)
    shapes = [SHAPES[i] for i in rng.integers(len(SHAPES), size=count - 1)]
    # Cycling the scene and one shape per image (the shape drawn last so nothing hides it)
    # puts every class in every split of at least six images.
    scene = SCENES[index % len(SCENES)]
    shapes.append(SHAPES[(index // len(SCENES)) % len(SHAPES)])
    return render_scene(rng, int(height), int(width), scene, shapes)


def _write_sample(root: Path, image_id: str, image: np.ndarray, label: np.ndarray) -> None:
    Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", **JPEG_OPTIONS)
    palette_image(label).save(root / "SegmentationClass" / f"{image_id}.png")


def _data_files(root: Path, spec: SyntheticSpec) -> list[Path]:
    files = [root / "classes.txt"]
    for split in SPLITS:
        files.append(root / "ImageSets" / "Segmentation" / f"{split}.txt")
        for image_id in image_ids(split, spec.count(split)):
            files.append(root / "JPEGImages" / f"{image_id}.jpg")
            files.append(root / "SegmentationClass" / f"{image_id}.png")
    return files


def _digest(files: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _manifest(root: Path, spec: SyntheticSpec) -> dict:
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        **asdict(spec),
        "classes": list(SYNTHETIC_CLASSES),
        "sizes": [list(s) for s in spec.sizes()],
        "digest": _digest(_data_files(root, spec), root),
    }


def _write_tree(root: Path, spec: SyntheticSpec, progress: bool) -> None:
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(SYNTHETIC_CLASSES) + "\n")
    total = spec.num_train + spec.num_val
    with tqdm(total=total, desc="synthetic data", unit="img", disable=not progress) as bar:
        for split in SPLITS:
            ids = image_ids(split, spec.count(split))
            for index, image_id in enumerate(ids):
                scene = _sample(spec, split, index)
                _write_sample(root, image_id, scene.image, scene.label)
                bar.update()
            (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    trainval = image_ids("train", spec.num_train) + image_ids("val", spec.num_val)
    (root / "ImageSets" / "Segmentation" / "trainval.txt").write_text("\n".join(trainval) + "\n")
    # Written last: a tree with a manifest is a complete tree.
    manifest = json.dumps(_manifest(root, spec), indent=2) + "\n"
    (root / MANIFEST).write_text(manifest)


def _host_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _staging_dir(root: Path, kind: str) -> Path:
    return root.parent / f".{root.name}.{kind}-{_host_tag()}"


def _remove_stale_staging(root: Path) -> None:
    """Drop this host's staging trees whose writer died (a killed generation)."""
    prefix = f".{root.name}.partial-{socket.gethostname()}-"
    for path in root.parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tree_problem(root: Path, spec: SyntheticSpec) -> str | None:
    """Why `root` is not the complete tree `spec` describes, or None when it is."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return f"{root} has no {MANIFEST}, so it is not a (complete) synthetic dataset"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        return f"{manifest_path} is unreadable ({err})"
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
        return f"{manifest_path} was not written by {GENERATOR}"
    wanted = {"version": GENERATOR_VERSION, **asdict(spec)}
    differ = [
        f"{key}={manifest.get(key)!r} (wanted {value!r})"
        for key, value in wanted.items()
        if manifest.get(key) != value
    ]
    if differ:
        return f"{root} holds another synthetic dataset: {', '.join(differ)}"
    files = _data_files(root, spec)
    missing = [p for p in files if not p.is_file()]
    if missing:
        return f"{root} is incomplete: {len(missing)} files missing, e.g. {missing[0]}"
    if _digest(files, root) != manifest.get("digest"):
        return f"{root}: files changed since generation (digest mismatch)"
    return None


def is_synthetic_tree(root: Path) -> bool:
    """Whether `root` was written by this generator (complete or not, any version)."""
    try:
        return json.loads((root / MANIFEST).read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def generate_synthetic(
    root: Path | str,
    *,
    seed: int = 0,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    image_size: int = DEFAULT_IMAGE_SIZE,
    progress: bool = True,
) -> Path:
    """Write the dataset to `root`, which must not exist or be an empty directory.

    The tree is built beside `root` and renamed into place, so `root` is either absent or
    complete. When another process finishes the same tree first, its tree is kept.
    """
    root = Path(root).absolute()
    spec = SyntheticSpec(seed, num_train, num_val, image_size)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(f"synthetic data: {root} already exists and is not empty")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(root)
    staging = _staging_dir(root, "partial")
    shutil.rmtree(staging, ignore_errors=True)
    log.info("generating the synthetic dataset (seed %d) in %s", seed, root)
    try:
        _write_tree(staging, spec, progress)
        os.replace(staging, root)
    except OSError as err:
        # Lost a race with another process writing the same spec: theirs is as good.
        if tree_problem(root, spec) is None:
            return root
        raise DataError(f"synthetic data: could not write {root}: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _replace(root: Path, spec: SyntheticSpec, progress: bool) -> None:
    old = _staging_dir(root, "old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(root, old)
    try:
        generate_synthetic(root, progress=progress, **asdict(spec))
    finally:
        shutil.rmtree(old, ignore_errors=True)


def ensure_synthetic(
    root: Path | str,
    *,
    seed: int = 0,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    image_size: int = DEFAULT_IMAGE_SIZE,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """The synthetic VOC-style tree at `root`: generated on first use, reused after.

    A tree from other arguments, another generator version, or with missing or changed
    files is refused with a `DataError` naming the difference; `overwrite=True` replaces
    it instead. A non-empty directory this generator did not write is never touched.
    """
    root = Path(root).absolute()
    spec = SyntheticSpec(seed, num_train, num_val, image_size)
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return generate_synthetic(root, progress=progress, **asdict(spec))
    problem = tree_problem(root, spec)
    if problem is None:
        return root
    ours = is_synthetic_tree(root)
    if overwrite and ours:
        log.warning("replacing the synthetic dataset: %s", problem)
        _replace(root, spec, progress)
        return root
    advice = "delete it or choose another root" + (" (or pass overwrite)" if ours else "")
    raise DataError(f"synthetic data: {problem}; {advice}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fcn_lightning.data.synthetic",
        description="Generate (or check) the synthetic VOC-style segmentation dataset.",
    )
    defaults = SyntheticSpec()
    parser.add_argument("--root", type=Path, required=True, help="where the tree goes")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--num-train", type=int, default=defaults.num_train)
    parser.add_argument("--num-val", type=int, default=defaults.num_val)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--overwrite", action="store_true", help="replace a mismatched tree")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        root = ensure_synthetic(
            args.root,
            seed=args.seed,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
            progress=not args.no_progress,
            overwrite=args.overwrite,
        )
    except FCNError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
