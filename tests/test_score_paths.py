"""One checkpoint, every path a user can score it by, one table.

A tiny checkpoint trained torchvision-normalised (so a Caffe-normalised input, the data
presets' default in eval, would score differently) is scored by ``eval`` without
``data=``, by ``eval data=synthetic`` (the preset), by ``eval trainer=ddp_cpu`` (two
processes), and after export to ONNX by onnxruntime over the same images, with the
confusion matrix and the paper's metrics computed here in NumPy from the label PNGs
(read with Pillow) and the formulas of fcn_lightning/metrics.py's docstring.

The PyTorch paths must give the same table exactly. The ONNX path must give the same
scores to 1e-12, i.e. the same pixel counts: ONNX's kernels add in another order, which
moves scores by ~1e-6, so only a pixel whose two best classes are within `TIE` of each
other could change class, and the test first checks that there is none.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcn_lightning.train import train
from tests.bad_input.harness import run_entry
from tests.train_helpers import TINY_DATA, compose_train, run_module, tiny_dataset

NUM_CLASSES = 7  # the synthetic dataset's
TIE = 1e-4  # two scores this close (relative) may swap between runtimes
SCORES = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny FCN-32s trained 6 steps on torchvision-normalised synthetic images."""
    root = tmp_path_factory.mktemp("score_paths")
    data = tiny_dataset(root / "data")
    run = root / "run"
    train(compose_train(data, run, "trainer.max_steps=6", "trainer.val_check_interval=6",
                        "optim.lr=0.05"))  # fmt: skip
    ckpt = run / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["normalization"] == (
        "torchvision"
    )
    return data, ckpt


def preset(data: Path) -> list[str]:
    """The synthetic preset over the checkpoint's data (its generator's settings, so it
    regenerates nothing), normalisation left at the preset's default (caffe in eval)."""
    spec = [f"data.synthetic.{key}={value}" for key, value in TINY_DATA.items()]
    return ["data=synthetic", f"paths.data_dir={data}", "data.num_workers=0", *spec]


def eval_in_process(ckpt, out, *args, monkeypatch, capfd) -> tuple[dict, str, str]:
    """``python -m fcn_lightning.eval`` as typed, in this process (Hydra's main)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    status = run_entry("eval", [f"ckpt_path={ckpt}", "num_workers=0", "trainer=cpu",
                                f"hydra.run.dir={out}", *args], monkeypatch)  # fmt: skip
    stdout, stderr = capfd.readouterr()
    assert status == 0, stderr[-3000:]
    return (
        json.loads((out / "metrics.json").read_text()),
        (out / "metrics.md").read_text(),
        (stdout + stderr),
    )


# -- the independent scorer: NumPy, Pillow and onnxruntime only -------------------------


def numpy_scores(hist: np.ndarray) -> dict:
    """metrics.py's docstring formulas: pixel acc sum(n_ii)/sum(t_i); mean acc
    mean_i(n_ii/t_i); IU_i = n_ii/(t_i + sum_j n_ji - n_ii), its mean over classes present
    in truth or prediction; f.w. IU sum_i t_i IU_i / sum(t_i) over classes present in truth."""
    hist = hist.astype(np.float64)
    diag, truth, pred = np.diag(hist), hist.sum(1), hist.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = diag / truth
        iu = diag / (truth + pred - diag)
    present = truth > 0
    return {
        "pixel_acc": diag.sum() / hist.sum(),
        "mean_acc": np.nanmean(acc),
        "mean_iu": np.nanmean(iu),
        "fw_iu": (truth[present] * iu[present]).sum() / hist.sum(),
        "iu": iu,
    }


def onnx_confusion(onnx_path: Path, voc: Path, normalization: dict) -> tuple[np.ndarray, float]:
    """The confusion matrix of the exported model over the val split, the input
    normalised as the export's sidecar says; and the smallest gap between a pixel's two
    best scores, relative to the largest score (how near a pixel came to a tie)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    order = [0, 1, 2] if normalization["channel_order"] == "RGB" else [2, 1, 0]
    mean = np.array(normalization["mean"], np.float32)[:, None, None]
    std = np.array(normalization["std"], np.float32)[:, None, None]
    hist, gap = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64), np.inf
    for image_id in (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split():
        rgb = np.asarray(Image.open(voc / "JPEGImages" / f"{image_id}.jpg").convert("RGB"))
        x = rgb.transpose(2, 0, 1)[order].astype(np.float32) * normalization["scale"] - mean
        x = (x / std)[None].astype(np.float32)
        scores = session.run(None, {"image": x})[0][0]
        pred = scores.argmax(0)
        best_two = np.sort(scores, axis=0)[-2:]
        gap = min(gap, float((best_two[1] - best_two[0]).min() / np.abs(scores).max()))
        truth = np.asarray(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))
        keep = truth < NUM_CLASSES  # 255 = void
        hist += np.bincount(NUM_CLASSES * truth[keep].astype(np.int64) + pred[keep],
                            minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)  # fmt: skip
    return hist, gap


def test_every_scoring_path_gives_the_same_table(trained, tmp_path, monkeypatch, capfd):
    pytest.importorskip("onnxruntime")
    data, ckpt = trained
    tables = {}

    # eval with the checkpoint's own data (no data=)
    tables["own data"] = eval_in_process(
        ckpt, tmp_path / "own", f"data_dir={data}", monkeypatch=monkeypatch, capfd=capfd
    )
    # eval with the preset: its default normalisation (caffe) gives way to the checkpoint's
    tables["data=synthetic"] = eval_in_process(
        ckpt, tmp_path / "preset", *preset(data), monkeypatch=monkeypatch, capfd=capfd
    )
    assert "data.normalization=caffe (a preset's default) replaced by the checkpoint's " \
        "torchvision" in tables["data=synthetic"][2]  # fmt: skip
    # two processes, the preset again (each rank settles the normalisation itself)
    out = tmp_path / "ddp"
    done = run_module("fcn_lightning.eval", f"ckpt_path={ckpt}", "trainer=ddp_cpu",
                      "num_workers=0", f"hydra.run.dir={out}", *preset(data), cwd=tmp_path,
                      timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MEMBER: 2/2" in done.stderr + done.stdout  # two processes really ran
    tables["ddp_cpu"] = (
        json.loads((out / "metrics.json").read_text()),
        (out / "metrics.md").read_text(),
        "",
    )

    reference, reference_md, _ = tables["own data"]
    assert reference["split"] == "synthetic_val"
    for path, (scores, table, _) in tables.items():
        assert table == reference_md, path
        for name in SCORES:
            assert scores[name] == reference[name], (path, name)
        assert scores["iu"] == pytest.approx(reference["iu"], abs=0, nan_ok=True), path
        assert scores["loss"] == pytest.approx(reference["loss"], rel=1e-6), path

    # ONNX: exported by the real entry point, scored here
    onnx_path = tmp_path / "model.onnx"
    status = run_entry("export", [f"ckpt_path={ckpt}", f"out={onnx_path}", "check=false",
                                  f"hydra.run.dir={tmp_path / 'export'}"], monkeypatch)  # fmt: skip
    assert status == 0, capfd.readouterr().err[-3000:]
    sidecar = json.loads(onnx_path.with_name("model.onnx.json").read_text())
    assert sidecar["normalization"]["name"] == "torchvision"
    assert sidecar["class_names"] == list(reference["iu"])
    voc = data / "synthetic"
    hist, gap = onnx_confusion(onnx_path, voc, sidecar["normalization"])
    # The export is checked to 1e-4 (relative) of PyTorch's scores; no pixel's two best
    # classes are that close, so no argmax can differ and the counts must be equal.
    assert gap > TIE, f"a pixel's two best scores differ by only {gap:.1e}: retrain"
    by_numpy = numpy_scores(hist)
    for name in SCORES:
        assert by_numpy[name] == pytest.approx(reference[name], abs=1e-12), name
    ius = np.array(list(reference["iu"].values()), float)
    np.testing.assert_allclose(by_numpy["iu"], ius, atol=1e-12)

    # And the comparison has teeth: fed Caffe-normalised input (what the preset's default
    # would have fed it), the same model predicts other classes and scores otherwise.
    caffe = {"channel_order": "BGR", "scale": 1.0, "std": [1.0, 1.0, 1.0],
             "mean": [104.00698793, 116.66876762, 122.67891434]}  # fmt: skip
    wrong_hist, _ = onnx_confusion(onnx_path, voc, caffe)
    assert np.abs(wrong_hist - hist).sum() > 0.02 * hist.sum()
    wrong = numpy_scores(wrong_hist)
    assert max(abs(wrong[name] - reference[name]) for name in SCORES) > 1e-3
    print(
        {path: round(100 * scores["mean_iu"], 2) for path, (scores, _, _) in tables.items()},
        "onnx",
        round(100 * by_numpy["mean_iu"], 2),
        "caffe-fed",
        round(100 * wrong["mean_iu"], 2),
    )


def test_eval_with_a_preset_never_rewrites_the_dataset(trained, tmp_path, monkeypatch, capfd):
    """The synthetic preset's own generator settings differ from the tree's: scoring must
    not regenerate (overwrite) the tree, whatever it then says."""
    data, ckpt = trained
    tree = data / "synthetic"
    before = {p: p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}
    monkeypatch.chdir(tmp_path)
    import fcn_lightning.eval as entry

    monkeypatch.setattr("sys.argv", ["eval", f"ckpt_path={ckpt}", "data=synthetic",
                                     f"paths.data_dir={data}", "data.num_workers=0",
                                     f"hydra.run.dir={tmp_path / 'eval'}"])  # fmt: skip
    with contextlib.suppress(SystemExit):
        entry.main()
    capfd.readouterr()
    after = {p: p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}
    assert after == before
