"""Bad inputs to the scoring and writing entry points (eval, predict, export): settings
that contradict the checkpoint, outputs that cannot be written, devices that are not
there. Each refused with its one message, nothing lost (tests/bad_input/harness.py), and
nothing half-written: no mask, overlay or exported file appears."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcn_lightning.models.fcn import FCN
from tests.bad_input.harness import Case, Place, check_case, run_entry, write_text

CLASH = "was trained with normalization=torchvision"  # the earlier run's checkpoint


def preset(place: Place, *args: str) -> list[str]:
    return ["data=synthetic", f"paths.data_dir={place.data}", *args]


def class_list(place: Place) -> Path:
    path = place.root / "classes.txt"
    path.write_text("".join(f"thing{i}\n" for i in range(7)))
    return path


def same_stem_folder(place: Place) -> Path:
    folder = place.root / "photos"
    folder.mkdir()
    shutil.copy(place.image(0), folder / "x.jpg")
    Image.open(place.image(1)).save(folder / "x.png")
    return folder


def png_folder(place: Place) -> Path:
    folder = place.root / "pngs"
    folder.mkdir()
    Image.open(place.image()).save(folder / "a.png")
    return folder


def read_only_folder(place: Place) -> Path:
    """A folder this process cannot write to: a chmod 555 one, or /sys for root (whom
    the mode bits do not stop)."""
    folder = place.root / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return folder
    (folder / "probe").unlink()
    if not Path("/sys").is_dir():
        pytest.skip("no folder this user cannot write to")
    return Path("/sys")


def no_cuda() -> str | None:
    return "this machine has a CUDA device" if torch.cuda.is_available() else None


CASES = [
    # -- eval: the checkpoint is the truth about its normalisation and classes ----------
    Case("eval normalisation typed against the checkpoint (preset)", "config", "eval",
         lambda p: preset(p, "data.normalization=caffe"),
         ["data.normalization=caffe: ckpt_path={ckpt} " + CLASH, "drop the override"]),
    Case("eval normalisation typed against the checkpoint (its own data)", "config", "eval",
         lambda p: ["+data.normalization=caffe"],
         ["data.normalization=caffe: ckpt_path={ckpt} " + CLASH, "drop the override"]),
    Case("eval class count typed against the checkpoint", "config", "eval",
         lambda p: preset(p, "data.num_classes=5"),
         ["ckpt_path={ckpt} predicts 7 classes but the data has 5",
          "from data.num_classes", "choose matching data", "leave data= out"]),
    Case("eval class count typed on the checkpoint's own data", "config", "eval",
         lambda p: ["+data.num_classes=21"],
         ["ckpt_path={ckpt} predicts 7 classes but the data has 21", "from data.num_classes"]),
    Case("eval preset of another class count", "config", "eval",
         lambda p: ["data=paper", f"paths.data_dir={p.data}"],
         ["ckpt_path={ckpt} predicts 7 classes but the data has 21", "from data=paper",
          "choose matching data"]),
    Case("eval class names typed against the checkpoint", "config", "eval",
         lambda p: preset(p, f"data.classes={class_list(p)}"),
         ["data.classes={root}/classes.txt: names the classes [thing0", "ckpt_path={ckpt} was "
          "trained with [background", "the table uses the checkpoint's class names"]),
    Case("eval misspelt data key on the checkpoint's own data", "config", "eval",
         lambda p: ["+data.normalisation=caffe"],
         ["unknown key data.normalisation: did you mean data.normalization?"]),
    # -- predict ------------------------------------------------------------------------
    Case("predict normalisation typed against the checkpoint", "config", "predict",
         lambda p: ["normalization=caffe"],
         ["normalization=caffe: ckpt_path={ckpt} " + CLASH, "drop it"]),
    Case("predict out_dir is a file", "config", "predict",
         lambda p: [f"out_dir={p.predictions / 'earlier.png'}"],
         ["out_dir={root}/outputs/predictions/earlier.png: is a file, not a folder"]),
    Case("predict out_dir below a file", "config", "predict",
         lambda p: [f"out_dir={p.predictions / 'earlier.png' / 'masks'}"],
         ["out_dir={root}/outputs/predictions/earlier.png/masks:",
          "earlier.png is a file, not a folder"]),
    Case("predict on CUDA without a CUDA device", "config", "predict",
         lambda p: ["device=cuda"],
         ["device=cuda: no CUDA device is available", "use device=cpu or device=auto"],
         skip=no_cuda()),
    Case("predict on a device that does not exist", "config", "predict",
         lambda p: ["device=gpu"], ["device='gpu': expected auto, cpu, cuda or cuda:<index>"]),
    Case("predict inputs that would share an output name", "data", "predict",
         lambda p: [f"inputs={same_stem_folder(p)}"],
         ["{root}/photos/x.jpg and {root}/photos/x.png would both be written as x.png",
          "rename one"]),
    Case("predict outputs that would overwrite an input", "config", "predict",
         lambda p: [f"inputs={png_folder(p)}", f"out_dir={p.root / 'pngs'}"],
         ["out_dir={root}/pngs: the outputs would overwrite the input {root}/pngs/a.png"]),
    # -- export -------------------------------------------------------------------------
    Case("export normalisation typed against the checkpoint", "config", "export",
         lambda p: ["normalization=caffe"],
         ["normalization=caffe: ckpt_path={ckpt} " + CLASH, "drop it"]),
    Case("export into a missing folder", "config", "export",
         lambda p: [f"out={p.root / 'nowhere' / 'm.onnx'}"],
         ["out={root}/nowhere/m.onnx: the folder {root}/nowhere does not exist", "create it"]),
    Case("export into a read-only folder", "config", "export",
         lambda p: [f"out={read_only_folder(p) / 'm.onnx'}"],
         ["cannot write to the folder", "choose a writable folder"]),
    Case("export to a folder's name", "config", "export",
         lambda p: [f"out={p.predictions}"],
         ["out={root}/outputs/predictions: is a folder; name the file"]),
    Case("export under the other format's suffix", "config", "export",
         lambda p: [f"out={p.root / 'm.pt'}"],
         ["out={root}/m.pt: format=onnx writes onnx files", "name it m.onnx"]),
    Case("export format typo", "config", "export", lambda p: ["format=onxx"],
         ["format='onxx': choose one of ['onnx', 'torchscript']", "(did you mean onnx?)"]),
    Case("export unknown format", "config", "export", lambda p: ["format=xyz"],
         ["format='xyz': choose one of ['onnx', 'torchscript']"]),
    Case("export example_size of zeros", "config", "export", lambda p: ["example_size=[0,0]"],
         ["2 config problems: (1) example_size[0]=0: must be at least 1"]),
    Case("export example_size not a list", "config", "export", lambda p: ["example_size=224"],
         ["example_size=224: expected a list of integers"]),
    Case("export example_size of one number", "config", "export",
         lambda p: ["example_size=[224]"], ["example_size=[224]: expected 2 values, got 1"]),
]  # fmt: skip

EXPORTED = ("*.onnx", "*.pt", "*.onnx.json", "*.pt.json", ".fcn-export-probe-*")
KEPT = {"predictions": {"earlier.png"}, "pngs": {"a.png"}}  # the folders predict may write


def check_nothing_written(root: Path) -> None:
    """No exported file, no probe left behind, no mask or overlay beside the earlier ones."""
    found = [p for pattern in EXPORTED for p in root.rglob(pattern)]
    found += list(root.rglob("*_overlay.jpg"))
    for folder in (root / "outputs" / "predictions", root / "pngs"):
        if folder.is_dir():
            found += [p for p in folder.rglob("*.png") if p.name not in KEPT[folder.name]]
    assert not found, found


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_its_message_and_nothing_is_lost(
    case, earlier, tmp_path, monkeypatch, capfd
):
    check_case(case, earlier, tmp_path, monkeypatch, capfd)
    check_nothing_written(tmp_path)


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
     RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                  "memory: you tried to allocate 80000000000 bytes"),
     RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)")],
    ids=["cuda", "cpu", "mps"],
)  # fmt: skip
def test_predict_out_of_memory_names_the_image_its_size_and_what_to_do(
    error, earlier, tmp_path, monkeypatch, capfd
):
    def forward(self, x):
        raise error

    monkeypatch.setattr(FCN, "forward", forward)
    case = Case("out of memory", "data", "predict", lambda p: [],
                ["{image}: out of memory predicting this 48x36 (WxH) image on cpu",
                 "downscale it or cut it into tiles", "device=cpu"])  # fmt: skip
    check_case(case, earlier, tmp_path, monkeypatch, capfd)
    check_nothing_written(tmp_path)


def test_the_table_covers_eval_predict_and_export():
    entries = {entry: sum(c.entry == entry for c in CASES) for entry in
               ("eval", "predict", "export")}  # fmt: skip
    assert min(entries.values()) >= 5, entries
    assert len({c.id for c in CASES}) == len(CASES)


# -- the outputs that should be written ------------------------------------------------


def test_predict_keeps_the_folders_of_inputs_that_share_a_name(
    earlier, tmp_path, monkeypatch, capfd
):
    """``a/x.jpg`` and ``b/x.jpg`` give ``a/x.png`` and ``b/x.png``, each the argmax of
    its own image (not one mask written twice); one folder of inputs stays flat."""
    from fcn_lightning.module import load_module
    from fcn_lightning.normalization import get_input_norm

    for folder, n in (("a", 0), ("b", 1)):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        shutil.copy(earlier.image(n), tmp_path / "photos" / folder / "x.jpg")
    write_text(tmp_path / "photos" / "list.txt", "a/x.jpg\nb/x.jpg\n")
    out = tmp_path / "masks"
    args = [f"ckpt_path={earlier.ckpt}", f"inputs={tmp_path / 'photos' / 'list.txt'}",
            f"out_dir={out}", "device=cpu", "normalization=torchvision",
            f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    assert run_entry("predict", args, monkeypatch) == 0, capfd.readouterr().err[-3000:]
    assert "wrote 2 masks" in "".join(capfd.readouterr())
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["a/x.png", "a/x_overlay.jpg", "b/x.png", "b/x_overlay.jpg"]
    module = load_module(earlier.ckpt).eval()
    for folder, n in (("a", 0), ("b", 1)):
        rgb = torch.from_numpy(np.array(Image.open(earlier.image(n)).convert("RGB")))
        with torch.no_grad():
            x = get_input_norm("torchvision")(rgb.permute(2, 0, 1))[None]
            expected = module(x).argmax(1)[0].numpy()
        np.testing.assert_array_equal(np.asarray(Image.open(out / folder / "x.png")), expected)
