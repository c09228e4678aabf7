"""The four metrics against a NumPy transcription of the reference's score.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcn_lightning.metrics import SegmentationMetrics


def fast_hist(a, b, n):
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n**2).reshape(n, n)


def reference_scores(hist):
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        acc_cls = np.nanmean(np.diag(hist) / hist.sum(axis=1))
        iu = np.diag(hist) / (hist.sum(axis=1) + hist.sum(axis=0) - np.diag(hist))
        mean_iu = np.nanmean(iu)
        freq = hist.sum(axis=1) / hist.sum()
        fwavacc = (freq[freq > 0] * iu[freq > 0]).sum()
    return acc, acc_cls, mean_iu, fwavacc, iu


def random_batch(rng, n, shape, absent=()):
    target = rng.integers(0, n, size=shape)
    target[rng.random(shape) < 0.1] = 255
    preds = np.where(rng.random(shape) < 0.6, target, rng.integers(0, n, size=shape))
    present = min(set(range(n)) - set(absent))
    for c in absent:
        target[target == c] = 255
        preds[preds == c] = present
    return preds, target


@pytest.mark.parametrize("absent", [(), (3,), (0, 4)])
def test_metrics_match_reference_over_several_batches(absent):
    rng = np.random.default_rng(0)
    n = 6
    metric = SegmentationMetrics(n)
    hist = np.zeros((n, n), dtype=np.int64)
    for shape in [(2, 7, 9), (1, 13, 5), (3, 4, 4)]:
        preds, target = random_batch(rng, n, shape, absent)
        metric.update(torch.from_numpy(preds), torch.from_numpy(target))
        hist += fast_hist(target.flatten(), preds.flatten(), n)
    out = metric.compute()
    acc, acc_cls, mean_iu, fw, iu = reference_scores(hist)
    assert out["pixel_acc"].item() == pytest.approx(acc)
    assert out["mean_acc"].item() == pytest.approx(acc_cls)
    assert out["mean_iu"].item() == pytest.approx(mean_iu)
    assert out["fw_iu"].item() == pytest.approx(fw)
    np.testing.assert_allclose(out["iu"].numpy(), iu)
    for c in absent:
        assert np.isnan(out["iu"][c].item())  # absent everywhere: left out of the mean


def test_scores_input_and_predicted_but_absent_class():
    n = 3
    target = torch.tensor([[[0, 0, 1, 1]]])
    # Class 2 predicted once but never true: IU 0, which counts in the mean.
    scores = torch.zeros(1, n, 1, 4)
    for i, c in enumerate([0, 2, 1, 1]):
        scores[0, c, 0, i] = 1.0
    metric = SegmentationMetrics(n)
    metric.update(scores, target)
    out = metric.compute()
    assert out["iu"].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert out["mean_iu"].item() == pytest.approx(0.5)
    assert out["pixel_acc"].item() == pytest.approx(0.75)


def test_reset_and_shape_errors():
    metric = SegmentationMetrics(4)
    metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    metric.reset()
    assert metric.hist.sum() == 0
    with pytest.raises(ValueError, match="do not fit 4 classes"):
        metric.update(torch.zeros(1, 5, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_scores_are_read_as_argmax_ties_to_the_first_class():
    torch.manual_seed(0)
    scores = torch.randn(2, 5, 7, 9).round()  # rounding makes many ties
    scores[0, :, 0, 0] = torch.tensor([1.0, 3.0, 3.0, 0.0, 3.0])
    target = torch.randint(0, 5, (2, 7, 9))
    from_scores, from_labels = SegmentationMetrics(5), SegmentationMetrics(5)
    from_scores.update(scores, target)
    from_labels.update(scores.argmax(1), target)
    assert torch.equal(from_scores.hist, from_labels.hist)
