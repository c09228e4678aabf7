"""Checkpoint reading at the boundary: a broken checkpoint names the intact ones beside it,
newest first; one from a newer fcn-lightning is refused naming the unknown keys, while its
weights stay usable (model.init_from)."""

from __future__ import annotations

import pytest
import torch

from fcn_lightning.errors import WeightsError
from fcn_lightning.models.checkpoints import read_checkpoint, read_state_dict
from fcn_lightning.module import FCNModule

MODEL = {"variant": "fcn32s", "num_classes": 3, "width": 0.0625, "geometry": "aligned",
         "name": "fcn32s", "init_from": None, "init_stages": []}  # fmt: skip


def lightning_checkpoint(step: int, **model) -> dict:
    module = FCNModule(model={**MODEL, **model}, optim={"lr": 1e-3}, normalization="torchvision")
    return {"global_step": step, "state_dict": module.state_dict(), "loops": {},
            "hyper_parameters": dict(module.hparams)}  # fmt: skip


def test_a_broken_checkpoint_names_the_intact_ones_newest_first(tmp_path):
    for name, step in (("step000002-miu0.1000.ckpt", 2), ("step000006-miu0.0500.ckpt", 6),
                       ("step000004-miu0.2000.ckpt", 4)):  # fmt: skip
        torch.save(lightning_checkpoint(step), tmp_path / name)
    (tmp_path / "step000008-miu0.3000.ckpt").write_bytes(b"PK\x03\x04 cut short")
    last = tmp_path / "last.ckpt"
    last.write_bytes((tmp_path / "step000006-miu0.0500.ckpt").read_bytes()[:5000])
    with pytest.raises(WeightsError) as info:
        read_checkpoint(last, key="ckpt_path")
    message = str(info.value)
    assert message.startswith(f"ckpt_path={last}: not a readable PyTorch weights file")
    assert (
        "newest first: step000006-miu0.0500.ckpt (step 6), step000004-miu0.2000.ckpt (step 4), "
        "step000002-miu0.1000.ckpt (step 2):"
    ) in message
    assert message.endswith(f"use the newest with ckpt_path={tmp_path}/step000006-miu0.0500.ckpt")
    assert "step000008" not in message  # broken too


def test_a_broken_file_alone_is_still_re_downloaded(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match=r"re-download or re-export it$"):
        read_checkpoint(path, key="model.weights_path")


def test_this_version_knows_every_key_it_writes(tmp_path):
    path = tmp_path / "now.ckpt"
    torch.save(lightning_checkpoint(2), path)
    assert read_checkpoint(path, key="ckpt_path")["global_step"] == 2


def test_a_newer_checkpoint_is_refused_by_name_but_its_weights_still_load(tmp_path):
    checkpoint = lightning_checkpoint(2)
    checkpoint["hyper_parameters"]["model"]["attention_gate"] = True
    checkpoint["hyper_parameters"]["ema_decay"] = 0.99
    path = tmp_path / "newer.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path, key="ckpt_path")
    message = str(info.value)
    assert "written by a newer fcn-lightning" in message
    assert "ema_decay, model.attention_gate are unknown" in message
    assert f"model.init_from={path}" in message
    assert read_state_dict(path, key="model.init_from").keys() == checkpoint["state_dict"].keys()


def test_a_run_folder_given_for_a_checkpoint_names_the_checkpoints_in_it(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("step000002-miu0.1000.ckpt", "last.ckpt"):
        torch.save(lightning_checkpoint(2), run / "checkpoints" / name)
    with pytest.raises(WeightsError) as info:
        read_checkpoint(run, key="ckpt_path")
    assert str(info.value) == (
        f"ckpt_path={run}: is a folder, not a checkpoint file; it holds checkpoints/last.ckpt, "
        f"checkpoints/step000002-miu0.1000.ckpt: e.g. ckpt_path={run}/checkpoints/last.ckpt"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match=r"is a folder with no checkpoints in it; name a \.ckpt"):
        read_checkpoint(empty, key="ckpt_path")
