"""Every bad input a user can give, through the real entry points (their Hydra ``main``,
as ``python -m`` runs them), each with the message it must get.

For each case: the exit status is non-zero; stderr's ``error:`` line names the file or
key and what to do (Hydra's own errors for unknown presets name the preset and list the
options); and nothing already written is lost. Beside the command's output there is an
earlier run (checkpoints, CSV record, config, samples, log), an earlier ``eval`` result
and earlier predictions; every one of those files is byte for byte the same afterwards
(logs may only grow; Hydra rewrites its own ``.hydra/`` notes on each launch). Train
cases that fail on their lists, files, config or checkpoint run *in the earlier run's
directory* (most with ``ckpt_path=last``, as a resumed job would); those that fail on one
file's content, which is only read when training reaches it, start a new run beside it.
"""

from __future__ import annotations

import pickle
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.train_helpers import run_module, tiny_dataset, tiny_overrides


@dataclass
class Place:
    """One case's folders: a copy of the dataset and of the earlier outputs."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def voc(self) -> Path:  # the synthetic tree has VOC's layout
        return self.data / "synthetic"

    @property
    def run(self) -> Path:
        return self.root / "outputs" / "run"

    @property
    def new_run(self) -> Path:
        return self.root / "outputs" / "new_run"

    @property
    def eval_dir(self) -> Path:
        return self.root / "outputs" / "eval"

    @property
    def predictions(self) -> Path:
        return self.root / "outputs" / "predictions"

    @property
    def ckpt(self) -> Path:
        return self.run / "checkpoints" / "last.ckpt"

    def val_id(self, n: int = 0) -> str:
        return (self.voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[n]

    def image(self, n: int = 0) -> Path:
        return self.voc / "JPEGImages" / f"{self.val_id(n)}.jpg"

    def label(self, n: int = 0) -> Path:
        return self.voc / "SegmentationClass" / f"{self.val_id(n)}.png"


@dataclass
class Case:
    id: str
    kind: str  # data | config | checkpoint
    entry: str  # train | eval | predict
    args: Callable[[Place], list[str]]
    expect: list[str]  # fragments of the error line, {placeholders} filled from Place
    setup: Callable[[Place], object] = lambda place: None
    fresh: bool = False  # train: a new run beside the earlier one (content errors)
    resume: bool = True  # train in the earlier run's directory with ckpt_path=last
    hydra_error: bool = False  # refused by Hydra itself (unknown preset)
    skip: str | None = None


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_label(path: Path, label: np.ndarray) -> None:
    Image.fromarray(label.astype(np.uint8), mode="L").save(path)


def stray_label(place: Place) -> None:
    label = np.array(Image.open(place.label()))
    label[0, 0] = 9  # 7 classes: 0..6, and 255
    write_label(place.label(), label)


def small_label(place: Place) -> None:
    write_label(place.label(), np.zeros((10, 10)))


def edited_checkpoint(place: Place, name: str, **model: object) -> Path:
    checkpoint = torch.load(place.ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["model"].update(model)
    path = place.root / name
    torch.save(checkpoint, path)
    return path


def learned_upsampling_checkpoint(place: Place) -> Path:
    """The earlier run's checkpoint as if trained with model.upsampling=learned."""
    path = edited_checkpoint(place, "learned.ckpt", upsampling="learned")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["model.upscore.weight"] *= 1.5
    torch.save(checkpoint, path)
    return path


class RunsCode:
    def __reduce__(self):
        return (print, ("this ran",))


def code_pickle(place: Place) -> Path:
    """A checkpoint-like file (torch.save) whose unpickling would call a function."""
    path = place.root / "evil.ckpt"
    torch.save({"state_dict": {"model.score_fr.weight": RunsCode()}}, path)
    return path


def raw_code_pickle(place: Place) -> Path:
    """The same as a bare pickle (protocol 4), as `pickle.dump` writes it."""
    path = place.root / "evil.pkl"
    path.write_bytes(pickle.dumps({"state_dict": RunsCode()}, protocol=4))
    return path


def text_file(place: Place) -> Path:
    path = place.root / "notes.ckpt"
    path.write_text("these are my notes, not a checkpoint\n")
    return path


def truncated_checkpoint(place: Place) -> Path:
    path = place.root / "half.ckpt"
    path.write_bytes(place.ckpt.read_bytes()[:100_000])
    return path


def weights_only_file(place: Place) -> Path:
    path = place.root / "weights.pth"
    torch.save(torch.load(place.ckpt, weights_only=True)["state_dict"], path)
    return path


def images_and_notes(place: Place) -> Path:
    folder = place.root / "photos"
    folder.mkdir()
    shutil.copy(place.image(), folder / "a.jpg")
    write_text(folder / "notes.txt", "taken on holiday")
    return folder


def fake_jpeg_among_images(place: Place) -> Path:
    folder = place.root / "photos"
    folder.mkdir()
    shutil.copy(place.image(), folder / "a.jpg")
    write_text(folder / "b.jpg", "<html>a saved web page, not a JPEG</html>")
    return folder


SPLITS = "ImageSets/Segmentation"
CASES = [
    # -- data ---------------------------------------------------------------------------
    Case("missing dataset root", "data", "train",
         lambda p: [f"paths.data_dir={p.root / 'nowhere'}"],
         ["synthetic dataset not found at {root}/nowhere/synthetic", "data.generate=true"]),
    Case("misnamed dataset root", "data", "train", lambda p: [],
         ["not found at {data}/synthetic", "found {data}/Synthetic: rename it"],
         setup=lambda p: p.voc.rename(p.data / "Synthetic")),
    Case("data_dir pointing into the dataset", "data", "train",
         lambda p: [f"paths.data_dir={p.voc}"],
         ["paths.data_dir points into the dataset", "holds synthetic/"]),
    Case("missing split file", "data", "train", lambda p: [],
         ["split list {voc}/" + SPLITS + "/train.txt is missing",
          "splits of synthetic here are ['synthetic_trainval', 'synthetic_val']"],
         setup=lambda p: (p.voc / SPLITS / "train.txt").unlink()),
    Case("empty split", "data", "train", lambda p: [],
         ["split list {voc}/" + SPLITS + "/val.txt lists no image IDs"],
         setup=lambda p: write_text(p.voc / SPLITS / "val.txt", "\n")),
    Case("ID with no image", "data", "train", lambda p: [],
         ["{image}: missing image of ID", "in split synthetic_val", "verify_data"],
         setup=lambda p: p.image().unlink()),
    Case("ID with no label", "data", "train", lambda p: [],
         ["{label}: missing label of ID", "in split synthetic_val"],
         setup=lambda p: p.label().unlink()),
    Case("corrupt JPEG", "data", "train", lambda p: [],
         ["{image}: corrupt or unreadable image", "replace it"],
         setup=lambda p: p.image().write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG"), fresh=True),
    Case("truncated JPEG", "data", "train", lambda p: [],
         ["{image}: corrupt or unreadable image", "replace it"],
         setup=lambda p: truncate(p.image()), fresh=True),
    Case("corrupt PNG label", "data", "train", lambda p: [],
         ["{label}: corrupt or unreadable label PNG", "replace it"],
         setup=lambda p: p.label().write_bytes(b"\x89PNG\r\n\x1a\n garbage"), fresh=True),
    Case("truncated PNG label", "data", "train", lambda p: [],
         ["{label}: corrupt or unreadable label PNG", "replace it"],
         setup=lambda p: truncate(p.label()), fresh=True),
    Case("image/label size mismatch", "data", "train", lambda p: [],
         ["{label}: label is 10x10 (HxW) but image {image} is"],
         setup=small_label, fresh=True),
    Case("label values outside [0, C) and not 255", "data", "train", lambda p: [],
         ["{label}: label values [9] are neither classes 0..6 nor 255", "data.num_classes"],
         setup=stray_label, fresh=True),
    Case("predict folder with non-image files", "data", "predict",
         lambda p: [f"inputs={p.extra['folder']}"],
         ["inputs={root}/photos: holds 1 non-image file(s)", "notes.txt", "inputs=<list.txt>"],
         setup=lambda p: p.extra.update(folder=images_and_notes(p))),
    Case("predict image that is not an image", "data", "predict",
         lambda p: [f"inputs={p.extra['folder']}"],
         ["{root}/photos/b.jpg: corrupt or unreadable image"],
         setup=lambda p: p.extra.update(folder=fake_jpeg_among_images(p))),
    Case("predict inputs that do not exist", "data", "predict",
         lambda p: [f"inputs={p.root / 'photos'}"],
         ["inputs={root}/photos: no such image, folder or list file"]),
    Case("eval on a missing data_dir", "data", "eval",
         lambda p: [f"data_dir={p.root / 'moved'}"],
         ["synthetic dataset not found at {root}/moved/synthetic"]),
    # -- config -------------------------------------------------------------------------
    Case("unknown variant", "config", "train", lambda p: ["model.variant=fcn4s"],
         ["unknown model.variant='fcn4s': choose one of", "fcn8s"], resume=False),
    Case("unknown backbone", "config", "train", lambda p: ["model.backbone=resnet34"],
         ["unknown model.backbone='resnet34': choose one of ['alexnet'"], resume=False),
    Case("unknown model preset", "config", "train", lambda p: ["model=fcn4s"],
         ["Could not find 'model/fcn4s'", "Available options in 'model'"], hydra_error=True),
    Case("unknown data preset", "config", "train", lambda p: ["data=voc2013"],
         ["Could not find 'data/voc2013'", "Available options in 'data'"], hydra_error=True),
    Case("unknown experiment preset", "config", "train", lambda p: ["experiment=nope"],
         ["Could not find 'experiment/nope'"], hydra_error=True),
    Case("num_classes not matching the data", "config", "train",
         lambda p: ["model.num_classes=5"],
         ["model.num_classes=5 but the data has 7 classes", "data.num_classes"], resume=False),
    Case("num_classes not matching the checkpoint (train)", "config", "train",
         lambda p: [f"ckpt_path={p.extra['ckpt']}"],
         ["ckpt_path={root}/classes21.ckpt: the checkpoint was trained with model.num_classes=21",
          "this run has model.num_classes=7"],
         setup=lambda p: p.extra.update(
             ckpt=edited_checkpoint(p, "classes21.ckpt", num_classes=21)),
         resume=False),
    Case("num_classes not matching the checkpoint (eval)", "config", "eval",
         lambda p: ["data=voc2012", f"paths.data_dir={p.data}"],
         ["ckpt_path={ckpt} predicts 7 classes but the data has 21", "choose matching data"]),
    Case("batch > 1 without padding collate or crop", "config", "train",
         lambda p: ["data.batch_size=2"],
         ["data.batch_size=2 needs images of one size", "data.collate=pad", "data.crop_size"],
         resume=False),
    Case("validation batch > 1 without padding collate", "config", "train",
         lambda p: ["data.val_batch_size=2"],
         ["data.val_batch_size=2", "data.collate=pad or data.val_batch_size=1"]),
    Case("learned upsampling with shift-and-stitch", "config", "eval",
         lambda p: ["inference.dense=stitch", "inference.factor=2"],
         ["inference.factor=2: this model learned its final upsampling (upscore)",
          "inference.factor=32"],
         setup=lambda p: p.extra.update(ckpt=learned_upsampling_checkpoint(p))),
    Case("missing run to resume", "config", "train", lambda p: ["ckpt_path=last"],
         ["ckpt_path=last: no checkpoint at {new_run}/checkpoints/last.ckpt"], fresh=True),
    # -- checkpoints --------------------------------------------------------------------
    Case("not a checkpoint (train ckpt_path)", "checkpoint", "train",
         lambda p: [f"ckpt_path={text_file(p)}"],
         ["ckpt_path={root}/notes.ckpt: not a readable PyTorch weights file"], resume=False),
    Case("not a checkpoint (eval)", "checkpoint", "eval", lambda p: [],
         ["ckpt_path={root}/notes.ckpt: not a readable PyTorch weights file"],
         setup=lambda p: p.extra.update(ckpt=text_file(p))),
    Case("not a checkpoint (predict)", "checkpoint", "predict", lambda p: [],
         ["ckpt_path={root}/notes.ckpt: not a readable PyTorch weights file"],
         setup=lambda p: p.extra.update(ckpt=text_file(p))),
    Case("truncated checkpoint (eval)", "checkpoint", "eval", lambda p: [],
         ["ckpt_path={root}/half.ckpt: not a readable PyTorch weights file", "re-download"],
         setup=lambda p: p.extra.update(ckpt=truncated_checkpoint(p))),
    Case("weights without training state (train ckpt_path)", "checkpoint", "train",
         lambda p: [f"ckpt_path={weights_only_file(p)}"],
         ["not a fcn-lightning training checkpoint", "model.init_from"], resume=False),
    Case("checkpoint of another variant (train ckpt_path)", "checkpoint", "train",
         lambda p: [f"ckpt_path={edited_checkpoint(p, 'fcn16s.ckpt', variant='fcn16s')}"],
         ["the checkpoint was trained with model.variant=fcn16s",
          "this run has model.variant=fcn32s"], resume=False),
    Case("checkpoint of another class count (model.init_from)", "checkpoint", "train",
         lambda p: [f"model.init_from={p.extra['other']}"],
         ["model.init_from={root}/other.ckpt: score_fr.weight has shape (21,", "num_classes"],
         setup=lambda p: p.extra.update(other=other_classes_checkpoint(p)), resume=False),
    Case("code-carrying pickle (train ckpt_path)", "checkpoint", "train",
         lambda p: [f"ckpt_path={code_pickle(p)}"],
         ["ckpt_path={root}/evil.ckpt: refused to load, it would import code"], resume=False),
    Case("code-carrying pickle (eval)", "checkpoint", "eval", lambda p: [],
         ["ckpt_path={root}/evil.ckpt: refused to load, it would import code"],
         setup=lambda p: p.extra.update(ckpt=code_pickle(p))),
    Case("code-carrying pickle (predict)", "checkpoint", "predict", lambda p: [],
         ["ckpt_path={root}/evil.ckpt: refused to load, it would import code"],
         setup=lambda p: p.extra.update(ckpt=code_pickle(p))),
    Case("bare code-carrying pickle (eval)", "checkpoint", "eval", lambda p: [],
         ["ckpt_path={root}/evil.pkl: refused to load, a Python pickle"],
         setup=lambda p: p.extra.update(ckpt=raw_code_pickle(p))),
    Case("code-carrying pickle (model.init_from)", "checkpoint", "train",
         lambda p: [f"model.init_from={code_pickle(p)}"],
         ["model.init_from={root}/evil.ckpt: refused to load"], resume=False),
]  # fmt: skip


def other_classes_checkpoint(place: Place) -> Path:
    checkpoint = torch.load(place.ckpt, weights_only=True)
    state = checkpoint["state_dict"]
    state["model.score_fr.weight"] = torch.zeros(21, *state["model.score_fr.weight"].shape[1:])
    path = place.root / "other.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Place:
    """A dataset and the outputs of an earlier train, eval and predict, made once."""
    place = Place(tmp_path_factory.mktemp("earlier"))
    tiny_dataset(place.data)
    done = run_module("fcn_lightning.train", *tiny_overrides(place.data, place.run), cwd=place.root)
    assert done.returncode == 0, done.stderr[-3000:]
    write_text(place.eval_dir / "metrics.json", '{"mean_iu": 0.5}\n')
    write_text(place.eval_dir / "eval.log", "an earlier evaluation\n")
    place.predictions.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(place.predictions / "earlier.png")
    return place


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".hydra" not in p.parts
    }


def entry_args(case: Case, place: Place) -> list[str]:
    train_data = tiny_overrides(place.data, place.new_run if case.fresh else place.run)
    if case.entry == "train":
        args = [*train_data, "data.generate=false", "trainer.max_steps=4"]
        if case.resume and not case.fresh:
            args.append("ckpt_path=last")
        elif not case.fresh and not any(a.startswith("ckpt_path=") for a in case.args(place)):
            args += ["ckpt_path=null", "resume.overwrite=true"]  # start over in its directory
        return [*args, *case.args(place)]
    ckpt = place.extra.get("ckpt", place.ckpt)
    if case.entry == "eval":
        return [f"ckpt_path={ckpt}", "num_workers=0", "trainer=cpu", f"data_dir={place.data}",
                f"hydra.run.dir={place.eval_dir}", *case.args(place)]  # fmt: skip
    args = case.args(place)
    if not any(a.startswith("inputs=") for a in args):
        args.append(f"inputs={place.image()}")
    return [f"ckpt_path={ckpt}", f"out_dir={place.predictions}", "device=cpu",
            f"hydra.run.dir={place.predictions}", *args]  # fmt: skip


def run_entry(entry: str, args: list[str], monkeypatch) -> int:
    """``python -m fcn_lightning.<entry> args`` in this process: its exit status."""
    import importlib

    main = importlib.import_module(f"fcn_lightning.{entry}").main
    monkeypatch.setattr(sys, "argv", [entry, *args])
    try:
        main()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_its_message_and_nothing_is_lost(
    case, earlier, tmp_path, monkeypatch, capfd
):
    if case.skip:
        pytest.skip(case.skip)
    place = Place(tmp_path)
    shutil.copytree(earlier.root, place.root, dirs_exist_ok=True, symlinks=True)
    for path in place.run.rglob("*"):  # the earlier run's paths, moved with the copy
        if path.suffix in (".yaml", ".log"):
            path.write_text(path.read_text().replace(str(earlier.root), str(place.root)))
    place.extra = {}
    case.setup(place)
    monkeypatch.chdir(place.root)
    monkeypatch.setenv("WANDB_MODE", "offline")
    outputs = place.root / "outputs"
    before = snapshot(outputs)

    status = run_entry(case.entry, entry_args(case, place), monkeypatch)
    out, err = capfd.readouterr()
    assert "this ran" not in out  # no pickled call was made (RunsCode)

    assert status != 0
    if case.hydra_error:
        message = err[err.index("Could not find") :]
    else:
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, err[-3000:]
        message = lines[0]
        assert "Traceback" not in err
    names = {"root": place.root, "data": place.data, "voc": place.voc, "run": place.run,
             "new_run": place.new_run, "ckpt": place.ckpt}  # fmt: skip
    if "{image}" in "".join(case.expect) or "{label}" in "".join(case.expect):
        names.update(image=place.image(), label=place.label())
    for fragment in case.expect:
        assert fragment.format(**names) in message, message

    after = snapshot(outputs)
    for name, data in before.items():
        assert name in after, f"{name} was removed"
        if name.endswith(".log"):
            assert after[name].startswith(data), f"{name} was rewritten"
        else:
            assert after[name] == data, f"{name} was changed"


def test_the_table_covers_every_kind_of_bad_input():
    kinds = {kind: sum(c.kind == kind and not c.skip for c in CASES) for kind in
             ("data", "config", "checkpoint")}  # fmt: skip
    assert all(kinds.values()), kinds
    assert len({c.id for c in CASES}) == len(CASES)
