"""Same scores as pytorch-fcn's models with the same (random, non-zero) weights."""

from __future__ import annotations

import pytest
import torch

from fcn_lightning.errors import ConfigError, WeightsError
from fcn_lightning.interop.torchfcn import load_torchfcn
from tests.torchfcn_reference import torchfcn_models

CLASSES = {"fcn32s": "FCN32s", "fcn16s": "FCN16s", "fcn8s": "FCN8s", "fcn8s_atonce": "FCN8sAtOnce"}
SIZES = [(1, 1), (37, 61), (80, 53)]


def randomised_torchfcn(variant: str, num_classes: int = 5, seed: int = 0):
    torch.manual_seed(seed)
    net = getattr(torchfcn_models(), CLASSES[variant])(n_class=num_classes).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            std = (2.0 / fan_in) ** 0.5 if p.dim() > 1 else 0.05
            # Keep the bilinear upsampling (as trained nets do) but perturb it a little, so a
            # transposed or mis-cropped kernel would show.
            p.add_(torch.randn_like(p) * (0.05 if "upscore" in name else std))
    return net


@pytest.fixture(scope="module", params=sorted(CLASSES))
def pair(request):
    net = randomised_torchfcn(request.param)
    ours = load_torchfcn(net.state_dict(), request.param).eval()
    return request.param, net, ours


def test_same_scores_at_any_size(pair):
    _, net, ours = pair
    torch.manual_seed(1)
    with torch.no_grad():
        for height, width in SIZES:
            x = torch.randn(1, 3, height, width) * 60
            expected, actual = net(x), ours(x)
            assert actual.shape == expected.shape == (1, 5, height, width)
            assert expected.abs().max() > 0, "reference scores are all zero: test is vacuous"
            torch.testing.assert_close(
                actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max()
            )


def test_loads_torchfcn_files_and_training_checkpoints(tmp_path):
    net = randomised_torchfcn("fcn16s", num_classes=3, seed=2)
    weights = tmp_path / "fcn16s_from_caffe.pth"
    torch.save(net.state_dict(), weights)
    # torchfcn's trainer saves the weights beside its own bookkeeping.
    checkpoint = {"epoch": 3, "iteration": 100, "model_state_dict": net.state_dict()}
    x = torch.randn(1, 3, 50, 40) * 60
    with torch.no_grad():
        expected = net(x)
        for source in (weights, checkpoint):
            torch.testing.assert_close(load_torchfcn(source, "fcn16s").eval()(x), expected)


def test_wrong_variant_or_file_is_refused(tmp_path):
    state_dict = randomised_torchfcn("fcn32s", num_classes=3).state_dict()
    with pytest.raises(WeightsError, match="does not fit torchfcn's fcn8s"):
        load_torchfcn(state_dict, "fcn8s")
    with pytest.raises(ConfigError, match="no variant 'pool5'"):
        load_torchfcn(state_dict, "pool5")
    junk = tmp_path / "notes.txt"
    junk.write_text("not weights")
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        load_torchfcn(junk, "fcn32s")
