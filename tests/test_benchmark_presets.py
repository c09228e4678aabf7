"""The other benchmarks from their presets, through the real entry points, on fake trees
in the archives' layouts (tests/data_fakes.py): train, eval, predict, export, resume.

Every score is checked against an independent computation: the labels are the ones the
fake tree wrote, turned into classes by the reference layers' rules re-implemented here
(SIFT Flow: semantic 1..33 -> 0..32, geometric 1..3 -> 0..2, the rest void; NYUDv2:
label - 1 with 0 -> 255; PASCAL-Context: the tree's own task ids), and the predictions
either predict's masks or, for NYUD's two streams, the network run on inputs normalised
here by the reference's formulas."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fcn_lightning.module import load_module
from tests.data_fakes import (
    SIFTFLOW_FOLDER,
    fake_ids,
    nyud_reference_ids,
    siftflow_list,
    write_nyud_tree,
    write_pascal_context_tree,
    write_siftflow_tree,
)
from tests.train_helpers import run_in_process, run_module

TINY = [
    "model.width=0.03125", "model.pretrained=false", "trainer=cpu", "trainer.max_steps=2",
    "trainer.val_check_interval=2", "+trainer.limit_val_batches=2",
    "trainer.num_sanity_val_steps=0", "trainer.enable_model_summary=false", "logger=csv",
    "data.num_workers=0",
]  # fmt: skip
NYUD_BGR_MEAN = np.array((116.190, 97.203, 92.318))
NYUD_HHA_MEAN = np.array((132.431, 94.076, 118.477))


def fast_hist(truth, pred, n):  # the reference's score.py
    k = (truth >= 0) & (truth < n)
    return np.bincount(n * truth[k].astype(int) + pred[k], minlength=n**2).reshape(n, n)


def read_confusion(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return np.array([[int(v) for v in row[1:]] for row in rows[1:]])


def score_py(hist):
    """pixel acc, mean acc, mean IU, f.w. IU as score.py computes them."""
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        per_class = np.diag(hist) / hist.sum(1)
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        freq = hist.sum(1) / hist.sum()
        return acc, np.nanmean(per_class), np.nanmean(iu), (freq[freq > 0] * iu[freq > 0]).sum()


def check_scores(metrics, hist):
    for key, value in zip(
        ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"), score_py(hist), strict=True
    ):
        assert metrics[key] == pytest.approx(value), key


def train(tmp_path, monkeypatch, capfd, *overrides, run="run"):
    done = run_in_process(
        "fcn_lightning.train", *overrides, *TINY, f"hydra.run.dir={tmp_path / run}",
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / run / "checkpoints" / "last.ckpt"


def evaluate(tmp_path, monkeypatch, capfd, ckpt, data_dir, *overrides):
    out = tmp_path / "eval"
    done = run_in_process(
        "fcn_lightning.eval", f"ckpt_path={ckpt}", f"paths.data_dir={data_dir}",
        "num_workers=0", "trainer=cpu", f"hydra.run.dir={out}", *overrides,
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "metrics.json").read_text())


def predict(tmp_path, monkeypatch, capfd, ckpt, images):
    listing = tmp_path / "inputs.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    out = tmp_path / "predictions"
    done = run_in_process(
        "fcn_lightning.predict", f"ckpt_path={ckpt}", f"inputs={listing}", f"out_dir={out}",
        "device=cpu", f"hydra.run.dir={tmp_path / 'predict'}",
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def export_onnx(tmp_path, monkeypatch, capfd, ckpt):
    out = tmp_path / "model.onnx"
    done = run_in_process(
        "fcn_lightning.export", f"ckpt_path={ckpt}", f"out={out}", "example_size=[32,32]",
        f"hydra.run.dir={tmp_path / 'export'}", cwd=tmp_path, monkeypatch=monkeypatch,
        capfd=capfd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.with_name(out.name + ".json").read_text())


# -- SIFT Flow: two heads ---------------------------------------------------------------


@pytest.fixture(scope="module")
def siftflow(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("siftflow")
    return data_dir, write_siftflow_tree(data_dir, size=(32, 32))


def siftflow_truth(tree, image_id):
    """The reference layer's rules: semantic 0 void, 1..33 -> 0..32; geometric -1, 0
    void, 1..3 -> 0..2 (void as -1 here, which fast_hist leaves out)."""
    sem, geo = tree.sem[image_id].astype(int), tree.geo[image_id].astype(int)
    return np.where(sem > 0, sem - 1, -1), np.where(geo > 0, geo - 1, -1)


@pytest.mark.slow
def test_siftflow_trains_scores_predicts_and_exports_both_heads(
    siftflow, tmp_path, monkeypatch, capfd
):
    data_dir, tree = siftflow
    ckpt = train(tmp_path, monkeypatch, capfd, "data=siftflow", "row=fcn16s_staged",
                 f"paths.data_dir={data_dir}")  # fmt: skip
    # Staged: FCN-32s first, then FCN-16s from it, in one job.
    assert (tmp_path / "run" / "stages").is_dir()
    eval_dir, metrics = evaluate(tmp_path, monkeypatch, capfd, ckpt, data_dir)
    assert metrics["split"] == "siftflow_test"
    test_ids = siftflow_list("test")
    images = [tree.root / "Images" / SIFTFLOW_FOLDER / f"{i}.jpg" for i in test_ids]
    masks = predict(tmp_path, monkeypatch, capfd, ckpt, images)
    sem_hist, geo_hist = np.zeros((33, 33), np.int64), np.zeros((3, 3), np.int64)
    for i in test_ids:
        sem, geo = siftflow_truth(tree, i)
        sem_hist += fast_hist(sem.ravel(), np.array(Image.open(masks / f"{i}.png")).ravel(), 33)
        geo_pred = np.array(Image.open(masks / f"{i}_geo.png")).ravel()
        geo_hist += fast_hist(geo.ravel(), geo_pred, 3)
    np.testing.assert_array_equal(read_confusion(eval_dir / "confusion.csv"), sem_hist)
    np.testing.assert_array_equal(read_confusion(eval_dir / "confusion_geo.csv"), geo_hist)
    check_scores(metrics, sem_hist)
    check_scores(metrics["heads"]["geo"], geo_hist)
    # Classes the test set lacks (none of its labels): mean_iu_present leaves them out.
    present = sem_hist.sum(1) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iu = np.diag(sem_hist) / (sem_hist.sum(1) + sem_hist.sum(0) - np.diag(sem_hist))
    assert metrics["mean_iu_present"] == pytest.approx(np.nanmean(iu[present]))
    meta = export_onnx(tmp_path, monkeypatch, capfd, ckpt)
    assert [(h["name"], h["num_classes"]) for h in meta["heads"]] == [("sem", 33), ("geo", 3)]


# -- NYUDv2: two streams ----------------------------------------------------------------


@pytest.fixture(scope="module")
def nyud(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("nyud")
    # The reference's lists in full (a shorter list is refused as not the paper's split).
    return data_dir, write_nyud_tree(data_dir, size=(32, 40)), nyud_reference_ids()


def nyud_color_hha(tree, image_id):
    """The 6-channel input as nyud_layers.py builds it: colour BGR - mean, HHA - mean."""
    color = tree.color[image_id][:, :, ::-1].astype(np.float64) - NYUD_BGR_MEAN
    hha = tree.hha[image_id].astype(np.float64) - NYUD_HHA_MEAN
    return torch.from_numpy(np.concatenate([color, hha], 2).transpose(2, 0, 1).copy()).float()


@pytest.mark.slow
def test_nyud_late_fusion_trains_scores_as_numpy_and_is_refused_by_predict(
    nyud, tmp_path, monkeypatch, capfd
):
    data_dir, tree, lists = nyud
    ckpt = train(tmp_path, monkeypatch, capfd, "data=nyud", "row=nyud_color_hha",
                 f"paths.data_dir={data_dir}")  # fmt: skip
    eval_dir, metrics = evaluate(tmp_path, monkeypatch, capfd, ckpt, data_dir)
    assert metrics["split"] == "nyud_test"
    module = load_module(ckpt).eval()
    hist = np.zeros((40, 40), np.int64)
    with torch.no_grad():
        for i in lists["test"]:
            scores = module.model(nyud_color_hha(tree, i)[None])[0].numpy()
            truth = tree.segmentation[i].astype(int) - 1  # 0 void -> -1, left out
            hist += fast_hist(truth.ravel(), scores.argmax(0).ravel(), 40)
    np.testing.assert_array_equal(read_confusion(eval_dir / "confusion.csv"), hist)
    check_scores(metrics, hist)
    # An image file holds no HHA: predict refuses in one line, writing nothing.
    image = tree.path("color", lists["test"][0])
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{image}\n")
    refused = run_in_process(
        "fcn_lightning.predict", f"ckpt_path={ckpt}", f"inputs={listing}",
        f"out_dir={tmp_path / 'masks'}", "device=cpu", cwd=tmp_path, monkeypatch=monkeypatch,
        capfd=capfd,
    )  # fmt: skip
    assert refused.returncode != 0
    assert refused.stderr.strip().startswith("error: ckpt_path=")
    assert "data.input=color_hha" in refused.stderr
    assert not (tmp_path / "masks").exists()
    meta = export_onnx(tmp_path, monkeypatch, capfd, ckpt)
    assert meta["input"]["data_input"] == "color_hha"


@pytest.mark.slow
def test_resuming_nyud_with_another_input_is_refused_and_leaves_the_run_intact(
    nyud, tmp_path, monkeypatch, capfd
):
    data_dir, _, _ = nyud
    common = ["data=nyud", "row=nyud_color", f"paths.data_dir={data_dir}"]
    ckpt = train(tmp_path, monkeypatch, capfd, *common)
    run = ckpt.parents[1]
    before = run_files(run)
    again = run_in_process(
        "fcn_lightning.train", *common, *TINY, "data.input=hha", "trainer.max_steps=4",
        f"hydra.run.dir={run}", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert again.returncode != 0
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, again.stderr[-2000:]
    assert "trained with model.input=color but this run has data.input=hha" in errors[0]
    after = run_files(run)
    assert after.keys() == before.keys()
    for path, content in before.items():  # logs may only grow
        assert (
            after[path][: len(content)] == content
            if path.suffix == ".log"
            else after[path] == content
        )


def run_files(run):
    """A run dir's files and their bytes, Hydra's own .hydra/ notes aside (rewritten on
    every launch)."""
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and ".hydra" not in p.parts}


# -- PASCAL-Context ---------------------------------------------------------------------


@pytest.mark.slow
def test_pascal_context_trains_staged_fcn8s_and_scores_60_classes(tmp_path, monkeypatch, capfd):
    data_dir = tmp_path / "data"
    train_ids, val_ids = fake_ids(0, 4), fake_ids(4, 3)
    tree = write_pascal_context_tree(data_dir, train_ids, val_ids, size=(32, 40))
    ckpt = train(tmp_path, monkeypatch, capfd, "data=pascal_context", "row=fcn8s_staged",
                 f"paths.data_dir={data_dir}", "data.expected_counts=null")  # fmt: skip
    eval_dir, metrics = evaluate(tmp_path, monkeypatch, capfd, ckpt, data_dir)
    images = [tree.voc / "JPEGImages" / f"{i}.jpg" for i in val_ids]
    masks = predict(tmp_path, monkeypatch, capfd, ckpt, images)
    hist = np.zeros((60, 60), np.int64)
    for i in val_ids:
        pred = np.array(Image.open(masks / f"{i}.png")).ravel()
        hist += fast_hist(tree.expected(i).astype(int).ravel(), pred, 60)
    np.testing.assert_array_equal(read_confusion(eval_dir / "confusion.csv"), hist)
    check_scores(metrics, hist)
    assert len(metrics["iu"]) == 60 and next(iter(metrics["iu"])) == "background"


def test_verify_data_prints_each_benchmarks_counts_from_the_command_line(siftflow, nyud, tmp_path):
    sift_dir, _ = siftflow
    done = run_module("fcn_lightning.verify_data", "data=siftflow", f"paths.data_dir={sift_dir}",
                      f"hydra.run.dir={tmp_path / 'v1'}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = split_rows(done.stdout)
    assert rows == {"siftflow_trainval": [2486] * 3, "siftflow_test": [200] * 3}
    nyud_dir, _, _ = nyud
    done = run_module("fcn_lightning.verify_data", "data=nyud", f"paths.data_dir={nyud_dir}",
                      f"hydra.run.dir={tmp_path / 'v2'}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert split_rows(done.stdout) == {"nyud_trainval": [795, 795, 795], "nyud_test": [654] * 3}
    # Partial splits: refused with the key to set, which then accepts them.
    ctx_dir = tmp_path / "ctx"
    write_pascal_context_tree(ctx_dir, fake_ids(0, 4), fake_ids(4, 3), size=(16, 16))
    args = ["data=pascal_context", f"paths.data_dir={ctx_dir}"]
    done = run_module("fcn_lightning.verify_data", *args, cwd=tmp_path)
    assert done.returncode != 0
    assert "set data.expected_counts.pascal_context_train=null" in done.stdout + done.stderr
    done = run_module("fcn_lightning.verify_data", *args, "data.expected_counts=null",
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert split_rows(done.stdout) == {"pascal_context_train": [4, 4], "pascal_context_val": [3, 3]}


def split_rows(text):
    """verify_data's splits table: split name -> its numbers (images, expected, ok)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 5 and cells[0] and cells[0][0].isalpha() and cells[2].isdigit():
            rows[cells[0]] = [int(c) for c in (cells[2], cells[3], cells[4]) if c.isdigit()]
    return rows


@pytest.mark.slow
def test_siftflow_under_ddp_scores_both_heads_as_one_process_evaluates_them(siftflow, tmp_path):
    """Two gloo ranks each validate half the test split; the logged scores of both heads
    are those of the whole split, as a one-process eval of the same checkpoint gives."""
    data_dir, _ = siftflow
    run = tmp_path / "run"
    tiny = [o for o in TINY if o not in ("trainer=cpu", "+trainer.limit_val_batches=2")]
    done = run_module(
        "fcn_lightning.train", "data=siftflow", "model=fcn32s", f"paths.data_dir={data_dir}",
        *tiny, "trainer=ddp_cpu", f"hydra.run.dir={run}", cwd=tmp_path, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with open(run / "csv" / "metrics.csv", newline="") as f:
        validations = [row for row in csv.DictReader(f) if row.get("val/mean_iu")]
    assert len(validations) == 1  # at step 2, the last: last.ckpt holds its weights
    logged = validations[0]
    evaluated = run_module(
        "fcn_lightning.eval", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        f"paths.data_dir={data_dir}", "num_workers=0", "trainer=cpu",
        f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("pixel_acc", "mean_iu", "fw_iu"):
        assert float(logged[f"val/{key}"]) == pytest.approx(metrics[key]), key
        assert float(logged[f"val/geo/{key}"]) == pytest.approx(metrics["heads"]["geo"][key])
