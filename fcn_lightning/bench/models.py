"""The nets benchmarked, and the steps timed on them.

pytorch-fcn's FCN gets random non-zero weights (its score layers start at zero, which would
make every output 0 and the equality check vacuous); this project's caffe-geometry FCN loads
the same weights through `load_torchfcn`, and the aligned one loads the very same tensors
(its layers have the same shapes; only the padding and crops differ).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from fcn_lightning.bench.counting import count_flops, meta_images
from fcn_lightning.interop.torchfcn import TORCHFCN_CLASSES, load_torchfcn, torchfcn_models
from fcn_lightning.loss import segmentation_loss
from fcn_lightning.models import build_fcn


@functools.cache
def torchfcn_net(variant: str, num_classes: int = 21, seed: int = 0) -> nn.Module:
    """pytorch-fcn's ``variant`` with random weights (He-scaled convs, perturbed bilinear
    upsampling), as in tests/interop/test_torchfcn_equivalence.py. Made once per run: sections
    that train it change it by lr 1e-10 steps, and ours copy its weights when made."""
    torch.manual_seed(seed)
    net = getattr(torchfcn_models(), TORCHFCN_CLASSES[variant])(n_class=num_classes)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() > 1:
                std = 0.05 if "upscore" in name else (2.0 / p[0].numel()) ** 0.5
            else:
                std = 0.05
            p.add_(torch.randn_like(p) * std)
    return net


def our_nets(reference: nn.Module, variant: str) -> dict[str, nn.Module]:
    """This project's caffe and aligned FCNs holding ``reference``'s weights."""
    caffe = load_torchfcn(reference.state_dict(), variant)
    aligned = build_fcn(variant, num_classes=caffe.num_classes, geometry="aligned")
    aligned.load_state_dict(caffe.state_dict())
    return {"caffe": caffe, "aligned": aligned}


def check_same(expected: Tensor, actual: Tensor, what: str) -> str:
    """Raise unless ``actual`` matches ``expected``; the largest difference, as text."""
    if expected.abs().max() == 0:
        raise AssertionError(f"{what}: reference scores are all zero, the check is vacuous")
    torch.testing.assert_close(
        actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()), msg=what
    )
    return f"max |diff| {float((actual - expected).abs().max()):.1e}"


def inputs(batch: int, height: int, width: int, classes: int, device, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, height, width, generator=generator) * 60
    labels = torch.randint(0, classes, (batch, height, width), generator=generator)
    labels[:, ::17] = 255  # some void pixels, as VOC's boundaries
    return images.to(device), labels.to(device)


def _precision(autocast: torch.dtype | None, device: torch.device):
    if autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=autocast)


def infer_step(
    model: Callable[[Tensor], Tensor], images: Tensor, *, autocast: torch.dtype | None = None
) -> Callable[[], Tensor]:
    """Evaluation forward pass (the module must already be in eval mode)."""

    def step() -> Tensor:
        with torch.no_grad(), _precision(autocast, images.device):
            return model(images)

    return step


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    """The reference solver's SGD (FCN-32s learning rate), on the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=1e-10, momentum=0.99, weight_decay=5e-4)


def train_step(
    model: Callable[[Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    *,
    autocast: torch.dtype | None = None,
) -> Callable[[], Tensor]:
    """Forward, the reference's summed loss, backward and an SGD step (module in train
    mode)."""

    def step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        with _precision(autocast, images.device):
            loss = segmentation_loss(model(images), labels, normalize="sum")
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def train_flops(variant: str, geometry: str, batch: int, height: int, width: int) -> int:
    """FLOPs of one training step's forward and backward (torch.utils.flop_counter, on
    meta tensors: nothing is computed). The SGD update is elementwise and not counted."""
    with torch.device("meta"):
        model = build_fcn(variant, geometry=geometry).train()
        images = meta_images(batch, height, width)
        labels = torch.zeros(batch, height, width, dtype=torch.long)
    return count_flops(lambda: segmentation_loss(model(images), labels).backward())
