"""A tiny two-head FCN (SIFT Flow's layout: sem + geo) and a tiny two-stream FCN (NYUD's
colour + HHA late fusion) through fit, reload, validation as eval runs it, predict and
export, on in-memory data of this file's making; the scores equal score.py's formulas on
a NumPy confusion matrix of the reloaded model's own predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from fcn_lightning.errors import ConfigError, DataError
from fcn_lightning.eval import check_heads, eval_datamodule
from fcn_lightning.eval_outputs import PerImageScores
from fcn_lightning.export import METADATA_FILE, export
from fcn_lightning.module import FCNModule, load_module
from fcn_lightning.normalization import get_input_norm
from fcn_lightning.predict import predict
from tests.train_helpers import CONF

SIFT_HEADS = [{"name": "sem", "num_classes": 5}, {"name": "geo", "num_classes": 3}]
GEO = ["sky", "horizontal", "vertical"]


class Pairs(torch.utils.data.Dataset):
    """Random normalised images of ``channels`` and labels (``planes`` x H x W, or H x W
    for one plane) with some 255s."""

    def __init__(self, count, seed, channels, classes, size=(36, 44)):
        rng = np.random.default_rng(seed)
        self.images = rng.normal(size=(count, channels, *size)).astype(np.float32)
        labels = np.stack([rng.integers(0, n, size=(count, *size)) for n in classes], 1)
        labels[rng.random(labels.shape) < 0.1] = 255
        self.labels = labels[:, 0] if len(classes) == 1 else labels
        self.ids = [f"img{i}" for i in range(count)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]), torch.from_numpy(self.labels[i]).long()


def fitted_checkpoint(path, *, input="rgb", heads=None, num_classes=5, channels=3, classes=(5,)):
    """A tiny FCN-32s of this input and these heads, fitted 2 steps and saved at ``path``."""
    model = {"name": "fcn32s", "variant": "fcn32s", "num_classes": num_classes, "input": input,
             "heads": heads, "backbone": "vgg16", "geometry": "aligned", "pretrained": False,
             "weights": "torchvision", "width": 1 / 32}  # fmt: skip
    module = FCNModule(
        model=model, optim={"lr": 1e-4, "momentum": 0.9}, loss={"normalize": "mean"},
        class_names=[f"c{i}" for i in range(num_classes)], normalization="torchvision",
        head_class_names={"geo": GEO} if heads else None,
    )  # fmt: skip
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", default_root_dir=path.parent)  # fmt: skip
    train = Pairs(4, 0, channels, classes)
    trainer.fit(module, DataLoader(train, batch_size=2))
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads_streams")
    return {
        "heads": fitted_checkpoint(root / "heads.ckpt", heads=SIFT_HEADS, classes=(5, 3)),
        "streams": fitted_checkpoint(root / "streams.ckpt", input="color_hha", channels=6),
    }


def fast_hist(a, b, n):  # the reference's score.py
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n**2).reshape(n, n)


def mean_iu(hist):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nanmean(np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist)))


def validate(module, data):
    per_image = PerImageScores(module.num_classes, worst_k=0, heads=module.heads)
    trainer = pl.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", callbacks=[per_image],
    )  # fmt: skip
    trainer.validate(module, DataLoader(data, batch_size=2), verbose=False)
    return module.last_scores["val"], per_image


def test_a_two_head_checkpoint_reloads_and_scores_each_head_on_its_own_labels(checkpoints):
    module = load_module(checkpoints["heads"]).eval()
    assert module.heads == (("sem", 5), ("geo", 3))
    assert {"score_fr_sem.weight", "score_fr_geo.weight"} <= set(module.model.state_dict())
    assert module.head_class_names[1] == GEO
    data = Pairs(3, 1, 3, (5, 3))
    scores, per_image = validate(module, data)
    with torch.no_grad():
        out = module.model(torch.from_numpy(data.images)).numpy()
    assert out.shape[1] == 8  # 5 + 3, in head order
    sem = fast_hist(data.labels[:, 0].flatten(), out[:, :5].argmax(1).flatten(), 5)
    geo = fast_hist(data.labels[:, 1].flatten(), out[:, 5:].argmax(1).flatten(), 3)
    assert scores["mean_iu"] == pytest.approx(mean_iu(sem))
    assert scores["heads"]["geo"]["mean_iu"] == pytest.approx(mean_iu(geo))
    np.testing.assert_array_equal(per_image.confusions[1], geo)


def test_a_two_stream_checkpoint_takes_six_channels_and_scores_as_numpy(checkpoints):
    module = load_module(checkpoints["streams"]).eval()
    names = set(module.model.state_dict())
    assert {"backbones.color.features.0.weight", "backbones.hha.features.0.weight"} <= names
    assert {"score_fr_color.weight", "score_fr_hha.weight"} <= names
    assert names.isdisjoint({"backbone.features.0.weight", "score_fr.weight"})
    data = Pairs(3, 2, 6, (5,))
    scores, _ = validate(module, data)
    with torch.no_grad():
        preds = module.model(torch.from_numpy(data.images)).argmax(1).numpy()
    hist = fast_hist(data.labels.flatten(), preds.flatten(), 5)
    assert scores["mean_iu"] == pytest.approx(mean_iu(hist))
    assert "heads" not in scores


def predict_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("predict", overrides=[*overrides, "device=cpu"])


def test_predict_writes_one_mask_per_head_each_the_argmax_of_its_scores(checkpoints, tmp_path):
    rng = np.random.default_rng(4)
    photo = rng.integers(0, 256, size=(30, 42, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "x.png")
    out = tmp_path / "out"
    predict(predict_cfg(f"ckpt_path={checkpoints['heads']}", f"inputs={tmp_path / 'x.png'}",
                        f"out_dir={out}"))  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["x.png", "x_geo.png", "x_overlay.jpg"]
    module = load_module(checkpoints["heads"]).eval()
    image = torch.from_numpy(photo).permute(2, 0, 1)
    with torch.no_grad():
        scores = module(get_input_norm("torchvision")(image)[None])[0].numpy()
    np.testing.assert_array_equal(np.array(Image.open(out / "x.png")), scores[:5].argmax(0))
    np.testing.assert_array_equal(np.array(Image.open(out / "x_geo.png")), scores[5:].argmax(0))


def test_predict_refuses_an_input_no_image_file_holds(checkpoints, tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    cfg = predict_cfg(f"ckpt_path={checkpoints['streams']}", f"inputs={tmp_path / 'x.png'}",
                      f"out_dir={tmp_path / 'out'}")  # fmt: skip
    refusal = r"takes data.input=color_hha \(color \(3\) \+ hha \(3\) channels\).*RGB images only"
    with pytest.raises(ConfigError, match=refusal):
        predict(cfg)
    assert not (tmp_path / "out").exists()


def export_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("export", overrides=[*overrides, "example_size=[40,56]"])


def test_a_two_head_export_lists_its_heads_and_gives_pytorchs_scores(checkpoints, tmp_path):
    out = tmp_path / "heads.pt"
    export(export_cfg(f"ckpt_path={checkpoints['heads']}", "format=torchscript", f"out={out}"))
    meta = json.loads((tmp_path / "heads.pt.json").read_text())
    assert [(h["name"], h["num_classes"], h["channels"]) for h in meta["heads"]] == [
        ("sem", 5, [0, 5]), ("geo", 3, [5, 8])
    ]  # fmt: skip
    assert meta["heads"][1]["class_names"] == GEO
    assert meta["input"]["data_input"] == "rgb" and meta["input"]["channels"] == 3
    files = {METADATA_FILE: ""}
    graph = torch.jit.load(str(out), _extra_files=files)
    assert json.loads(files[METADATA_FILE])["heads"] == meta["heads"]
    x = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        expected = load_module(checkpoints["heads"]).eval().model(x)
        torch.testing.assert_close(graph(x), expected, rtol=1e-4, atol=1e-4)


def test_a_two_stream_export_takes_six_channels_and_refuses_rgb_normalisation(
    checkpoints, tmp_path
):
    out = tmp_path / "streams.onnx"
    export(export_cfg(f"ckpt_path={checkpoints['streams']}", f"out={out}"))  # checked at 3 sizes
    meta = json.loads((tmp_path / "streams.onnx.json").read_text())
    assert meta["input"]["channels"] == 6
    assert meta["input"]["streams"] == [{"name": "color", "channels": 3},
                                        {"name": "hha", "channels": 3}]  # fmt: skip
    assert "B x 6 x H x W" in meta["input"]["layout"]
    with pytest.raises(ConfigError, match=r"normalize_in_graph=true: .*data.input=color_hha "
                                          r"\(6 channels\).*normalize_in_graph=false"):  # fmt: skip
        export(export_cfg(f"ckpt_path={checkpoints['streams']}", f"out={tmp_path / 'n.onnx'}",
                          "normalize_in_graph=true"))  # fmt: skip
    assert not (tmp_path / "n.onnx").exists()


def eval_cfg(ckpt, **data):
    return OmegaConf.create({"ckpt_path": str(ckpt), "data": data or None})


def test_eval_refuses_data_with_other_heads_than_the_checkpoint(checkpoints):
    one_head = {"num_classes": 5, "heads": None}
    with pytest.raises(ConfigError, match=r"predicts the heads sem \(5\), geo \(3\) but the "
                                          r"data has one head \(5 classes\)"):  # fmt: skip
        check_heads(eval_cfg(checkpoints["heads"]), one_head,
                    {"num_classes": 5, "heads": SIFT_HEADS})  # fmt: skip
    check_heads(eval_cfg(checkpoints["heads"]), {"num_classes": 5, "heads": SIFT_HEADS},
                {"num_classes": 5, "heads": SIFT_HEADS})  # fmt: skip


def test_eval_refuses_another_data_input_typed_against_the_checkpoint(checkpoints):
    checkpoint = torch.load(checkpoints["streams"], weights_only=True)
    target = "fcn_lightning.data.datamodule.SegmentationDataModule"  # data=<preset>
    cfg = eval_cfg(checkpoints["streams"], _target_=target, num_classes=5, input="color")
    with pytest.raises(ConfigError, match=r"data.input=color: ckpt_path=.* was trained with "
                                          r"input=color_hha; drop the override"):  # fmt: skip
        eval_datamodule(cfg, checkpoint, typed={"data.input"})


def test_predict_refuses_an_input_whose_name_another_inputs_head_mask_takes(checkpoints, tmp_path):
    for name in ("x.png", "x_geo.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    out = tmp_path / "out"
    cfg = predict_cfg(f"ckpt_path={checkpoints['heads']}", f"inputs={tmp_path}", f"out_dir={out}")
    with pytest.raises(DataError, match=r"x.png and .*x_geo.png would both write .*x_geo.png"):
        predict(cfg)
    assert not out.exists()
