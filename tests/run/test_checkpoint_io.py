"""The atomic checkpoint writer when the disk refuses a write: one line naming the file
and the reason, the old file byte for byte, no partial file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fcn_lightning.errors import FCNError
from fcn_lightning.run.checkpoint_io import atomic_torch_save, partial_path
from tests.train_helpers import ROOT


def test_a_full_disk_is_named_and_the_old_checkpoint_kept(tmp_path):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.ones(10)}, target)
    before = target.read_bytes()
    # /dev/full answers every write with ENOSPC, as a full disk does.
    os.symlink("/dev/full", partial_path(target))
    with pytest.raises(FCNError) as info:
        atomic_torch_save({"step": 2, "w": torch.zeros(100_000)}, target)
    message = str(info.value)
    assert "\n" not in message
    assert f"could not write checkpoint {target}: No space left on device (ENOSPC)" in message
    assert "it is as it was" in message and f"free space on the disk of {tmp_path}" in message
    assert isinstance(info.value, OSError)  # callers catching OSError still do
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


EFBIG_SCRIPT = """
import resource, signal, sys
import torch
from fcn_lightning.errors import FCNError
from fcn_lightning.run.checkpoint_io import atomic_torch_save
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
try:
    atomic_torch_save({"w": torch.zeros(1_000_000)}, sys.argv[1])
except FCNError as error:
    print(error)
"""


def test_a_file_size_limit_is_named_with_ulimit(tmp_path):
    target = tmp_path / "step000004.ckpt"
    done = subprocess.run(
        [sys.executable, "-c", EFBIG_SCRIPT, str(target)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    message = done.stdout.strip()
    assert f"could not write checkpoint {target}: File too large (EFBIG)" in message
    assert "it was not written" in message and "ulimit -f unlimited" in message
    assert list(tmp_path.iterdir()) == []


def test_other_failures_pass_through_unchanged(tmp_path, monkeypatch):
    def broken(obj, f, *args, **kwargs):
        raise ValueError("not serialisable")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(ValueError, match="not serialisable"):
        atomic_torch_save({"step": 1}, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []
