"""``predict format=voc``: the VOC evaluation server's tarball from a fake VOC test tree,
read back here with tarfile and Pillow: the devkit's layout, one palette PNG per listed id
of its JPEG's size, values the argmax of the checkpoint's network run here; bad inputs
refused in one line before anything is written; reruns and interruptions never ship a
half tarball."""

from __future__ import annotations

import hashlib
import io
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fcn_lightning.module import FCNModule
from tests.bad_input.harness import run_entry
from tests.train_helpers import ROOT

TIE = 1e-4  # two best scores this close (relative): either class may win
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
SIZES = [(37, 29), (40, 52), (33, 33), (64, 21), (25, 47)]  # (width, height)
IDS = [f"2008_{i:06d}" for i in range(1, len(SIZES) + 1)]
MEMBER_DIR = "results/VOC2012/Segmentation/comp6_test_cls"


def checkpoint(path, num_classes: int = 21, seed: int = 0):
    """A tiny FCN-32s whose score layer is random (zero-initialised it would predict
    background everywhere, and every mask would be alike)."""
    torch.manual_seed(seed)
    model = {"variant": "fcn32s", "num_classes": num_classes, "width": 0.0625,
             "geometry": "aligned", "name": "fcn32s", "init_from": None, "init_stages": [],
             "pretrained": False}  # fmt: skip
    module = FCNModule(model=model, optim={"lr": 1e-3}, normalization="torchvision")
    with torch.no_grad():
        module.model.score_fr.weight.normal_(0, 3.0)
        module.model.score_fr.bias.zero_()
    torch.save({"global_step": 0, "state_dict": module.state_dict(), "loops": {},
                "hyper_parameters": dict(module.hparams)}, path)  # fmt: skip
    return path


def make_tree(data_dir, year: str = "2012", sizes=SIZES, ids=IDS):
    tree = data_dir / "VOCdevkit" / f"VOC{year}"
    (tree / "JPEGImages").mkdir(parents=True)
    (tree / "ImageSets" / "Segmentation").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id, (w, h) in zip(ids, sizes, strict=True):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tree / "JPEGImages" / f"{image_id}.jpg", quality=95)
    (tree / "ImageSets" / "Segmentation" / "test.txt").write_text("\n".join(ids) + "\n")
    return tree


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {"21": checkpoint(root / "voc.ckpt"), "20": checkpoint(root / "c20.ckpt", 20),
            "other": checkpoint(root / "other.ckpt", seed=1)}  # fmt: skip


def argmax_here(ckpt, jpeg) -> tuple[np.ndarray, np.ndarray]:
    """The network's argmax over the JPEG normalised here; and where its two best scores
    are within `TIE` (there the input's rounding, done in another order, may decide)."""
    saved = torch.load(ckpt, weights_only=True)
    net = FCNModule(**saved["hyper_parameters"])
    net.load_state_dict(saved["state_dict"])
    rgb = np.asarray(Image.open(jpeg).convert("RGB"))
    x = ((rgb / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    with torch.no_grad():
        scores = net.eval().model(torch.from_numpy(x))[0].numpy()
    best_two = np.sort(scores, axis=0)[-2:]
    return scores.argmax(0), best_two[1] - best_two[0] < TIE * np.abs(scores).max()


def assert_is_argmax(mask: np.ndarray, ckpt, jpeg) -> None:
    expected, tie = argmax_here(ckpt, jpeg)
    assert tie.mean() < 0.02, "too many near-ties for the comparison to mean much"
    np.testing.assert_array_equal(mask[~tie], expected[~tie])


def predict_voc(ckpt, data, out, monkeypatch, *args: str) -> int:
    return run_entry("predict", [f"ckpt_path={ckpt}", "format=voc", f"paths.data_dir={data}",
                                 f"out_dir={out}", "device=cpu",
                                 f"hydra.run.dir={out.parent / 'hydra'}", *args],
                     monkeypatch)  # fmt: skip


def read_tarball(path) -> dict[str, np.ndarray]:
    """name -> mask, checking each member is a palette PNG file."""
    masks = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            assert member.isfile(), member.name
            assert member.name not in masks, f"{member.name} twice"
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:
                assert im.format == "PNG" and im.mode == "P", member.name
                masks[member.name] = np.asarray(im)
    return masks


def check_submission(tarball, tree, ckpt, member_dir=MEMBER_DIR, ids=IDS):
    masks = read_tarball(tarball)
    assert sorted(masks) == sorted(f"{member_dir}/{i}.png" for i in ids)
    for image_id in ids:
        mask = masks[f"{member_dir}/{image_id}.png"]
        jpeg = tree / "JPEGImages" / f"{image_id}.jpg"
        assert mask.shape[::-1] == Image.open(jpeg).size
        assert mask.max() <= 20
        assert_is_argmax(mask, ckpt, jpeg)
    return masks


def test_the_tarball_holds_the_devkit_layout_and_the_networks_argmax(
    ckpts, tmp_path, monkeypatch, capfd
):
    data, out = tmp_path / "data", tmp_path / "out"
    tree = make_tree(data)
    assert predict_voc(ckpts["21"], data, out, monkeypatch) == 0
    stdout = capfd.readouterr().out
    tarball = out / "voc2012_comp6_test.tar.gz"
    masks = check_submission(tarball, tree, ckpts["21"])
    assert len({int(v) for m in masks.values() for v in np.unique(m)}) > 2  # not all alike
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    summary = [line for line in stdout.splitlines() if str(tarball) in line and md5 in line]
    assert len(summary) == 1 and f"{len(IDS)} masks" in summary[0]
    assert not list(out.rglob("*_overlay.jpg")) and not list(out.rglob("*.partial"))

    # comp5, VOC2011 (its own tree)
    make_tree(data, "2011", SIZES[:2], IDS[:2])
    assert predict_voc(ckpts["21"], data, out, monkeypatch, "voc.year=2011",
                       "voc.comp=comp5") == 0  # fmt: skip
    comp5 = "results/VOC2011/Segmentation/comp5_test_cls"
    tree11 = data / "VOCdevkit" / "VOC2011"
    check_submission(out / "voc2011_comp5_test.tar.gz", tree11, ckpts["21"], comp5, IDS[:2])
    assert hashlib.md5(tarball.read_bytes()).hexdigest() == md5  # the 2012 one untouched


def _no_jpeg(tree):
    (tree / "JPEGImages" / f"{IDS[1]}.jpg").unlink()
    (tree / "JPEGImages" / f"{IDS[3]}.jpg").unlink()


BAD = [
        ("no list", lambda t: (t / "ImageSets/Segmentation/test.txt").unlink(), "21", [],
         ["VOC2012/ImageSets/Segmentation/test.txt: no such list", "VOC2012test.tar"]),
        ("empty list", lambda t: (t / "ImageSets/Segmentation/test.txt").write_text("\n"),
         "21", [], ["test.txt: lists no images"]),
        ("missing jpegs", _no_jpeg, "21", [],
         [f"JPEGImages/{IDS[1]}.jpg: missing, with 2 of the 5 images test.txt lists"]),
        ("20 classes", lambda t: None, "20", [],
         ["predicts 20 classes; the VOC server scores the 21 VOC classes"]),
        ("bad comp", lambda t: None, "21", ["voc.comp=comp4"], ["voc.comp", "comp6"]),
        ("bad year", lambda t: None, "21", ["voc.year=2010"], ["voc.year", "2012"]),
        ("not an image", lambda t: (t / f"JPEGImages/{IDS[2]}.jpg").write_bytes(b"<html>"),
         "21", [], [f"JPEGImages/{IDS[2]}.jpg: not a readable image, with 1 of the 5"]),
        ("id twice", lambda t: (t / "ImageSets/Segmentation/test.txt").write_text(
            "\n".join(IDS + IDS[:1])), "21", [], [f"test.txt: lists {IDS[0]} twice"]),
        # before: a traceback (a mask named <out>/../escape.png.tmp)
        ("id with a folder", lambda t: (t / "ImageSets/Segmentation/test.txt").write_text(
            "\n".join([*IDS, "../escape"])), "21", [],
         ["test.txt: line 6 lists '../escape', not an image id"]),
        ("id in a subfolder", lambda t: (t / "ImageSets/Segmentation/test.txt").write_text(
            "sub/2008_000001\n"), "21", [], ["line 1 lists 'sub/2008_000001', not an image"]),
        ("no tree", lambda t: shutil.rmtree(t), "21", [], ["no such list", "voc.root"]),
        ("root elsewhere", lambda t: None, "21", ["voc.root=/nonexistent/VOC2012"],
         ["/nonexistent/VOC2012/ImageSets/Segmentation/test.txt: no such list (voc.root="]),
        # before: inputs= was ignored without a word
        ("inputs given", lambda t: None, "21", ["inputs=photos/"],
         ["inputs=photos/: format=voc predicts the images voc.split's list names"]),
        ("a file as out_dir", lambda t: (t.parent.parent.parent / "out").write_text("x"), "21",
         [], ["is a file, not a folder"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "spoil", "ckpt", "args", "expected"), BAD,
                         ids=[b[0] for b in BAD])  # fmt: skip
def test_bad_inputs_get_one_line_and_nothing_is_written(
    case, spoil, ckpt, args, expected, ckpts, tmp_path, monkeypatch, capfd
):
    data, out = tmp_path / "data", tmp_path / "out"
    spoil(make_tree(data))
    assert predict_voc(ckpts[ckpt], data, out, monkeypatch, *args) == 2, case
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expected:
        assert text in err[0], (text, err[0])
    assert not out.exists() or out.is_file()


def test_reruns_resume_keep_a_finished_tarball_and_refuse_another_checkpoint(
    ckpts, tmp_path, monkeypatch, capfd
):
    data, out = tmp_path / "data", tmp_path / "out"
    tree = make_tree(data)
    tarball = out / "voc2012_comp6_test.tar.gz"
    assert predict_voc(ckpts["21"], data, out, monkeypatch) == 0
    first = tarball.read_bytes()
    assert predict_voc(ckpts["21"], data, out, monkeypatch) == 0  # done: kept as it is
    assert tarball.read_bytes() == first

    # what an interruption can leave: masks missing, a temporary mask, a partial tarball
    # (a mask cut short too, though masks are renamed into place whole)
    masks = out / MEMBER_DIR
    tarball.unlink()
    (masks / f"{IDS[0]}.png").unlink()
    (masks / f".{IDS[1]}.png.tmp").write_bytes(b"\x89PNG half")
    (masks / f"{IDS[2]}.png").write_bytes((masks / f"{IDS[2]}.png").read_bytes()[:30])
    (out / ".voc2012_comp6_test.tar.gz.partial").write_bytes(b"\x1f\x8b half")
    capfd.readouterr()
    assert predict_voc(ckpts["21"], data, out, monkeypatch) == 0
    assert "already written: predicting the other 2" in "".join(capfd.readouterr())
    check_submission(tarball, tree, ckpts["21"])
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.partial"))

    # another checkpoint into the same out_dir: refused, nothing changed
    shipped = tarball.read_bytes()
    assert predict_voc(ckpts["other"], data, out, monkeypatch) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "another checkpoint or settings" in err[0]
    assert tarball.read_bytes() == shipped
    # nor when the record of what the tarball holds is gone with the masks
    for path in sorted(masks.iterdir()):
        path.unlink()
    assert predict_voc(ckpts["other"], data, out, monkeypatch) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "not the record of what it holds" in err[0]
    assert tarball.read_bytes() == shipped and not list(masks.iterdir())


def stopped_mid_way(command, cwd, env, folder, pattern, stop) -> tuple[int, str]:
    """Run ``command``, send it ``stop`` once ``folder`` holds a ``pattern`` file (it is
    mid-way), and return its exit status and stderr."""
    job = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (folder.is_dir() and any(folder.glob(pattern))):
        assert job.poll() is None, job.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    job.send_signal(stop)
    _, stderr = job.communicate(timeout=120)
    return job.returncode, stderr


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_a_stop_signal_mid_way_leaves_no_tarball_and_a_rerun_finishes(ckpts, tmp_path, stop):
    """A real Ctrl-C or scancel while masks are being written (enough images to be mid-way)."""
    count = 16
    ids = [f"2009_{i:06d}" for i in range(count)]
    data, out = tmp_path / "data", tmp_path / "out"
    tree = make_tree(data, sizes=[(96, 72)] * count, ids=ids)
    member_dir = out / MEMBER_DIR
    command = [sys.executable, "-m", "fcn_lightning.predict", f"ckpt_path={ckpts['21']}",
               "format=voc", f"paths.data_dir={data}", f"out_dir={out}", "device=cpu",
               f"hydra.run.dir={tmp_path / 'hydra'}"]  # fmt: skip
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    returncode, stderr = stopped_mid_way(command, tmp_path, env, member_dir, "*.png", stop)
    assert returncode == 128 + stop, (returncode, stderr[-2000:])
    err = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and f"interrupted by {stop.name}" in err[0], err
    assert f"the same command with out_dir={out}" in err[0], err
    assert "Traceback" not in stderr
    written = len(list(member_dir.glob("*.png")))
    assert 0 < written < count, written
    assert not (out / "voc2012_comp6_test.tar.gz").exists()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    masks = read_tarball(out / "voc2012_comp6_test.tar.gz")
    assert sorted(masks) == sorted(f"{MEMBER_DIR}/{i}.png" for i in ids)
    for image_id in ids[:3] + ids[-2:]:
        jpeg = tree / "JPEGImages" / f"{image_id}.jpg"
        assert_is_argmax(masks[f"{MEMBER_DIR}/{image_id}.png"], ckpts["21"], jpeg)


def test_a_zoo_model_of_other_classes_is_refused_before_its_download(tmp_path, monkeypatch, capfd):
    # Before: model_zoo=pascalcontext-fcn8s format=voc downloaded and converted 537 MB,
    # then said "ckpt_path=<the cache's file> predicts 60 classes" (a key not typed).
    import yaml

    data, out = tmp_path / "data", tmp_path / "out"
    make_tree(data)
    entry = {"what": "60 classes", "format": "caffemodel", "file": "ctx.caffemodel",
             "url": "http://127.0.0.1:9/ctx.caffemodel",  # nothing listens: a fetch fails
             "md5": None, "size": None, "min_size": 1000, "mirrors": [], "alternatives": [],
             "loadable": True, "variant": "fcn8s", "num_classes": 60, "scores": {},
             "scores_note": "none", "source": "this test"}  # fmt: skip
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"version": 1, "models": {"ctx-fcn8s": entry}}))
    monkeypatch.setenv("FCN_ZOO_REGISTRY", str(registry))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    status = run_entry("predict", ["model_zoo=ctx-fcn8s", "format=voc", f"paths.data_dir={data}",
                                   f"out_dir={out}", "device=cpu",
                                   f"hydra.run.dir={tmp_path / 'hydra'}"], monkeypatch)  # fmt: skip
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("error: model_zoo=ctx-fcn8s predicts 60 classes"), err
    assert not (tmp_path / "torch").exists() and not out.exists()


def test_a_file_in_the_way_of_the_masks_folder_is_one_line(ckpts, tmp_path, monkeypatch, capfd):
    # Before: out_dir/results a file gave a FileExistsError traceback.
    data, out = tmp_path / "data", tmp_path / "out"
    make_tree(data)
    out.mkdir()
    (out / "results").write_text("mine")
    assert predict_voc(ckpts["21"], data, out, monkeypatch) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: out_dir={out}: "), err
    assert str(out / MEMBER_DIR) in err[0]
    assert (out / "results").read_text() == "mine" and sorted(out.iterdir()) == [out / "results"]


def test_images_mode_stopped_by_sigterm_says_what_is_done_and_leaves_whole_files(ckpts, tmp_path):
    """Before: scancel (SIGTERM) ended predict with no word and could cut a PNG short."""
    count = 40  # enough that the signal lands mid-way
    tree = make_tree(tmp_path / "data", sizes=[(96, 72)] * count,
                     ids=[f"img{i:02d}" for i in range(count)])  # fmt: skip
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fcn_lightning.predict", f"ckpt_path={ckpts['21']}",
               f"inputs={tree / 'JPEGImages'}", f"out_dir={out}", "device=cpu",
               f"hydra.run.dir={tmp_path / 'hydra'}"]  # fmt: skip
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    returncode, stderr = stopped_mid_way(command, tmp_path, env, out, "*_overlay.jpg",
                                         signal.SIGTERM)  # fmt: skip
    assert returncode == 143, (returncode, stderr[-2000:])
    err = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and err[0].startswith("error: interrupted by SIGTERM: "), err
    assert f"have their mask and overlay in {out}" in err[0] and "Traceback" not in stderr
    assert not list(out.glob(".*.tmp"))  # no file half written
    masks = sorted(out.glob("img*.png"))
    assert 0 < len(masks) < count
    for mask in masks:
        with Image.open(mask) as im:
            assert im.mode == "P" and im.size == (96, 72)
            im.load()
