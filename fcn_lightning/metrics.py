"""The paper's four metrics on one confusion matrix (docs/paper.md section 5).

One matrix ``hist`` (rows = ground truth, columns = prediction) is accumulated over the
whole split, summed across processes under DDP, and only then turned into scores, exactly
as the reference's ``score.py`` does. Per-image averaging would weigh small images as much
as large ones and give different numbers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

SCORE_NAMES = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")
# Logged and reported beside the paper's four: the mean IU over the classes the split's
# ground truth holds (docs/evaluation.md); `mean_iu` is the reference's.
LOGGED_SCORES = (*SCORE_NAMES, "mean_iu_present")


def confusion_matrix(preds: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """``num_classes x num_classes`` counts of (true, predicted) pairs; labels outside
    ``[0, num_classes)`` (255 = void) are left out."""
    valid = (target >= 0) & (target < num_classes)
    index = target[valid].long() * num_classes + preds[valid].long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores_from_confusion(hist: Tensor) -> dict[str, Tensor]:
    """Pixel accuracy, mean accuracy, mean IU, frequency-weighted IU, per-class IU and
    ``mean_iu_present``.

    A class absent from both ground truth and prediction has IU 0/0 = NaN and is left out
    of the means; a class predicted but absent from ground truth has IU 0 and counts in
    ``mean_iu`` (the reference's score.py). ``mean_iu_present`` leaves such classes out:
    the mean IU over the classes with ground-truth pixels in the split (SIFT Flow's test
    set lacks three of its 33 classes).
    """
    hist = hist.double()
    diag, true_total, pred_total = hist.diag(), hist.sum(1), hist.sum(0)
    with torch.no_grad():
        class_acc = diag / true_total
        iu = diag / (true_total + pred_total - diag)
        freq = true_total / hist.sum()
        present = freq > 0
        return {
            "pixel_acc": diag.sum() / hist.sum(),
            "mean_acc": class_acc.nanmean(),
            "mean_iu": iu.nanmean(),
            "fw_iu": (freq[present] * iu[present]).sum(),
            "mean_iu_present": iu[present].nanmean(),
            "iu": iu,
        }


class SegmentationMetrics(Metric):
    """``update(preds, target)`` with scores ``B x C x H x W`` or labels ``B x H x W``;
    ``compute()`` returns ``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fw_iu``,
    ``mean_iu_present`` and ``iu``."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    hist: Tensor

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        if ignore_index in range(num_classes):
            raise ValueError(f"ignore_index={ignore_index} is a class index; use 255")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        zeros = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.add_state("hist", default=zeros, dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.is_floating_point():
            if preds.dim() != target.dim() + 1 or preds.shape[1] != self.num_classes:
                raise ValueError(
                    f"scores of shape {tuple(preds.shape)} do not fit {self.num_classes} "
                    f"classes and targets of shape {tuple(target.shape)}"
                )
            # max(1) picks the same (first) maximal class as argmax(1), 4x faster on CPU:
            # argmax over the channel axis of NCHW scores walks them with a stride.
            preds = preds.max(1).indices
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
        self.hist += confusion_matrix(preds, target, self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        return scores_from_confusion(self.hist)


def markdown_table(scores: dict[str, Any]) -> str:
    """The four metrics and the per-class IU (in %) as Markdown tables; ``mean_iu_present``
    beside them where it differs from mean IU; with several heads (``scores["heads"]``)
    one section per further head after the first head's tables."""
    text = _head_tables(scores)
    for name, head in list((scores.get("heads") or {}).items())[1:]:
        text += f"\nhead {name}:\n\n" + _head_tables(head)
    return text


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def _head_tables(scores: dict[str, Any]) -> str:
    present = scores.get("mean_iu_present")
    extra = present is not None and _pct(present) != _pct(scores["mean_iu"])
    lines = [
        "| pixel acc | mean acc | mean IU | f.w. IU |" + (" mean IU (GT classes) |" * extra),
        "|---|---|---|---|" + ("---|" * extra),
        "| "
        + " | ".join(_pct(scores[name]) for name in SCORE_NAMES)
        + (f" | {_pct(present)}" if extra else "")
        + " |",
        "",
        "| class | IU |",
        "|---|---|",
    ]
    # A class name of a user's classes.txt may hold "|", which would end its cell.
    cells = {str(name).replace("|", r"\|"): iu for name, iu in scores["iu"].items()}
    lines += [f"| {name} | {_pct(iu)} |" for name, iu in cells.items()]
    return "\n".join(lines) + "\n"
