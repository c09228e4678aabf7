"""What ``python -m fcn_lightning.eval`` writes beside metrics.json: the confusion matrix
(confusion.csv, confusion.png), one row of scores per image (per_image.csv) and the
predictions of the `worst_k` worst images (worst.csv, worst/<id>.png) that
``python -m fcn_lightning.report <eval dir> --worst K`` draws. Formats: docs/evaluation.md.

`PerImageScores` is a callback of the eval Trainer only, so training pays nothing for it.
It scores each image of a validation batch from the scores the validation step returns,
naming it by the dataset index its sampler gave (`batch_sampler` order), and under DDP
gathers every rank's rows on rank 0 at the end: each image is scored on exactly one rank
(the eval sampler repeats none), so rank 0 writes what one process would.

Several heads (SIFT Flow): the confusion matrix of every head (confusion.csv/.png for the
first, confusion_<head>.csv/.png for each further one); per_image.csv and the worst images
are the first head's.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from fcn_lightning.heads import Heads, split_labels, split_scores
from fcn_lightning.metrics import confusion_matrix
from fcn_lightning.visualize import palette_image

WORST_DIR = "worst"


def image_scores(hist: np.ndarray) -> tuple[float, float, int]:
    """Pixel accuracy, mean IU over the classes present in the image's (labelled)
    truth or prediction, and the labelled pixel count of one image's confusion matrix."""
    hist = hist.astype(np.float64)
    total = hist.sum()
    diag, union = np.diag(hist), hist.sum(0) + hist.sum(1) - np.diag(hist)
    present = union > 0
    pixel_acc = diag.sum() / total if total else math.nan
    mean_iu = float((diag[present] / union[present]).mean()) if present.any() else math.nan
    return float(pixel_acc), mean_iu, int(total)


class PerImageScores(pl.Callback):
    """Per-image rows, the split's confusion matrix and the `worst_k` worst predictions
    (lowest mean IU, then pixel accuracy, then split order): only k masks are held.
    ``heads``: the model's (`fcn_lightning.heads`); rows and worst images are the first
    head's, ``confusions`` every head's (``confusion``: the first head's)."""

    def __init__(self, num_classes: int, worst_k: int = 8, heads: Heads | None = None) -> None:
        self.heads = tuple(heads) if heads else (("", num_classes),)
        self.num_classes, self.worst_k = self.heads[0][1], worst_k
        self.rows: list[tuple[int, float, float, int]] = []  # index, acc, mean IU, pixels
        self.confusions = [np.zeros((c, c), dtype=np.int64) for _, c in self.heads]
        self.worst: list[tuple[tuple[float, float, int], np.ndarray]] = []
        self.ids: list[str] = []
        self._batches: list[list[int]] = []

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        loader = trainer.val_dataloaders
        if isinstance(loader, (list, tuple)):
            loader = loader[0]
        self._batches = [list(b) for b in loader.batch_sampler]
        self.ids = list(loader.dataset.ids)
        self.rows, self.worst = [], []
        for confusion in self.confusions:
            confusion[:] = 0

    @property
    def confusion(self) -> np.ndarray:
        return self.confusions[0]

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        head_scores = split_scores(outputs, self.heads)
        head_labels = split_labels(batch[1], self.heads)
        for k in range(1, len(self.heads)):
            further = head_scores[k].max(1).indices
            hist = confusion_matrix(further, head_labels[k], self.heads[k][1])
            self.confusions[k] += hist.cpu().numpy()
        labels = head_labels[0]
        preds = head_scores[0].max(1).indices  # the class metrics.py takes (the first maximal)
        for i, index in enumerate(self._batches[batch_idx]):
            hist = confusion_matrix(preds[i], labels[i], self.num_classes).cpu().numpy()
            self.confusions[0] += hist
            pixel_acc, mean_iu, labelled = image_scores(hist)
            self.rows.append((index, pixel_acc, mean_iu, labelled))
            if self.worst_k and not math.isnan(mean_iu):
                self._keep_if_worst((mean_iu, pixel_acc, index), preds[i])

    def _keep_if_worst(self, key: tuple[float, float, int], pred: torch.Tensor) -> None:
        if len(self.worst) == self.worst_k and key >= self.worst[-1][0]:
            return
        self.worst.append((key, pred.to(torch.uint8).cpu().numpy()))
        self.worst.sort(key=lambda kept: kept[0])
        del self.worst[self.worst_k :]

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            self.rows.sort()
            return
        mine = (self.rows, self.confusions, self.worst)
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        self.rows = sorted(row for rows, _, _ in gathered for row in rows)
        self.confusions = [
            sum(confusions[k] for _, confusions, _ in gathered) for k in range(len(self.heads))
        ]
        merged = sorted((kept for _, _, worst in gathered for kept in worst), key=lambda k: k[0])
        self.worst = merged[: self.worst_k]


def write_confusion_csv(path: Path, confusion: np.ndarray, names: list[str]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["truth \\ prediction", *names])
        for name, row in zip(names, confusion.tolist(), strict=True):
            writer.writerow([name, *row])


def plot_confusion(path: Path, confusion: np.ndarray, names: list[str]) -> None:
    """The row-normalised matrix (each truth class's pixels spread over the predictions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = confusion.sum(1, keepdims=True)
    normalised = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    size = max(5.0, 0.35 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    shown = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    shown_names = [name.replace("$", r"\$") for name in names]  # text, not mathtext
    ax.set_xticks(range(len(names)), shown_names, rotation=90)
    ax.set_yticks(range(len(names)), shown_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    fig.colorbar(shown, ax=ax, label="fraction of the truth class's pixels")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _num(value: float) -> str:
    return "nan" if math.isnan(value) else repr(value)


def write_per_image(path: Path, rows: list[tuple[int, float, float, int]], ids: list[str]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "pixel_acc", "mean_iu", "labelled_pixels"])
        for index, pixel_acc, mean_iu, labelled in rows:
            writer.writerow([ids[index], _num(pixel_acc), _num(mean_iu), labelled])


def write_worst(
    run_dir: Path, scores: PerImageScores, dataset: Any, palette: list[list[int]] | None = None
) -> None:
    """worst/<id>.png (the prediction, cropped to the image, in the classes' colours) and
    worst.csv, worst first, naming the image and label files the report reads beside it."""
    folder = run_dir / WORST_DIR
    folder.mkdir(exist_ok=True)
    with (run_dir / "worst.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["rank", "id", "mean_iu", "pixel_acc", "prediction", "image", "label"])
        for rank, ((mean_iu, pixel_acc, index), pred) in enumerate(scores.worst, start=1):
            sample = dataset.samples[index]
            _, label = dataset.load(index)  # the pair as scored: upright, checked
            height, width = label.shape[-2:]
            name = f"{WORST_DIR}/{rank:02d}_{Path(sample.id).name}.png"
            palette_image(pred[:height, :width], palette).save(run_dir / name)
            writer.writerow([rank, sample.id, _num(mean_iu), _num(pixel_acc), name,
                             str(sample.image), str(sample.label)])  # fmt: skip


def _remove_earlier_worst(run_dir: Path) -> None:
    """An earlier eval's worst.csv and masks in this run dir describe another scoring (of
    which this one's metrics.json and per_image.csv took the place): report --worst must
    not draw them. Only the files eval names itself are removed."""
    (run_dir / "worst.csv").unlink(missing_ok=True)
    folder = run_dir / WORST_DIR
    if folder.is_dir():
        for mask in folder.glob("[0-9][0-9]_*.png"):
            mask.unlink()


def write_eval_outputs(
    run_dir: Path,
    scores: PerImageScores,
    names: list[str],
    dataset: Any,
    palette: list[list[int]] | None = None,
    head_names: list[list[str]] | None = None,
) -> list[str]:
    """Every file of this module's docstring; returns their names. ``names``: the first
    head's classes; ``head_names``: every head's (several heads)."""
    written = []
    for k, (head, _) in enumerate(scores.heads):
        suffix = f"_{head}" if k else ""
        fallback = [str(i) for i in range(scores.heads[k][1])]
        classes = names if k == 0 else (head_names[k] if head_names else fallback)
        write_confusion_csv(run_dir / f"confusion{suffix}.csv", scores.confusions[k], classes)
        plot_confusion(run_dir / f"confusion{suffix}.png", scores.confusions[k], classes)
        written += [f"confusion{suffix}.csv", f"confusion{suffix}.png"]
    write_per_image(run_dir / "per_image.csv", scores.rows, scores.ids)
    written.append("per_image.csv")
    _remove_earlier_worst(run_dir)
    if scores.worst_k:  # header only when no image had a labelled pixel to rank
        write_worst(run_dir, scores, dataset, palette)
        written += ["worst.csv", f"{WORST_DIR}/"]
    return written
