"""paths.data_dir that cannot hold datasets: one line naming the key, the path and the fix,
from the data module and from verify_data; an empty one never touches the current folder."""

from __future__ import annotations

import os

import pytest

from fcn_lightning.data.datamodule import SegmentationDataModule
from fcn_lightning.data.sources import data_dir_problem
from fcn_lightning.errors import ConfigError, DataError
from tests.train_helpers import run_module


def synthetic_module(data_dir: str, **kwargs) -> SegmentationDataModule:
    spec = {"seed": 0, "num_train": 2, "num_val": 2, "image_size": 32}
    return SegmentationDataModule(
        train_split="synthetic_train", val_split="synthetic_val", data_dir=data_dir,
        num_classes=7, classes="synthetic", num_workers=0, synthetic=spec, **kwargs,
    )  # fmt: skip


@pytest.fixture
def places(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    loop = tmp_path / "loop"
    os.symlink("loop", loop)
    return {
        "file": (afile, f"paths.data_dir={afile} is a file, not a folder"),
        "below a file": (afile / "sub", f"paths.data_dir={afile / 'sub'}: {afile} is a file"),
        "loop": (loop, f"paths.data_dir={loop} is a loop of symbolic links ({loop} -> {loop})"),
    }


@pytest.mark.parametrize("kind", ["file", "below a file", "loop"])
@pytest.mark.parametrize("generate", [False, True])
def test_an_unusable_data_dir_is_named_when_reading_or_generating(places, kind, generate):
    path, expected = places[kind]
    dm = synthetic_module(str(path), generate=generate)
    with pytest.raises(DataError) as info:
        dm.prepare_data()
        dm.setup("fit")
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_a_missing_data_dir_is_no_problem_of_its_own(tmp_path):
    assert data_dir_problem(tmp_path / "not yet") is None
    assert data_dir_problem(tmp_path) is None


def test_an_empty_data_dir_is_refused_before_any_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^paths\.data_dir is empty: set it to the folder"):
        synthetic_module("", generate=True)
    assert list(tmp_path.iterdir()) == []


def test_verify_data_names_a_data_dir_that_is_a_file(places, tmp_path):
    path, expected = places["file"]
    done = run_module(
        "fcn_lightning.verify_data", "data=synthetic", f"paths.data_dir={path}",
        "data.generate=false", "num_workers=0", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"problem: {expected}" in done.stderr and "Traceback" not in done.stderr
