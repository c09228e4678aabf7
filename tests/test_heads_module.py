"""FCNModule and eval's outputs with two heads, on a small stand-in net that honours the
heads contract (scores concatenated in head order, ``heads`` = (name, classes) per head):
what is logged and written equals score.py's formulas on a NumPy confusion matrix."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from fcn_lightning import module as module_file
from fcn_lightning.errors import ConfigError
from fcn_lightning.eval import without_confusion
from fcn_lightning.eval_outputs import PerImageScores, write_eval_outputs
from fcn_lightning.module import FCNModule

HEADS = (("sem", 4), ("geo", 3))
GEO_NAMES = ["sky", "horizontal", "vertical"]
MODEL_HEADS = [{"name": "sem", "num_classes": 4}, {"name": "geo", "num_classes": 3}]


class StandIn(nn.Module):
    """One 3x3 convolution to every head's channels (no dropout: train and eval agree)."""

    def __init__(self, heads, channels):
        super().__init__()
        self.heads, self.num_classes, self.output_stride = heads, heads[0][1], 4
        self.conv = nn.Conv2d(channels, sum(n for _, n in heads), 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def stand_in_build(variant, *, num_classes, heads=None, input="rgb", **_):
    spec = tuple((h["name"], h["num_classes"]) for h in heads) if heads else (("", num_classes),)
    return StandIn(spec, {"rgb": 3, "color_hha": 6}[input])


class Pairs(torch.utils.data.Dataset):
    """Random images and K x H x W labels, 255 here and there in either plane."""

    def __init__(self, count, seed, channels=3, size=(12, 10)):
        rng = np.random.default_rng(seed)
        self.images = rng.normal(size=(count, channels, *size)).astype(np.float32)
        labels = np.stack([rng.integers(0, n, size=(count, *size)) for _, n in HEADS], 1).astype(
            np.int64
        )
        labels[rng.random(labels.shape) < 0.1] = 255
        self.labels = labels
        self.ids = [f"img{i}" for i in range(count)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]), torch.from_numpy(self.labels[i])


def make_module(monkeypatch, **loss):
    monkeypatch.setattr(module_file, "build_fcn", stand_in_build)
    model = {"variant": "fcn32s", "num_classes": 4, "input": "rgb",
             "heads": MODEL_HEADS}  # fmt: skip
    return FCNModule(
        model=model, optim={"lr": 1e-3, "momentum": 0.9}, loss={"normalize": "sum", **loss},
        class_names=["a", "b", "c", "d"], head_class_names={"geo": GEO_NAMES},
    )  # fmt: skip


def fast_hist(a, b, n):  # the reference's score.py
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n**2).reshape(n, n)


def score_py(hist):
    with np.errstate(divide="ignore", invalid="ignore"):
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        freq = hist.sum(1) / hist.sum()
        return {
            "pixel_acc": np.diag(hist).sum() / hist.sum(),
            "mean_acc": np.nanmean(np.diag(hist) / hist.sum(1)),
            "mean_iu": np.nanmean(iu),
            "fw_iu": (freq[freq > 0] * iu[freq > 0]).sum(),
        }, iu


def numpy_hists_and_loss(module, data):
    """Each head's confusion over the split and the summed loss (normalize=sum: summed
    cross-entropy of every head over the split's images)."""
    with torch.no_grad():
        scores = module.model(torch.from_numpy(data.images)).double().numpy()
    hists, loss, start = [], 0.0, 0
    for k, (_, n) in enumerate(HEADS):
        head = scores[:, start : start + n]
        start += n
        target = data.labels[:, k]
        hists.append(fast_hist(target.flatten(), head.argmax(1).flatten(), n))
        log_p = head - np.log(np.exp(head).sum(1, keepdims=True))
        valid = target != 255
        picked = np.take_along_axis(log_p, np.where(valid, target, 0)[:, None], 1)[:, 0]
        loss -= picked[valid].sum() / len(data)
    return hists, loss


def test_two_heads_train_and_log_every_heads_scores_under_their_names(monkeypatch, tmp_path):
    module = make_module(monkeypatch)
    train, val = Pairs(6, 0), Pairs(5, 1)
    trainer = pl.Trainer(
        max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, DataLoader(train, batch_size=2), DataLoader(val, batch_size=2))
    logged = trainer.callback_metrics
    assert {"train/loss", "train/sem/loss", "train/geo/loss"} <= set(logged)
    trainer.validate(module, DataLoader(val, batch_size=2), verbose=False)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    hists, loss = numpy_hists_and_loss(module, val)
    for k, prefix in enumerate(("", "geo/")):
        expected, iu = score_py(hists[k])
        for name, value in expected.items():
            assert logged[f"val/{prefix}{name}"] == pytest.approx(value, rel=1e-5), name
        present = hists[k].sum(1) > 0
        assert logged[f"val/{prefix}mean_iu_present"] == pytest.approx(np.nanmean(iu[present]))
    geo_iu = score_py(hists[1])[1]
    assert logged["val_iu/geo/vertical"] == pytest.approx(geo_iu[2], rel=1e-5)
    assert logged["val/loss"] == pytest.approx(loss, rel=1e-4)
    assert logged["val/sem/loss"] + logged["val/geo/loss"] == pytest.approx(loss, rel=1e-4)
    assert "val/sem/mean_iu" not in logged  # the first head keeps today's names
    scores = module.last_scores["val"]
    assert scores["mean_iu"] == pytest.approx(score_py(hists[0])[0]["mean_iu"])
    assert list(scores["heads"]) == ["sem", "geo"]
    assert list(scores["heads"]["geo"]["iu"]) == GEO_NAMES
    np.testing.assert_array_equal(scores["heads"]["geo"]["confusion"].numpy(), hists[1])
    kept = without_confusion(scores)  # what metrics.json holds
    assert "confusion" not in kept and "confusion" not in kept["heads"]["geo"]


def test_eval_outputs_hold_every_heads_confusion_and_the_first_heads_images(monkeypatch, tmp_path):
    module = make_module(monkeypatch)
    val = Pairs(5, 2)
    per_image = PerImageScores(4, worst_k=0, heads=module.heads)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", callbacks=[per_image],
                         default_root_dir=tmp_path)  # fmt: skip
    trainer.validate(module, DataLoader(val, batch_size=2), verbose=False)
    hists, _ = numpy_hists_and_loss(module, val)
    written = write_eval_outputs(tmp_path, per_image, module.class_names, val, None,
                                 module.head_class_names)  # fmt: skip
    assert {"confusion.csv", "confusion_geo.csv", "confusion_geo.png"} <= set(written)
    for name, hist, names in (("confusion.csv", hists[0], list("abcd")),
                              ("confusion_geo.csv", hists[1], GEO_NAMES)):  # fmt: skip
        rows = list(csv.reader((tmp_path / name).open()))
        assert rows[0][1:] == names
        np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], dtype=int), hist)
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    with torch.no_grad():
        first = module.model(torch.from_numpy(val.images[3:4]))[:, :4].argmax(1).numpy()
    hist = fast_hist(val.labels[3, 0].flatten(), first.flatten(), 4)  # image 3, first head
    assert float(rows[3]["pixel_acc"]) == pytest.approx(np.diag(hist).sum() / hist.sum())


def test_class_weights_with_several_heads_are_refused(monkeypatch):
    with pytest.raises(ConfigError, match=r"loss.class_weight .* heads sem \(4\), geo \(3\)"):
        make_module(monkeypatch, class_weight=[1.0, 2.0, 1.0, 1.0])


def test_a_head_whose_class_list_has_another_length_is_refused(monkeypatch):
    monkeypatch.setattr(module_file, "build_fcn", stand_in_build)
    model = {"variant": "fcn32s", "num_classes": 4,
             "heads": MODEL_HEADS}  # fmt: skip
    with pytest.raises(ConfigError, match="head geo has 3 classes but its class list names 2"):
        FCNModule(model=model, optim={"lr": 1e-3}, head_class_names={"geo": ["sky", "ground"]})


def test_sample_pictures_show_the_first_head_and_the_colour_of_a_six_channel_input(
    monkeypatch,
):
    from types import SimpleNamespace

    from pytorch_lightning.utilities.parsing import AttributeDict

    from fcn_lightning.callbacks import SegmentationSamples
    from fcn_lightning.normalization import get_input_norm

    norm = get_input_norm("torchvision")
    rng = np.random.default_rng(5)
    rgb = torch.from_numpy(rng.integers(0, 256, size=(2, 3, 6, 5), dtype=np.uint8))
    images = torch.cat([norm(rgb), torch.randn(2, 3, 6, 5)], 1)  # colour, then HHA
    labels = torch.from_numpy(np.stack([rng.integers(0, n, size=(2, 6, 5)) for _, n in HEADS], 1))
    scores = torch.randn(2, 7, 6, 5)
    samples = SegmentationSamples(num_samples=2)
    hparams = AttributeDict(normalization="torchvision", model={"input": "color_hha"})
    module = SimpleNamespace(heads=HEADS, hparams=hparams)
    samples.on_validation_batch_end(SimpleNamespace(sanity_checking=False), module, scores,
                                    (images, labels), 0)  # fmt: skip
    assert len(samples.rows) == 2
    shown, truth, pred = samples.rows[1]
    np.testing.assert_array_equal(shown, rgb[1].permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(truth, labels[1, 0].numpy())  # the sem plane
    np.testing.assert_array_equal(pred, scores[1, :4].argmax(0).numpy())  # sem's channels


def test_class_balancing_with_several_heads_is_refused_before_counting_pixels(tmp_path):
    from omegaconf import open_dict

    from fcn_lightning.train import build_module
    from tests.train_helpers import compose_train

    cfg = compose_train(tmp_path, tmp_path / "run", "+loss.class_balance=median_frequency")
    with open_dict(cfg):
        cfg.data.heads = MODEL_HEADS
    with pytest.raises(ConfigError, match=r"loss.class_balance=median_frequency: .* data.heads "
                                          r"names 2 \(sem, geo\); drop it"):  # fmt: skip
        build_module(cfg, datamodule=None)  # refused before the labels are read
