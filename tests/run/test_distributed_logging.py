"""Processes and records: DDP on CPU equals one process (metrics and loss), a rank's failure
ends a DDP eval, multirun + DDP makes one run per sweep point, and an offline W&B run holds
the logged metrics."""

from __future__ import annotations

import csv
import json
import shutil
import time

import pytest
import torch
import torch.nn.functional as F

from fcn_lightning.data.datamodule import SegmentationDataModule
from fcn_lightning.module import load_module
from fcn_lightning.run.loggers import wandb_logged_in
from fcn_lightning.train import train
from tests.fault_helpers import processes_mentioning
from tests.train_helpers import compose_train, run_module, sweep_overrides, tiny_dataset
from tests.wandb_records import history, read_finished_records, run_info

pytestmark = pytest.mark.slow

# Odd, so the two ranks hold unequal shares (8 and 7): a sampler that pads ranks would count
# one image twice, and a mean of the ranks' means would weigh rank 1's images by 8/7.
NUM_VAL = 15


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data"), num_val=NUM_VAL)


def cli_overrides(data_dir, out_dir):
    tiny = sweep_overrides(data_dir, out_dir)
    return [o.replace("num_val=4", f"num_val={NUM_VAL}") for o in tiny]


@pytest.fixture(scope="module")
def checkpoint(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    overrides = (f"data.synthetic.num_val={NUM_VAL}", "optim.lr=0.05", "model=fcn16s")
    train(compose_train(data_dir, run, *overrides))
    return run / "checkpoints" / "last.ckpt"


def with_loss_normalize(checkpoint, normalize):
    """The checkpoint's weights under `loss.normalize=normalize` (a hyperparameter only)."""
    saved = torch.load(checkpoint, weights_only=True)
    saved["hyper_parameters"]["loss"]["normalize"] = normalize
    path = checkpoint.with_name(f"loss_{normalize}.ckpt")
    torch.save(saved, path)
    return path


def whole_split_loss(checkpoint):
    """The val loss of the whole split taken as one batch, computed here: the summed
    cross-entropy over the number of images (normalize=sum) or of valid pixels (mean)."""
    module = load_module(checkpoint).eval()
    hparams = torch.load(checkpoint, weights_only=True)["datamodule_hyper_parameters"]
    datamodule = SegmentationDataModule(**{**hparams, "num_workers": 0})
    datamodule.setup("validate")
    total, images, pixels = 0.0, 0, 0
    with torch.no_grad():
        for batch, labels in datamodule.val_dataloader():
            loss = F.cross_entropy(module(batch), labels.long(), ignore_index=255, reduction="sum")
            total += loss.item()
            images, pixels = images + len(batch), pixels + int((labels != 255).sum())
    assert images == NUM_VAL
    return total / (images if module.loss_normalize == "sum" else pixels)


@pytest.mark.parametrize("normalize", ["mean", "sum"])
def test_ddp_cpu_validation_equals_single_process(checkpoint, data_dir, tmp_path, normalize):
    checkpoint = with_loss_normalize(checkpoint, normalize)
    results = {}
    for trainer in ("cpu", "ddp_cpu"):
        out = tmp_path / trainer
        done = run_module(
            "fcn_lightning.eval", f"ckpt_path={checkpoint}", f"trainer={trainer}", "num_workers=0",
            f"data_dir={data_dir}", f"hydra.run.dir={out}", cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        results[trainer] = json.loads((out / "metrics.json").read_text())
    assert "MEMBER: 2/2" in done.stderr + done.stdout  # two processes really ran
    single, ddp = results["cpu"], results["ddp_cpu"]
    assert single["mean_iu"] > 0
    for name in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert ddp[name] == pytest.approx(single[name], abs=1e-9), name
    assert ddp["iu"] == pytest.approx(single["iu"], nan_ok=True)
    assert single["loss"] == pytest.approx(whole_split_loss(checkpoint), rel=1e-5)
    assert ddp["loss"] == pytest.approx(single["loss"], rel=1e-5)


def test_ddp_eval_with_a_bad_image_on_rank_0_ends_naming_it(checkpoint, data_dir, tmp_path):
    """Rank 0 (the launcher) fails on a corrupt image that only it reads: the job exits
    non-zero at once with the file's name, and no rank is left running."""
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    bad = data / "synthetic" / "JPEGImages" / "val_00002.jpg"  # rank 0's share either way
    bad.write_bytes(bad.read_bytes()[:100])
    out = tmp_path / "eval"
    start = time.monotonic()
    done = run_module(
        "fcn_lightning.eval", f"ckpt_path={checkpoint}", "trainer=ddp_cpu", "num_workers=0",
        "trainer.ddp_timeout_s=30", f"data_dir={data}", f"hydra.run.dir={out}", cwd=tmp_path,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "val_00002.jpg" in done.stderr.strip().splitlines()[-1]
    assert time.monotonic() - start < 60  # well under the 30 s a waiting rank would add
    deadline = time.monotonic() + 10
    while processes_mentioning(str(out)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(str(out)) == []
    assert not (out / "metrics.json").exists()


def test_ddp_resume_ends_exactly_where_an_uninterrupted_ddp_run_does(tmp_path):
    """Two ranks whose random streams part ways (loss sampling and dropout draw one number
    per cell, and the ranks see images of other sizes: 80 px and 60 px sides, 3 and 2 cells
    at stride 32): each rank's generators are saved and come back to that rank, so the
    resumed job equals the uninterrupted one."""
    data_dir = tiny_dataset(tmp_path / "data", num_val=5, image_size=80)
    tiny = [o.replace("image_size=48", "image_size=80") for o in cli_overrides(data_dir, tmp_path)]
    common = [
        *tiny, "trainer=ddp_cpu", "model=fcn32s", "optim.lr=0.05", "loss.keep_prob=0.5",
        "data.hflip=true", "trainer.max_steps=7", "trainer.val_check_interval=3",
        "trainer.deterministic=true",
    ]  # fmt: skip
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    stop = ["+callbacks.stop._target_=tests.train_helpers.StopAfterValidation",
            "+callbacks.stop.step=3", "+trainer.min_epochs=0"]  # fmt: skip
    for run, extra in ((whole, []), (parts, stop), (parts, ["ckpt_path=last"])):
        done = run_module("fcn_lightning.train", *common, *extra, f"hydra.run.dir={run}",
                          cwd=tmp_path, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        if extra == stop:
            saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
            assert saved["global_step"] == 3
            assert len(saved["rng_states"]) == 2  # one per rank
    expected = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(parts / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == expected["global_step"] == 7
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name


def test_multirun_with_ddp_makes_exactly_one_run_per_point(data_dir, tmp_path):
    logs, sweep = tmp_path / "logs", tmp_path / "sweep"
    done = run_module(
        "fcn_lightning.train", "-m", *cli_overrides(data_dir, tmp_path), "trainer=ddp_cpu",
        "seed=1,2", "trainer.max_steps=2", "trainer.val_check_interval=2",
        "trainer.num_sanity_val_steps=0", f"paths.log_dir={logs}", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_fcn32s", "1_fcn32s"]
    for job in jobs:
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        with open(sweep / job / "csv" / "metrics.csv") as f:
            assert any(row.get("val/mean_iu") for row in csv.DictReader(f))
    # The re-launched rank-1 processes joined their job instead of starting runs of their own.
    assert not logs.exists() or not any(logs.rglob("*.ckpt"))
    assert (done.stdout + done.stderr).count("MEMBER: 2/2") == 2


def test_offline_wandb_run_holds_the_logged_metrics(data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # not logged in
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    overrides = ("logger=many", f"data.synthetic.num_val={NUM_VAL}", "group=study", "tags=[t1]")
    cfg = compose_train(data_dir, tmp_path, *overrides)
    metrics = train(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "expected one offline W&B run (no network, not logged in)"
    records = read_finished_records(next(runs[0].glob("run-*.wandb")))
    rows = history(records)
    logged = {key: value for row in rows for key, value in row.items()}  # last value wins
    assert logged["val/mean_iu"] == pytest.approx(metrics["val/mean_iu"])
    assert logged["val/loss"] == pytest.approx(metrics["val/loss"])
    assert logged["val_iu/background"] == pytest.approx(metrics["val_iu/background"])
    # W&B flattens an image list into val/samples/{count,height,width,...}.
    assert any(row.get("val/samples/count") == 4 for row in rows)
    media = next(row for row in rows if "val/per_class_iu/path" in row)
    assert media["val/confusion_matrix/_type"] == "image-file"
    table = json.loads((runs[0] / "files" / media["val/per_class_iu/path"]).read_text())
    assert table["columns"] == ["class", "iu"]
    for name, iu in table["data"]:
        assert iu == pytest.approx(metrics[f"val_iu/{name}"], nan_ok=True), name
    run = run_info(records)
    assert run.run_group == "study" and list(run.tags) == ["t1"]
    assert run.project == "fcn-lightning"
    configs = [r.config for r in records if r.WhichOneof("record_type") == "config"]
    assert any("paper_lr" in item.value_json for c in configs for item in c.update)
    assert (tmp_path / "csv" / "metrics.csv").is_file()  # the local record is always there


def test_wandb_goes_online_only_with_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not wandb_logged_in()  # no netrc file at all
    (tmp_path / "netrc").write_text("machine example.org login u password p\n")
    assert not wandb_logged_in()  # credentials, but for another host
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password secret\n")
    assert wandb_logged_in()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert not wandb_logged_in()  # a private server needs its own entry
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_logged_in()
