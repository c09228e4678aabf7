"""Write HHA images from depth: ``python -m fcn_lightning.hha SOURCE --out DIR`` (also
``fcn-hha``), for NYUDv2 users who have depth but not Gupta's HHA PNGs.

SOURCE is a folder of 16-bit depth PNGs (millimetres, as the prepared NYUD ``data/depth``)
or the official ``nyu_depth_v2_labeled.mat`` (needs h5py: ``pip install
'fcn-lightning[nyud]'``). Each depth image becomes ``DIR/<name>.png``, an RGB PNG of
(disparity, height, angle) as `fcn_lightning.data.hha` encodes it; pointing DIR at
``<nyud>/data/hha`` gives the layout NYUD's reader expects (``data.input=hha|color_hha``).

The job restarts: outputs already there are skipped (``--overwrite`` redoes them), each is
written under a temporary name and renamed, so a stopped run leaves no half file. Every
input is checked before the first output is written; a bad one ends the command with one
``error:`` line and exit status 2, keeping what was written.
"""

from __future__ import annotations

import argparse
import math
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from rich.progress import Progress

from fcn_lightning.data.depth_files import (
    DepthItem,
    close_mats,
    load_depth,
    scan_folder,
    scan_mat,
)
from fcn_lightning.data.hha import (
    NYUD_CROP_LEFT,
    NYUD_CROP_TOP,
    NYUD_CROPPED_SHAPE,
    NYUD_FULL_SHAPE,
    Camera,
    encode_hha,
    nyud_camera,
)
from fcn_lightning.errors import ConfigError, DataError
from fcn_lightning.run.boundary import user_errors
from fcn_lightning.run.file_progress import file_progress

PNG_DEPTH_SCALE = 0.001  # millimetres
MAT_DEPTH_SCALE = 1.0  # the .mat holds metres
INTRINSICS = ("fx", "fy", "cx", "cy")


@dataclass(frozen=True)
class Job:
    item: DepthItem
    camera: Camera
    scale: float
    crop: bool
    out: Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fcn_lightning.hha",
        description="Write HHA PNGs (Gupta et al. 2014) from depth images.",
    )
    parser.add_argument(
        "source", type=Path, help="a folder of 16-bit depth PNGs, or nyu_depth_v2_labeled.mat"
    )
    parser.add_argument("--out", type=Path, required=True, help="the folder to write into")
    parser.add_argument(
        "--raw-depth",
        type=Path,
        default=None,
        help="a folder of raw depth PNGs named as SOURCE's: their zeros mark the pixels "
        "SOURCE filled in, left out of the surface normals as Gupta's code does",
    )
    parser.add_argument(
        "--depth-scale",
        type=float,
        default=None,
        help=f"metres per stored depth unit (default {PNG_DEPTH_SCALE} for PNGs, "
        f"{MAT_DEPTH_SCALE} for the .mat)",
    )
    for name in INTRINSICS:
        parser.add_argument(
            f"--{name}",
            type=float,
            default=None,
            help=f"camera {name} in pixels (all four or none; default: the NYUDv2 colour camera)",
        )
    parser.add_argument(
        "--crop",
        action="store_true",
        help="cut 640 x 480 depths to the prepared NYUD data's 560 x 425 region first",
    )
    parser.add_argument("--jobs", type=int, default=1, help="processes to use (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs already there")
    return parser.parse_args(argv)


def user_camera(args: argparse.Namespace) -> Camera | None:
    given = {name: getattr(args, name) for name in INTRINSICS}
    if all(value is None for value in given.values()):
        return None
    missing = [f"--{name}" for name, value in given.items() if value is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: give all four intrinsics or none")
    for name, value in given.items():
        if not math.isfinite(value) or (name in ("fx", "fy") and value <= 0):
            raise ConfigError(f"--{name}={value}: give a finite focal length above 0")
    return Camera(**given)


def scan_source(args: argparse.Namespace) -> tuple[list[DepthItem], float]:
    source = args.source
    if args.raw_depth is not None and not args.raw_depth.is_dir():
        raise DataError(f"{args.raw_depth}: --raw-depth is no folder: give the raw depth PNGs")
    if source.is_dir():
        return scan_folder(source, args.raw_depth), PNG_DEPTH_SCALE
    if not source.exists():
        raise DataError(f"{source}: no such folder or file: give the folder of depth PNGs")
    if source.suffix.lower() != ".mat":
        raise DataError(f"{source}: neither a folder of depth PNGs nor a .mat file")
    if args.raw_depth is not None:
        raise ConfigError("--raw-depth is for a folder of PNGs; the .mat has its rawDepths")
    return scan_mat(source), MAT_DEPTH_SCALE


def camera_for(item: DepthItem, given: Camera | None, crop: bool) -> Camera:
    shape = item.shape
    if crop:
        if shape != NYUD_FULL_SHAPE:
            raise DataError(
                f"{item.path}: a {shape[1]} x {shape[0]} depth image; --crop needs the "
                "release's 640 x 480 frames: leave --crop out"
            )
        if given is not None:
            return given.cropped(NYUD_CROP_TOP, NYUD_CROP_LEFT)
        shape = NYUD_CROPPED_SHAPE
    camera = given or nyud_camera(shape)
    if camera is None:
        raise ConfigError(
            f"{item.path}: a {shape[1]} x {shape[0]} depth image; the NYUDv2 camera is known "
            "for 640 x 480 and 560 x 425 only: give --fx --fy --cx --cy"
        )
    return camera


def plan(args: argparse.Namespace) -> tuple[list[Job], int]:
    """The jobs to run and how many outputs are already there; every check done first."""
    if args.jobs < 1:
        raise ConfigError(f"--jobs={args.jobs}: give 1 or more processes")
    given = user_camera(args)
    items, scale = scan_source(args)
    if args.depth_scale is not None:
        if not math.isfinite(args.depth_scale) or args.depth_scale <= 0:
            raise ConfigError(f"--depth-scale={args.depth_scale}: give metres per unit above 0")
        scale = args.depth_scale
    out = args.out
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: --out is a file, not a folder: give a folder to write into")
    if args.source.is_dir() and out.exists() and out.resolve() == args.source.resolve():
        raise ConfigError(f"--out {out} is the depth folder itself: give another folder")
    jobs = [Job(i, camera_for(i, given, args.crop), scale, args.crop, out / i.name) for i in items]
    todo = [job for job in jobs if args.overwrite or not job.out.is_file()]
    return todo, len(jobs) - len(todo)


def encode_file(job: Job) -> str:
    """Read, encode and write one HHA PNG (under a temporary name, then renamed)."""
    depth, filled = load_depth(job.item, job.scale)
    if job.crop:
        rows = slice(NYUD_CROP_TOP, NYUD_CROP_TOP + NYUD_CROPPED_SHAPE[0])
        cols = slice(NYUD_CROP_LEFT, NYUD_CROP_LEFT + NYUD_CROPPED_SHAPE[1])
        depth = depth[rows, cols]
        filled = None if filled is None else filled[rows, cols]
    where = job.item.path if job.item.index is None else f"{job.item.path} frame {job.item.index}"
    try:
        hha = encode_hha(depth, job.camera, missing=filled)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    partial = job.out.with_name(f".{job.out.name}.{os.getpid()}.tmp")
    Image.fromarray(hha).save(partial, format="PNG")  # H x W x 3 uint8: RGB
    os.replace(partial, job.out)
    return job.out.name


def run(jobs: list[Job], workers: int, progress: Progress) -> None:
    task = progress.add_task("writing HHA", total=len(jobs))
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            encode_file(job)
            progress.advance(task)
        return
    close_mats()  # each worker opens its own
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        pending = {pool.submit(encode_file, job) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise future.exception()
                progress.advance(task)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with user_errors():
        try:
            jobs, skipped = plan(args)
            args.out.mkdir(parents=True, exist_ok=True)
            progress = file_progress()
            if jobs:
                with progress:
                    run(jobs, args.jobs, progress)
        finally:
            close_mats()
        there = f" ({skipped} already there, skipped)" if skipped else ""
        print(f"wrote {len(jobs)} HHA PNG{'s' * (len(jobs) != 1)} to {args.out}{there}")


if __name__ == "__main__":
    main()
