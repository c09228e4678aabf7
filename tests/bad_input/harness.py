"""The harness of the bad-input tables (one test file per class of failure): every bad
input a user can give, through the real entry points (their Hydra ``main``, as
``python -m`` runs them), each with the message it must get.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.train_helpers import run_entry, run_module, tiny_dataset, tiny_overrides

# (run_entry lived here: test files still import it from this module.)


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
    entry: str  # train | eval | predict | export
    args: Callable[[Place], list[str]]
    expect: list[str]  # fragments of the error line, {placeholders} filled from Place
    setup: Callable[[Place], object] = lambda place: None
    fresh: bool = False  # train: a new run beside the earlier one (content errors)
    resume: bool = True  # train in the earlier run's directory with ckpt_path=last
    skip: str | None = None
    # After setup, with the test's monkeypatch: environment or module state for the case.
    patch: Callable[[Place, pytest.MonkeyPatch], object] = lambda place, monkeypatch: None


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


def other_classes_checkpoint(place: Place) -> Path:
    checkpoint = torch.load(place.ckpt, weights_only=True)
    state = checkpoint["state_dict"]
    state["model.score_fr.weight"] = torch.zeros(21, *state["model.score_fr.weight"].shape[1:])
    path = place.root / "other.ckpt"
    torch.save(checkpoint, path)
    return path


def make_earlier(root: Path) -> Place:
    """A dataset and the outputs of an earlier train, eval and predict."""
    place = Place(root)
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
    if case.entry == "export":
        return [f"ckpt_path={ckpt}", f"hydra.run.dir={place.root / 'export_run'}",
                *case.args(place)]  # fmt: skip
    args = case.args(place)
    if not any(a.startswith("inputs=") for a in args):
        args.append(f"inputs={place.image()}")
    return [f"ckpt_path={ckpt}", f"out_dir={place.predictions}", "device=cpu",
            f"hydra.run.dir={place.predictions}", *args]  # fmt: skip


def check_case(case: Case, earlier: Place, tmp_path: Path, monkeypatch, capfd) -> Place:
    """Run one case in a copy of the earlier outputs: its status (2, a user error), its
    one message, and every earlier file byte for byte."""
    if case.skip:
        pytest.skip(case.skip)
    place = Place(tmp_path)
    shutil.copytree(earlier.root, place.root, dirs_exist_ok=True, symlinks=True)
    for path in place.run.rglob("*"):  # the earlier run's paths, moved with the copy
        if path.suffix in (".yaml", ".log"):
            path.write_text(path.read_text().replace(str(earlier.root), str(place.root)))
    place.extra = {}
    case.setup(place)
    case.patch(place, monkeypatch)
    monkeypatch.chdir(place.root)
    monkeypatch.setenv("WANDB_MODE", "offline")
    outputs = place.root / "outputs"
    before = snapshot(outputs)

    status = run_entry(case.entry, entry_args(case, place), monkeypatch)
    out, err = capfd.readouterr()
    assert "this ran" not in out  # no pickled call was made (RunsCode)

    assert status == 2, err[-3000:]
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
    return place
