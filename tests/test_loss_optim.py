"""Loss normalisation, loss sampling, class balancing and the reference's parameter groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcn_lightning.errors import ConfigError
from fcn_lightning.loss import median_frequency_weights, sample_cells, segmentation_loss
from fcn_lightning.models import build_fcn
from fcn_lightning.optim import build_optimizer, build_schedule


def numpy_cross_entropy(scores, target, ignore=255):
    """Per-pixel -log softmax at the true class, NumPy only; NaN where ignored."""
    s = scores.astype(np.float64)
    log_softmax = s - s.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    out = np.full(target.shape, np.nan)
    for b, y, x in zip(*np.nonzero(target != ignore), strict=True):
        out[b, y, x] = -log_softmax[b, target[b, y, x], y, x]
    return out


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    target = rng.integers(0, 4, size=(2, 5, 6))
    target[0, :2] = 255
    return scores, target


def test_sum_is_per_image_sum_and_mean_is_per_pixel(batch):
    scores, target = batch
    per_pixel = numpy_cross_entropy(scores, target)
    s, t = torch.from_numpy(scores), torch.from_numpy(target)
    summed = segmentation_loss(s, t, normalize="sum").item()
    mean = segmentation_loss(s, t, normalize="mean").item()
    # Caffe's normalize: false divides the pixel sum by the batch size only.
    assert summed == pytest.approx(np.nansum(per_pixel) / 2, rel=1e-5)
    assert mean == pytest.approx(np.nanmean(per_pixel), rel=1e-5)


def test_class_weighted_mean_matches_weighted_average(batch):
    scores, target = batch
    per_pixel = numpy_cross_entropy(scores, target)
    weights = np.array([0.5, 2.0, 1.0, 3.0])
    valid = target != 255
    w = weights[target[valid]]
    expected = (w * per_pixel[valid]).sum() / w.sum()
    loss = segmentation_loss(
        torch.from_numpy(scores), torch.from_numpy(target), normalize="mean",
        class_weight=torch.tensor(weights, dtype=torch.float32),
    )  # fmt: skip
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_all_ignored_image_gives_zero_not_nan():
    scores = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(scores, torch.full((1, 4, 4), 255), normalize="mean")
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(scores.grad) == 0


def test_loss_sampling_keeps_whole_cells_at_rate_p():
    target = torch.zeros(4, 64, 96, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    sampled = sample_cells(target, 0.25, 16, 255, generator=gen)
    cells = sampled.view(4, 4, 16, 6, 16).permute(0, 1, 3, 2, 4).reshape(4, 4, 6, -1)
    kept = (cells == 0).all(-1)
    dropped = (cells == 255).all(-1)
    assert bool((kept | dropped).all())  # each 16x16 cell kept or dropped as a whole
    rate = kept.float().mean().item()
    assert 0.15 < rate < 0.35  # 96 cells at p = 0.25


def test_median_frequency_weights():
    counts = torch.tensor([600, 100, 300, 0])
    freq = np.array([0.6, 0.1, 0.3])
    expected = np.median(freq) / freq
    np.testing.assert_allclose(median_frequency_weights(counts)[:3].numpy(), expected, rtol=1e-6)
    assert median_frequency_weights(counts)[3] == 0


def test_parameter_groups_follow_the_reference():
    model = build_fcn("fcn16s", num_classes=3, width=1 / 16)
    opt = build_optimizer(model, lr=1e-10, momentum=0.99, weight_decay=5e-4)
    weights, biases = opt.param_groups
    assert (weights["lr"], weights["weight_decay"]) == (1e-10, 5e-4)
    assert (biases["lr"], biases["weight_decay"]) == (2e-10, 0.0)
    assert opt.defaults["momentum"] == 0.99
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("bias") for p in biases["params"])
    in_optimizer = {names[id(p)] for g in opt.param_groups for p in g["params"]}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"upscore2.weight", "upscore16.weight"}
    assert not in_optimizer & frozen
    assert in_optimizer | frozen == set(names.values())


def test_sgd_step_is_caffe_update_with_fixed_lr():
    # Caffe: v = m v + lr (g + wd w); w -= v. Two steps by hand against torch's SGD.
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(2, 2, 1)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    opt = build_optimizer(layer, lr=0.1, momentum=0.9, weight_decay=0.01)
    x = torch.randn(1, 2, 3, 3)
    vw, vb, w, b = torch.zeros_like(w0), torch.zeros_like(b0), w0.clone(), b0.clone()
    for _ in range(2):
        opt.zero_grad()
        (layer(x) ** 2).sum().backward()
        gw, gb = layer.weight.grad.clone(), layer.bias.grad.clone()
        opt.step()
        vw = 0.9 * vw + 0.1 * (gw + 0.01 * w)
        vb = 0.9 * vb + 0.2 * gb  # biases: 2x lr, no decay
        w, b = w - vw, b - vb
        torch.testing.assert_close(layer.weight.detach(), w)
        torch.testing.assert_close(layer.bias.detach(), b)


def test_poly_schedule_and_bad_values():
    layer = torch.nn.Conv2d(1, 1, 1)
    opt = build_optimizer(layer, lr=1.0, momentum=0.9, weight_decay=0)
    schedule = build_schedule(opt, schedule="poly", max_steps=10, power=0.9)
    for _ in range(5):
        opt.step()
        schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5**0.9)
    with pytest.raises(ConfigError, match=r"optim\.schedule"):
        build_schedule(opt, schedule="cosine", max_steps=10)
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        build_optimizer(layer, lr=0, momentum=0.9, weight_decay=0)
    with pytest.raises(ConfigError, match=r"loss\.normalize"):
        segmentation_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1), normalize="avg")
