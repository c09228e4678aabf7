"""Segment images: ``python -m fcn_lightning.predict ckpt_path=... inputs=<folder|list|image>``.

For each image writes ``<name>.png``, a palette PNG whose pixel values are class indices
(the VOC label format, so it opens coloured in any viewer and reads back as labels), and
``<name>_overlay.jpg``, the coloured prediction blended over the image.

Output names keep the inputs' folders: ``<name>`` is the image's path below the deepest
folder that holds all the inputs, without its suffix. One image or one folder gives flat
names (``x.jpg`` -> ``out_dir/x.png``); a list naming ``a/x.jpg`` and ``b/x.jpg`` gives
``out_dir/a/x.png`` and ``out_dir/b/x.png``. Two inputs that would still share a name
(``x.jpg`` and ``x.png`` in one folder), or an output that would overwrite an input, are
refused before anything is written.

The input normalisation is the checkpoint's; ``normalization=<name>`` may only repeat it.

A checkpoint with several heads (SIFT Flow's semantic and geometric) writes one mask per
head: ``<name>.png`` for the first head, ``<name>_<head>.png`` for each further one (each
in its classes' colours: the checkpoint's palette for the first, VOC's for the others);
the overlay shows the first head. A checkpoint trained on inputs that an image file does
not hold (NYUD's HHA, depth, colour+depth, colour+HHA: ``model.input``) is refused:
predict reads RGB images only (``rgb`` and NYUD's ``color``).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

import torch
from omegaconf import DictConfig
from PIL import Image

from fcn_lightning import resolvers  # noqa: F401  (registers the config resolvers)
from fcn_lightning.data.inputs import input_streams
from fcn_lightning.data.readers import read_image
from fcn_lightning.errors import ConfigError, DataError
from fcn_lightning.export_metadata import IMAGE_INPUTS  # the inputs an RGB image file gives
from fcn_lightning.heads import Heads, split_scores
from fcn_lightning.interop.zoo import resolve_checkpoint
from fcn_lightning.models.checkpoints import TrainedWith, command_line_keys, settle
from fcn_lightning.models.inference import Inference, apply_inference
from fcn_lightning.module import FCNModule, load_module
from fcn_lightning.normalization import InputNorm, get_input_norm
from fcn_lightning.run.boundary import user_errors
from fcn_lightning.run.check_config import check_config
from fcn_lightning.run.config import resolved
from fcn_lightning.run.console import log, print_config
from fcn_lightning.run.overrides import fcn_main
from fcn_lightning.run.progress import track
from fcn_lightning.run.signals import Interrupted, signals_interrupt, stopped
from fcn_lightning.visualize import overlay, palette_image, save_whole

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif"}
OVERLAY_SUFFIX = "_overlay.jpg"


def list_inputs(inputs: str | Path) -> list[Path]:
    """Images named by ``inputs``: one image, a folder of them, or a text file of paths."""
    path = Path(inputs).expanduser()
    if path.is_dir():
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        broken = [p.name for p in entries if p.is_symlink() and not p.exists()]
        if broken:
            raise DataError(
                f"inputs={path}: {broken[0]} is a symbolic link to nothing (or a loop): "
                "remove it or point it at an image"
            )
        files = [p for p in entries if p.is_file()]
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        others = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if others:
            # Refused rather than skipped: a folder of masks or of another format is more
            # often a wrong inputs= than a stray file, and a list file says exactly which.
            raise DataError(
                f"inputs={path}: holds {len(others)} non-image file(s), e.g. {others[:3]}: "
                "move them out, or list the images in a text file and pass inputs=<list.txt>"
            )
    elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        images = [path]
    elif path.is_file():
        try:  # a list file: UTF-8, a byte-order mark and CRLF line ends allowed
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise DataError(
                f"inputs={path}: neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}) nor "
                "a UTF-8 text file listing images"
            ) from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        images = [(path.parent / line).resolve() for line in lines]
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise DataError(
                f"inputs={path}: lists {len(missing)} missing file(s), e.g. {missing[0]}"
            )
    else:
        raise DataError(f"inputs={path}: no such image, folder or list file")
    if not images:
        raise DataError(f"inputs={path}: no images found (looked for {sorted(IMAGE_SUFFIXES)})")
    return images


def output_names(images: list[Path], inputs: str | Path) -> list[Path]:
    """Each image's output name relative to ``out_dir`` (without suffix): its path below
    the deepest folder holding all the images. Refuses two images that share a name."""
    paths = [p.absolute() for p in images]
    common = Path(os.path.commonpath([p.parent for p in paths]))
    names = [p.parent.relative_to(common) / p.stem for p in paths]
    first: dict[Path, Path] = {}
    for image, name in zip(images, names, strict=True):
        if name in first:
            raise DataError(
                f"inputs={inputs}: {first[name]} and {image} would both be written as "
                f"{name}.png; rename one of them, or predict them in separate runs"
            )
        first[name] = image
    return names


def pick_device(name: str | int) -> torch.device:
    """The torch device ``device=`` names; refuses one this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device={name}: choose auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={name}: no CUDA device is available on this machine; use "
                "device=cpu or device=auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device={name}: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}; choose one of them, or device=auto"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name}: MPS is not available here; use device=cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={name}: choose auto, cpu, cuda or cuda:<index>")
    return device


def check_out_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a folder that is there or can be made (nothing is made yet)."""
    path = Path(out_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"out_dir={path}: is a file, not a folder; choose a folder (it is created if missing)"
        )
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ConfigError(f"out_dir={path}: {above} is a file, not a folder; choose a folder")
    return path


def make_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` (checked by `check_out_dir`), or say in one line why not."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"out_dir={out_dir}: cannot be created ({error.strerror}); choose a writable folder"
        ) from None


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError)
        and ("out of memory" in text or "can't allocate memory" in text)
    )


def check_image_input(module: FCNModule, ckpt_path: object) -> None:
    """Refuse a model whose input streams an RGB image file cannot give."""
    name = str(module.hparams.model.get("input") or "rgb")
    if name in IMAGE_INPUTS:
        return
    streams = input_streams(name, key="model.input")
    shown = " + ".join(f"{s.name} ({s.channels})" for s in streams)
    raise ConfigError(
        f"ckpt_path={ckpt_path}: takes data.input={name} ({shown} channels), which an image "
        "file does not hold: predict reads RGB images only; score it on its dataset with "
        "python -m fcn_lightning.eval, or predict with a checkpoint trained on data.input=rgb "
        "or color"
    )


def head_mask_paths(mask: Path, heads: Heads) -> list[Path]:
    """The masks of one image: ``<name>.png`` (first head), ``<name>_<head>.png`` (others)."""
    return [mask] + [mask.with_name(f"{mask.stem}_{name}.png") for name, _ in heads[1:]]


def prepared_model(
    cfg: DictConfig, typed: Collection[str], device: torch.device
) -> tuple[FCNModule, InputNorm, Inference]:
    """The checkpoint's model on ``device`` in eval mode with the inference settings, and
    the input normalisation it was trained with (``normalization=`` may only repeat it)."""
    resolve_checkpoint(cfg, "predict")  # model_zoo=<name>: its converted checkpoint
    module = load_module(cfg.ckpt_path)
    check_image_input(module, cfg.ckpt_path)
    trained = TrainedWith.of(module.hparams)
    normalization = settle(
        "normalization", cfg.get("normalization"), trained.normalization,
        ckpt_path=cfg.ckpt_path, typed=typed,
        fix="drop it: predict feeds the model as it was trained",
    )  # fmt: skip
    inference = apply_inference(module, resolved(cfg.inference) if "inference" in cfg else None)
    module.eval().to(device)
    return module, get_input_norm(normalization), inference


@torch.no_grad()
def predict(cfg: DictConfig, typed: Collection[str] = ()) -> list[Path]:
    """Write a mask and an overlay per input image; returns the masks written.

    ``typed``: the config keys the user set on the command line (`command_line_keys`).
    """
    print_config(cfg, kept_in=None)
    device = pick_device(cfg.device)
    out_dir = check_out_dir(cfg.out_dir)
    if cfg.get("format", "images") == "voc":  # the evaluation server's layout and tarball
        from fcn_lightning.voc_submission import predict_voc

        if cfg.get("inputs") is not None:  # the user meant one or the other
            raise ConfigError(
                f"inputs={cfg.inputs}: format=voc predicts the images voc.split's list names "
                "(ImageSets/Segmentation/<split>.txt); drop inputs, or drop format=voc to "
                "segment these images"
            )
        return [predict_voc(cfg, typed, device, out_dir)]
    images = list_inputs(cfg.inputs)
    names = output_names(images, cfg.inputs)
    masks = [out_dir / f"{name}.png" for name in names]
    module, norm, _ = prepared_model(cfg, typed, device)
    heads = module.heads
    written_by: dict[Path, Path] = {}
    for image, mask in zip(images, masks, strict=True):
        for path in (*head_mask_paths(mask, heads), mask.with_name(mask.stem + OVERLAY_SUFFIX)):
            other = written_by.setdefault(path.absolute(), image)
            if other != image:  # e.g. x.jpg's geo mask x_geo.png and x_geo.jpg's mask
                raise DataError(
                    f"inputs={cfg.inputs}: {other} and {image} would both write {path}; "
                    "rename one of them, or predict them in separate runs"
                )
    clobbered = next((p for p in images if p.absolute() in written_by), None)
    if clobbered is not None:
        raise ConfigError(
            f"out_dir={out_dir}: the outputs would overwrite the input {clobbered}; choose "
            "another out_dir"
        )
    make_out_dir(out_dir)
    palette = module.hparams.get("palette")  # the data's colours; None: VOC's
    written: list[Path] = []
    try:
        for path, mask_path in track(list(zip(images, masks, strict=True)),
                                     description="predict", unit="img"):  # fmt: skip
            image = read_image(path)
            try:
                scores = module(norm(image)[None].to(device))
            except RuntimeError as error:
                if not _is_out_of_memory(error):
                    raise
                height, width = image.shape[-2:]
                raise DataError(
                    f"{path}: out of memory predicting this {width}x{height} (WxH) image on "
                    f"{device}; downscale it or cut it into tiles and predict those, or use a "
                    f"device with more memory (device=cpu uses the machine's RAM); the "
                    f"{len(written)} image(s) before it are done in {out_dir}"
                ) from None
            labels = [
                head.argmax(1)[0].to(torch.uint8).cpu().numpy()
                for head in split_scores(scores, heads)
            ]
            label = labels[0]
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            rgb = image.permute(1, 2, 0).numpy()
            overlay_path = mask_path.with_name(mask_path.stem + OVERLAY_SUFFIX)
            for k, path in enumerate(head_mask_paths(mask_path, heads)):
                save_whole(palette_image(labels[k], palette if k == 0 else None), path, "PNG")
            save_whole(Image.fromarray(overlay(rgb, label, cfg.alpha, palette)), overlay_path,
                       "JPEG")  # fmt: skip
            written.append(mask_path)
    except (KeyboardInterrupt, Interrupted) as stop:
        stopped(
            stop,
            f"{len(written)} of {len(images)} images have their mask and overlay in {out_dir} "
            "(each file whole); the same command predicts them all again",
        )
    log.info("wrote %d masks and overlays to %s", len(written), out_dir)
    return written


@fcn_main("predict")
def main(cfg: DictConfig) -> None:
    with user_errors(), signals_interrupt():  # a stop signal: one line on what is done
        check_config(cfg, "predict")  # before anything is written or fetched
        predict(cfg, command_line_keys())


if __name__ == "__main__":
    main()
