"""Pictures of segmentations: the PASCAL VOC colour map, coloured masks, overlays, grids."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (``num_colors x 3`` uint8); entry 255 is the void colour."""
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[index] = (r, g, b)
    return palette


def full_palette(classes: list[list[int]] | None = None) -> np.ndarray:
    """256 x 3: the classes' own colours (a checkpoint's ``palette``) over the VOC map,
    which keeps void (255) and any index past them."""
    palette = voc_palette()
    if classes:
        palette[: len(classes)] = np.asarray(classes, dtype=np.uint8).reshape(-1, 3)
    return palette


def palette_image(label: np.ndarray, palette: list[list[int]] | None = None) -> Image.Image:
    """A mode-"P" PNG-ready image whose pixel values are the class indices (VOC's format)."""
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(full_palette(palette).flatten().tolist())
    return image


def colorize(label: np.ndarray, palette: list[list[int]] | None = None) -> np.ndarray:
    """``H x W`` class indices -> ``H x W x 3`` RGB."""
    return full_palette(palette)[label.astype(np.uint8)]


def overlay(
    image: np.ndarray, label: np.ndarray, alpha: float = 0.5, palette: list[list[int]] | None = None
) -> np.ndarray:
    """Blend the coloured mask over an ``H x W x 3`` uint8 image; void pixels stay as they are."""
    colored = colorize(label, palette).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colored
    blended[label == 255] = image[label == 255]
    return blended.round().clip(0, 255).astype(np.uint8)


def sample_grid(
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    gap: int = 4,
    palette: list[list[int]] | None = None,
) -> np.ndarray:
    """One row per sample: image | ground truth | prediction, images of any sizes, in the
    classes' own colours (a checkpoint's ``palette``; None: VOC's)."""
    height = sum(image.shape[0] for image, _, _ in rows) + gap * (len(rows) - 1)
    width = max(image.shape[1] for image, _, _ in rows) * 3 + gap * 2
    grid = np.full((max(height, 1), max(width, 1), 3), 255, dtype=np.uint8)
    y = 0
    for image, truth, pred in rows:
        h, w = image.shape[:2]
        for i, panel in enumerate((image, colorize(truth, palette), colorize(pred, palette))):
            x = i * (w + gap)
            grid[y : y + h, x : x + w] = panel
        y += h + gap
    return grid


def save_whole(image: Image.Image, path: Path, fmt: str) -> None:
    """Write ``path`` under a temporary name first: a stopped command leaves no half file."""
    partial = path.with_name(f".{path.name}.tmp")
    image.save(partial, format=fmt)
    os.replace(partial, path)
