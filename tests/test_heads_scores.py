"""Several heads' loss and scores, and mean_iu_present, against NumPy re-implementations of
the reference: two SoftmaxWithLoss (normalize: false) summed with weight 1, and score.py's
confusion-matrix scores per head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcn_lightning.heads import split_labels, split_scores
from fcn_lightning.loss import heads_loss, sample_cells
from fcn_lightning.metrics import SegmentationMetrics, markdown_table, scores_from_confusion

HEADS = (("sem", 5), ("geo", 3))


def numpy_ce_sum(scores, target, ignore=255):
    """Summed -log softmax at the true class over the valid pixels, and their count."""
    s = scores.astype(np.float64)
    log_softmax = s - s.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    total, count = 0.0, 0
    for b, y, x in zip(*np.nonzero(target != ignore), strict=True):
        total -= log_softmax[b, target[b, y, x], y, x]
        count += 1
    return total, count


def fast_hist(a, b, n):  # the reference's score.py
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n**2).reshape(n, n)


@pytest.fixture
def two_head_batch():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(2, 8, 6, 7)).astype(np.float32)  # 5 sem + 3 geo channels
    labels = np.stack([rng.integers(0, 5, size=(2, 6, 7)), rng.integers(0, 3, size=(2, 6, 7))], 1)
    labels[0, 0, :2] = 255  # ignored in the semantic head only
    labels[1, 1, :, :3] = 255  # ignored in the geometric head only
    return scores, labels


@pytest.mark.parametrize("normalize", ["sum", "mean"])
def test_the_loss_is_the_sum_of_each_heads_loss_on_its_own_plane(two_head_batch, normalize):
    scores, labels = two_head_batch
    expected = 0.0
    for start, stop, plane in ((0, 5, 0), (5, 8, 1)):
        total, count = numpy_ce_sum(scores[:, start:stop], labels[:, plane])
        expected += total / (2 if normalize == "sum" else count)  # batch of 2 | valid pixels
    s, t = torch.from_numpy(scores), torch.from_numpy(labels)
    losses = heads_loss(split_scores(s, HEADS), split_labels(t, HEADS), normalize=normalize)
    assert len(losses) == 2
    assert sum(loss.item() for loss in losses) == pytest.approx(expected, rel=1e-5)


def test_loss_sampling_drops_the_same_cells_in_every_heads_labels():
    labels = torch.stack([torch.zeros(3, 40, 56), torch.ones(3, 40, 56)], 1).long()
    sampled = sample_cells(labels, 0.5, 8, 255, generator=torch.Generator().manual_seed(1))
    dropped = sampled == 255
    assert torch.equal(dropped[:, 0], dropped[:, 1])  # the cells are the net's
    cells = dropped[:, 0].view(3, 5, 8, 7, 8).permute(0, 1, 3, 2, 4).reshape(3, 5, 7, 64)
    assert bool((cells.all(-1) | ~cells.any(-1)).all())  # whole 8x8 cells
    assert 0.3 < dropped.float().mean().item() < 0.7
    # One head: the same draws as before several heads existed.
    one = sample_cells(labels[:, 0], 0.5, 8, 255, generator=torch.Generator().manual_seed(1))
    assert torch.equal(one == 255, dropped[:, 0])


def test_each_heads_metric_is_score_py_on_its_own_confusion(two_head_batch):
    scores, labels = two_head_batch
    s, t = torch.from_numpy(scores), torch.from_numpy(labels)
    for (name, n), head_scores, plane in zip(
        HEADS, split_scores(s, HEADS), split_labels(t, HEADS), strict=True
    ):
        metric = SegmentationMetrics(n)
        metric.update(head_scores, plane)
        start = 0 if name == "sem" else 5
        preds = scores[:, start : start + n].argmax(1)
        hist = fast_hist(plane.numpy().flatten(), preds.flatten(), n)
        np.testing.assert_array_equal(metric.hist.numpy(), hist)
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        assert metric.compute()["mean_iu"].item() == pytest.approx(np.nanmean(iu))


def test_mean_iu_present_leaves_out_the_classes_the_ground_truth_lacks():
    # Classes 0..3; the truth holds 0 and 1 only; 2 is predicted (IU 0), 3 appears nowhere.
    hist = np.array([[5, 1, 2, 0], [0, 4, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    out = scores_from_confusion(torch.from_numpy(hist))
    iu_0, iu_1 = 5 / (8 + 5 - 5), 4 / (5 + 5 - 4)  # diag / (row + column - diag)
    assert out["mean_iu"].item() == pytest.approx((iu_0 + iu_1 + 0.0) / 3)  # score.py
    assert out["mean_iu_present"].item() == pytest.approx((iu_0 + iu_1) / 2)
    assert np.isnan(out["iu"][3].item())


def test_mean_iu_present_equals_mean_iu_when_every_class_is_in_the_truth():
    rng = np.random.default_rng(0)
    hist = rng.integers(1, 50, size=(6, 6))
    out = scores_from_confusion(torch.from_numpy(hist))
    assert out["mean_iu_present"].item() == pytest.approx(out["mean_iu"].item())


def test_the_table_shows_mean_iu_present_only_where_it_differs_and_each_further_head():
    names = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu", "mean_iu_present")
    first = dict(zip(names, (0.9, 0.8, 0.5, 0.7, 0.6), strict=True))
    first["iu"] = {"a": 0.5, "b": float("nan")}
    geo = dict(zip(names, (0.95, 0.9, 0.85, 0.9, 0.85), strict=True))
    geo["iu"] = {"sky": 0.9, "horizontal": 0.8, "vertical": 0.85}
    text = markdown_table({**first, "heads": {"sem": first, "geo": geo}})
    head, geo_part = text.split("head geo:")
    assert "| mean IU (GT classes) |" in head and "| 90.0 | 80.0 | 50.0 | 70.0 | 60.0 |" in head
    assert "mean IU (GT classes)" not in geo_part  # equal to mean IU: not shown
    assert "| 95.0 | 90.0 | 85.0 | 90.0 |" in geo_part and "| horizontal | 80.0 |" in geo_part


def test_the_report_reads_mean_iu_present_and_the_first_heads_classes():
    from omegaconf import OmegaConf

    from fcn_lightning.report.results import markdown, run_result

    cfg = OmegaConf.create({"data": {"classes": "a_list_that_is_not_there", "heads": [
        {"name": "sem", "num_classes": 2}, {"name": "geo", "num_classes": 3}]}})  # fmt: skip
    row = {"step": "9", "val/pixel_acc": "0.9", "val/mean_acc": "0.8", "val/mean_iu": "0.5",
           "val/fw_iu": "0.7", "val/mean_iu_present": "0.6", "val_iu/road": "0.4",
           "val_iu/geo/sky": "0.9", "val/geo/mean_iu": "0.8"}  # fmt: skip
    run = run_result([row], cfg, default_name="sift", path="sift")
    assert run.scores["mean_iu_present"] == pytest.approx(60.0)
    assert run.per_class == {"road": pytest.approx(40.0)}  # the further head's are left out
    assert "| sift | 10 | 90.0 | 80.0 | 50.0 | 70.0 | 60.0 |" in markdown([run], "t")
    old = {k: v for k, v in row.items() if k != "val/mean_iu_present"}  # logged before it
    earlier = run_result([old], cfg, default_name="old", path="old")
    assert "mean_iu_present" not in earlier.scores
    assert "GT classes" not in markdown([earlier], "t")
