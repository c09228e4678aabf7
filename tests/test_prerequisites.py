"""check_prerequisites: every missing thing of a start in one line, each with the message
the check that would meet it later gives; nothing downloaded or built."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fcn_lightning.data import sources
from fcn_lightning.data.datamodule import build_datamodule
from fcn_lightning.errors import DataError, FCNError, WeightsError
from fcn_lightning.models.checkpoints import read_state_dict
from fcn_lightning.prerequisites import check_prerequisites
from tests.train_helpers import compose_train, tiny_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def fetched(*args, **kwargs):
        raise AssertionError("a download was started")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fetched)
    monkeypatch.setattr("fcn_lightning.download._fetch", fetched)


def message_of(error_type, call) -> str:
    with pytest.raises(error_type) as info:
        call()
    return str(info.value)


def test_a_ready_start_passes_and_says_what_it_will_download(data_dir, tmp_path, caplog):
    cfg = compose_train(data_dir, tmp_path / "run", "model.pretrained=true")
    with caplog.at_level("INFO", logger="fcn_lightning"):
        check_prerequisites(cfg)
    assert "vgg16-397923af.pth" in caplog.text and "are downloaded from https://" in caplog.text
    assert not (tmp_path / "torch_home").exists()


def test_every_problem_at_once_each_with_the_message_of_its_own_check(data_dir, tmp_path):
    nowhere = tmp_path / "nowhere"
    cfg = compose_train(
        data_dir, tmp_path / "run", f"paths.data_dir={nowhere}", "data.generate=false",
        "model.pretrained=true",
        f"model.weights_path={tmp_path / 'w.pth'}", f"model.init_from={tmp_path / 'i.ckpt'}",
    )  # fmt: skip
    message = message_of(DataError, lambda: check_prerequisites(cfg))
    # What each check raises on its own, when training reaches it.
    dataset = message_of(DataError, lambda: build_datamodule(cfg.data).setup("fit"))
    read = lambda name, key: lambda: read_state_dict(tmp_path / name, key=key)  # noqa: E731
    weights = message_of(WeightsError, read("w.pth", "model.weights_path"))
    init = message_of(WeightsError, read("i.ckpt", "model.init_from"))
    assert message == (
        f"3 problems before training can start: (1) {dataset}; (2) {weights}; (3) {init}"
    )
    assert "\n" not in message


def test_one_problem_is_raised_as_it_is(data_dir, tmp_path):
    cfg = compose_train(data_dir, tmp_path / "run", f"model.init_from={tmp_path / 'i.ckpt'}")
    message = message_of(WeightsError, lambda: check_prerequisites(cfg))
    assert message == f"model.init_from={tmp_path / 'i.ckpt'}: no such file; check the path"
    check_prerequisites(cfg, resuming=True)  # a resume does not read model.init_from


def test_a_missing_dataset_with_download_is_left_to_fetch(data_dir, tmp_path, monkeypatch, caplog):
    archive = sources.Archive("synthetic.tar", "http://127.0.0.1:9/synthetic.tar", "0" * 32, "1 MB")
    source = dataclasses.replace(sources.SOURCES["synthetic"], archive=archive)
    monkeypatch.setitem(sources.SOURCES, "synthetic", source)
    fresh = tmp_path / "fresh"
    cfg = compose_train(data_dir, tmp_path / "run", f"paths.data_dir={fresh}",
                        "data.generate=false", "data.download=true")  # fmt: skip
    with caplog.at_level("INFO", logger="fcn_lightning"):
        check_prerequisites(cfg)
    assert f"synthetic.tar (1 MB) is downloaded from {archive.url} to {fresh}" in caplog.text
    assert not fresh.exists()


def test_the_test_split_is_checked_only_when_the_run_tests(data_dir, tmp_path):
    cfg = compose_train(
        data_dir, tmp_path / "run", "data.test_split=synthetic_test", "data.generate=false"
    )
    check_prerequisites(cfg)
    cfg.test = True
    message = message_of(FCNError, lambda: check_prerequisites(cfg))
    assert message.startswith(f"split list {data_dir}/synthetic/ImageSets/Segmentation/test.txt")
