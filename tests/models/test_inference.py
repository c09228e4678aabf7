"""The `inference` node of eval and predict: dense prediction and test-time augmentation,
end to end on a tiny checkpoint, against scores computed here by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from PIL import Image

from fcn_lightning.errors import ConfigError
from fcn_lightning.eval import eval_datamodule, evaluate
from fcn_lightning.metrics import SegmentationMetrics
from fcn_lightning.models import build_fcn
from fcn_lightning.models.checkpoints import read_checkpoint
from fcn_lightning.models.dense import DenseFCN
from fcn_lightning.models.inference import Inference, TestTimeAugmentation
from fcn_lightning.module import load_module
from fcn_lightning.normalization import get_input_norm
from fcn_lightning.predict import predict
from fcn_lightning.train import train
from tests.train_helpers import CONF, compose_train, tiny_dataset


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny FCN-32s (aligned geometry) trained for 2 steps on the synthetic data."""
    root = tmp_path_factory.mktemp("inference")
    data_dir = tiny_dataset(root / "data")
    run = root / "run"
    train(compose_train(data_dir, run, "model=fcn32s", "optim.lr=0.05"))
    return run / "checkpoints" / "last.ckpt"


def compose_entry(name, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize(("node", "key"), [
    ({"dense": "shift"}, "inference.dense='shift'"),
    ({"factor": 2.5}, "inference.factor=2.5"),
    ({"tta": {"hflip": "yes"}}, "inference.tta.hflip='yes'"),
    ({"tta": {"scales": []}}, "inference.tta.scales"),
    ({"tta": {"scales": [1, -0.5]}}, "inference.tta.scales"),
    ({"stride": 2}, "unknown key"),
])  # fmt: skip
def test_bad_inference_settings_are_refused_in_one_line(node, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")) as error:
        Inference.from_config(node)
    assert "\n" not in str(error.value)


def test_the_config_nodes_compose(tmp_path):
    cfg = compose_entry("predict", "ckpt_path=x", "inputs=y", "inference=tta")
    settings = Inference.from_config(cfg.inference)
    assert settings == Inference("none", 2, True, (0.75, 1.0, 1.25))
    cfg = compose_entry("eval", "ckpt_path=x", "inference.dense=dilate", "inference.factor=4")
    assert Inference.from_config(cfg.inference).dense == "dilate"


def random_model():
    torch.manual_seed(0)
    model = build_fcn("fcn32s", num_classes=3, width=1 / 16, geometry="aligned")
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.2)
    return model.double().eval()


def test_hflip_and_scales_average_scores_as_by_hand():
    model = random_model()
    x = torch.randn(1, 3, 40, 52, dtype=torch.float64)
    net = TestTimeAugmentation(model, hflip=True, scales=[0.5, 1.0])
    with torch.no_grad():
        got = net(x)
        small = F.interpolate(x, (20, 26), mode="bilinear", align_corners=False, antialias=True)
        back = [model(small), model(small.flip(3)).flip(3)]
        back = [F.interpolate(s, (40, 52), mode="bilinear", align_corners=False) for s in back]
        expected = (model(x) + model(x.flip(3)).flip(3) + back[0] + back[1]) / 4
    torch.testing.assert_close(got, expected)


def test_hflip_of_a_mirror_symmetric_setup_changes_nothing():
    # A mirror-symmetric image through a net whose filters are mirror-symmetric gives
    # mirror-symmetric scores, so averaging them with their flipped-back mirror image does
    # nothing; in aligned geometry the padding to 32 px must not break it either.
    model = random_model()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 4:
                param.copy_((param + param.flip(3)) / 2)
    half = torch.randn(1, 3, 64, 32, dtype=torch.float64)
    x = torch.cat([half, half.flip(3)], dim=3)
    with torch.no_grad():
        plain = model(x)
        tta = TestTimeAugmentation(model, hflip=True, scales=[1.0])(x)
    torch.testing.assert_close(plain, plain.flip(3))
    torch.testing.assert_close(tta, plain)


def by_hand_scores(module, datamodule, net):
    """The paper's metrics over the val split, scoring each batch with `net`."""
    datamodule.setup("validate")
    metrics = SegmentationMetrics(module.num_classes)
    with torch.no_grad():
        for images, labels in datamodule.val_dataloader():
            metrics.update(net(images), labels)
    return {k: v for k, v in metrics.compute().items() if k != "iu"}


def test_eval_with_hflip_and_dense_matches_scores_computed_by_hand(checkpoint, tmp_path):
    overrides = [
        f"ckpt_path={checkpoint}", "num_workers=0", "trainer=cpu",
        "inference.tta.hflip=true", "inference.dense=dilate", "inference.factor=4",
    ]  # fmt: skip
    scores = evaluate(compose_entry("eval", *overrides, f"paths.output_dir={tmp_path}"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["inference"] == {"dense": "dilate", "factor": 4,
                                  "tta": {"hflip": True, "scales": [1.0]}}  # fmt: skip

    module = load_module(checkpoint).eval()
    dense = DenseFCN(module.model, "dilate", 4)

    def hflip(images):
        return (dense(images) + dense(images.flip(3)).flip(3)) / 2

    cfg = compose_entry("eval", *overrides[:3])
    expected = by_hand_scores(
        module, eval_datamodule(cfg, read_checkpoint(checkpoint, key="c")), hflip
    )
    for name, value in expected.items():
        assert scores[name] == pytest.approx(float(value), abs=1e-6), name


def test_eval_refuses_an_impossible_factor_before_loading_data(checkpoint, tmp_path):
    cfg = compose_entry(
        "eval", f"ckpt_path={checkpoint}", "inference.dense=stitch", "inference.factor=64",
        f"paths.output_dir={tmp_path}", "data_dir=/nonexistent",
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"inference\.factor=64: must divide"):
        evaluate(cfg)


def test_predict_with_shift_and_stitch_writes_the_stitched_argmax(checkpoint, tmp_path):
    images = checkpoint.parents[2] / "data" / "synthetic" / "JPEGImages"
    first = sorted(images.glob("*.jpg"))[0]
    cfg = compose_entry(
        "predict", f"ckpt_path={checkpoint}", f"inputs={first}", f"out_dir={tmp_path}",
        "device=cpu", "inference.dense=stitch", "inference.factor=2",
    )  # fmt: skip
    predict(cfg)
    module = load_module(checkpoint).eval()
    rgb = torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1)
    x = get_input_norm(module.hparams.normalization)(rgb)[None]
    with torch.no_grad():
        expected = DenseFCN(module.model, "stitch", 2)(x).argmax(1)[0].numpy()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"{first.stem}.png")), expected)
