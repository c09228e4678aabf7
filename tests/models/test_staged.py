"""Staged initialisation: FCN-16s from FCN-32s, FCN-8s from FCN-16s, by layer name."""

from __future__ import annotations

import pytest
import torch

from fcn_lightning.errors import WeightsError
from fcn_lightning.models import build_fcn, init_from_checkpoint
from fcn_lightning.models.bilinear import bilinear_weight

WIDTH = 1 / 16


def trained(variant: str, seed: int):
    """A model whose every parameter differs from its initial value, as after training."""
    torch.manual_seed(seed)
    model = build_fcn(variant, num_classes=4, width=WIDTH)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def test_fcn16s_from_fcn32s_lightning_checkpoint(tmp_path):
    source = trained("fcn32s", seed=0)
    path = tmp_path / "fcn32s.ckpt"
    # Lightning keeps the net under the LightningModule's attribute name.
    state_dict = {f"model.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state_dict, "global_step": 4000, "epoch": 0}, path)

    model = build_fcn("fcn16s", num_classes=4, width=WIDTH)
    report = init_from_checkpoint(model, path)

    ours, theirs = model.state_dict(), source.state_dict()
    for key in theirs:
        if key.startswith(("backbone.", "score_fr.")):
            torch.testing.assert_close(ours[key], theirs[key])
    # New layers keep their initial values: the skip scores zero, upsampling bilinear.
    assert torch.count_nonzero(ours["score_pool4.weight"]) == 0
    assert torch.count_nonzero(ours["score_pool4.bias"]) == 0
    torch.testing.assert_close(ours["upscore2.weight"], bilinear_weight(4, 4))
    torch.testing.assert_close(ours["upscore16.weight"], bilinear_weight(4, 32))
    assert set(report.kept) == {
        "score_pool4.weight", "score_pool4.bias", "upscore2.weight", "upscore16.weight",
    }  # fmt: skip
    assert report.ignored == ["upscore.weight"]


def test_fcn8s_from_fcn16s_copies_by_name(tmp_path):
    source = trained("fcn16s", seed=1)
    path = tmp_path / "fcn16s.pth"
    torch.save(source.state_dict(), path)
    model = build_fcn("fcn8s", num_classes=4, width=WIDTH)
    init_from_checkpoint(model, path)
    for key in ("score_pool4.weight", "upscore2.weight", "backbone.fc7.weight"):
        torch.testing.assert_close(model.state_dict()[key], source.state_dict()[key])
    assert torch.count_nonzero(model.score_pool3.weight) == 0
    # Every tensor FCN-16s has, FCN-8s now has too; only the new stride-8 path is fresh.
    fresh = {k for k in model.state_dict() if k not in source.state_dict()}
    assert fresh == {
        "score_pool3.weight",
        "score_pool3.bias",
        "upscore_pool4.weight",
        "upscore8.weight",
    }


def test_mismatched_checkpoint_is_refused(tmp_path):
    other = build_fcn("fcn32s", num_classes=7, width=WIDTH)
    path = tmp_path / "seven.pth"
    torch.save(other.state_dict(), path)
    model = build_fcn("fcn16s", num_classes=4, width=WIDTH)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=r"model\.init_from=.*score_fr\.weight has shape"):
        init_from_checkpoint(model, path)
    for key, value in model.state_dict().items():  # nothing half-loaded
        assert torch.equal(value, before[key])
    with pytest.raises(WeightsError, match="no such file"):
        init_from_checkpoint(model, tmp_path / "missing.ckpt")
