"""Segment images: ``python -m fcn_lightning.predict ckpt_path=... inputs=<folder|list|image>``.

For each image writes ``<name>.png``, a palette PNG whose pixel values are class indices
(the VOC label format, so it opens coloured in any viewer and reads back as labels), and
``<name>_overlay.jpg``, the coloured prediction blended over the image.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from PIL import Image

from fcn_lightning import resolvers  # noqa: F401  (registers the config resolvers)
from fcn_lightning.data.readers import read_image
from fcn_lightning.errors import DataError
from fcn_lightning.models.inference import apply_inference
from fcn_lightning.module import load_module
from fcn_lightning.normalization import get_input_norm
from fcn_lightning.run.boundary import user_errors
from fcn_lightning.run.config import CONF_DIR, resolved
from fcn_lightning.run.console import log, print_config
from fcn_lightning.run.progress import track
from fcn_lightning.visualize import overlay, palette_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


def list_inputs(inputs: str | Path) -> list[Path]:
    """Images named by ``inputs``: one image, a folder of them, or a text file of paths."""
    path = Path(inputs).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
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
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def predict(cfg: DictConfig) -> list[Path]:
    print_config(cfg, kept_in=None)
    images = list_inputs(cfg.inputs)
    module = load_module(cfg.ckpt_path)
    apply_inference(module, resolved(cfg.inference) if "inference" in cfg else None)
    device = pick_device(cfg.device)
    module.eval().to(device)
    norm = get_input_norm(module.hparams.normalization)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in track(images, description="predict", unit="img"):
        image = read_image(path)
        scores = module(norm(image)[None].to(device))
        label = scores.argmax(1)[0].to(torch.uint8).cpu().numpy()
        mask_path = out_dir / f"{path.stem}.png"
        palette_image(label).save(mask_path)
        rgb = image.permute(1, 2, 0).numpy()
        Image.fromarray(overlay(rgb, label, cfg.alpha)).save(out_dir / f"{path.stem}_overlay.jpg")
        written.append(mask_path)
    log.info("wrote %d masks and overlays to %s", len(written), out_dir)
    return written


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    with user_errors():
        predict(cfg)


if __name__ == "__main__":
    main()
