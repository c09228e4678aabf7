"""Bad input at the boundary, second table: the message names the real cause and the right
fix; a start that lacks several things lists them all at once, before anything is fetched;
nothing earlier is lost. The harness (tests/bad_input/harness.py) says what each case
asserts; the cases that need a process of their own (a file size limit, a user who cannot
read a folder) run the entry point as a subprocess and assert the same."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from fcn_lightning.data import sources
from fcn_lightning.models import weights
from tests.bad_input.harness import (
    SPLITS,
    Case,
    Place,
    check_case,
    edited_checkpoint,
    snapshot,
    truncate,
    write_text,
)
from tests.train_helpers import ROOT, tiny_overrides

ARCHIVE = "synthetic.tar"
ARCHIVE_MD5 = "0123456789abcdef0123456789abcdef"
CAFFE_FILE = "vgg16_from_caffe.pth"


class _Handler(BaseHTTPRequestHandler):
    """``/cut/<name>``: promises 1000 bytes and sends 10; anything else: 404."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.startswith("/cut/"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.close_connection = True


_SERVER = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
threading.Thread(target=_SERVER.serve_forever, args=(0.05,), daemon=True).start()
URL = f"http://127.0.0.1:{_SERVER.server_address[1]}"


def no_downloads(place: Place, monkeypatch) -> None:
    """An empty weights cache, and any download attempt fails the test (a traceback)."""
    monkeypatch.setenv("TORCH_HOME", str(place.root / "torch_home"))

    def fetched(*args, **kwargs):
        raise AssertionError(f"a download was started: {args[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fetched)
    monkeypatch.setattr("fcn_lightning.download._fetch", fetched)


def no_known_weights_download(place: Place, monkeypatch) -> None:
    no_downloads(place, monkeypatch)
    spec = dataclasses.replace(weights.PRETRAINED["torchvision"], url=None, torchvision=None)
    monkeypatch.setitem(weights.PRETRAINED, "torchvision", spec)


def downloadable_synthetic(place: Place, monkeypatch) -> None:
    """The synthetic dataset as if it came as an archive: its official host answers 404
    and its mirror cuts the transfer short (all on a local server)."""
    archive = sources.Archive(
        filename=ARCHIVE, url=f"{URL}/official/{ARCHIVE}", md5=ARCHIVE_MD5, size="2 MB",
        mirrors=(f"{URL}/cut/{ARCHIVE}",),
    )  # fmt: skip
    source = dataclasses.replace(sources.SOURCES["synthetic"], archive=archive)
    monkeypatch.setitem(sources.SOURCES, "synthetic", source)


def downloadable_synthetic_offline(place: Place, monkeypatch) -> None:
    downloadable_synthetic(place, monkeypatch)
    no_downloads(place, monkeypatch)


def local_caffe_host(place: Place, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(place.root / "torch_home"))
    spec = dataclasses.replace(weights.PRETRAINED["caffe"], url=f"{URL}/official/{CAFFE_FILE}")
    monkeypatch.setitem(weights.PRETRAINED, "caffe", spec)


def file_instead_of_folder(place: Place) -> Path:
    path = place.root / "datafile"
    write_text(path, "not a folder\n")
    return path


def symlink_loop(place: Place) -> Path:
    path = place.root / "loop"
    os.symlink(path.name, path)  # loop -> loop
    return path


def newer_checkpoint(place: Place) -> Path:
    """The earlier run's last.ckpt as a newer fcn-lightning with a new model option
    would write it."""
    return edited_checkpoint(place, "newer.ckpt", attention_gate=True)


BROKEN_LAST = ["ckpt_path={run}/checkpoints/last.ckpt: not a readable PyTorch weights file",
               "intact checkpoints beside it, newest first: step000002-miu",
               "use the newest with ckpt_path={run}/checkpoints/step000002-miu"]  # fmt: skip
NEWER = ["ckpt_path={root}/newer.ckpt: written by a newer fcn-lightning",
         "model.attention_gate", "are unknown to fcn-lightning",
         "model.init_from={root}/newer.ckpt"]  # fmt: skip

CASES = [
    # -- every missing prerequisite at once, nothing fetched ----------------------------
    Case("three prerequisites missing at once", "data", "train",
         lambda p: [f"paths.data_dir={p.root / 'nowhere'}", "model.pretrained=true",
                    f"model.weights_path={p.root / 'missing.pth'}",
                    f"model.init_from={p.root / 'gone.ckpt'}"],
         ["3 problems before training can start: (1) synthetic dataset not found at "
          "{root}/nowhere/synthetic", "; (2) model.weights_path={root}/missing.pth: no such file",
          "; (3) model.init_from={root}/gone.ckpt: no such file"],
         patch=no_downloads, resume=False),
    Case("missing dataset found before the weights are downloaded", "data", "train",
         lambda p: [f"paths.data_dir={p.root / 'nowhere'}", "model.pretrained=true"],
         ["synthetic dataset not found at {root}/nowhere/synthetic", "data.generate=true"],
         patch=no_downloads),
    Case("missing split list and weights without a download", "data", "train",
         lambda p: ["model.pretrained=true"],
         ["2 problems before training can start",
          "(1) split list {voc}/" + SPLITS + "/train.txt is missing",
          "(2) could not fetch the torchvision VGG16 weights (no public download is known)",
          "{root}/torch_home/hub/checkpoints/"],
         setup=lambda p: (p.voc / SPLITS / "train.txt").unlink(), patch=no_known_weights_download),
    Case("empty split list and a missing class list", "data", "train",
         lambda p: [f"data.classes={p.root / 'classes.txt'}"],
         ["2 problems before training can start", "(1) split list {voc}/" + SPLITS +
          "/val.txt lists no image IDs", "(2) data.classes='{root}/classes.txt': no such class"],
         setup=lambda p: write_text(p.voc / SPLITS / "val.txt", "\n"), resume=False),
    Case("missing image and a missing init_from", "data", "train",
         lambda p: [f"model.init_from={p.root / 'gone.ckpt'}"],
         ["2 problems before training can start", "(1) {image}: missing image of ID",
          "(2) model.init_from={root}/gone.ckpt: no such file"],
         setup=lambda p: p.image().unlink(), resume=False),
    Case("data.download=true: the archive is left to fetch, the weights file is not", "data",
         "train",
         lambda p: [f"paths.data_dir={p.root / 'fresh'}", "data.download=true",
                    "model.pretrained=true", f"model.weights_path={p.root / 'missing.pth'}"],
         ["model.weights_path={root}/missing.pth: no such file; check the path"],
         patch=downloadable_synthetic_offline, resume=False),
    # -- paths.data_dir that cannot hold datasets ---------------------------------------
    Case("data_dir is a file", "data", "train",
         lambda p: [f"paths.data_dir={file_instead_of_folder(p)}"],
         ["paths.data_dir={root}/datafile is a file, not a folder",
          "point paths.data_dir at the folder that holds the datasets"]),
    Case("data_dir below a file", "data", "train",
         lambda p: [f"paths.data_dir={file_instead_of_folder(p) / 'pascal'}"],
         ["paths.data_dir={root}/datafile/pascal: {root}/datafile is a file, not a folder"]),
    Case("data_dir is a symlink loop", "data", "train",
         lambda p: [f"paths.data_dir={symlink_loop(p)}"],
         ["paths.data_dir={root}/loop is a loop of symbolic links ({root}/loop -> {root}/loop)",
          "point it at a real folder"]),
    Case("data_dir is a file, with data.generate=true", "data", "train",
         lambda p: [f"paths.data_dir={file_instead_of_folder(p)}", "data.generate=true"],
         ["paths.data_dir={root}/datafile is a file, not a folder"], fresh=True),
    Case("data_dir is empty", "config", "train", lambda p: ["paths.data_dir="],
         ["paths.data_dir is empty"], resume=False),
    Case("data_dir is empty, with data.generate=true", "config", "train",
         lambda p: ["paths.data_dir=", "data.generate=true"],
         ["paths.data_dir is empty"], fresh=True),
    Case("eval on a data_dir that is a file", "data", "eval",
         lambda p: [f"data_dir={file_instead_of_folder(p)}"],
         ["paths.data_dir={root}/datafile is a file, not a folder"]),
    # -- a broken last.ckpt beside intact ones ------------------------------------------
    Case("broken last.ckpt beside a step checkpoint (ckpt_path=last)", "checkpoint", "train",
         lambda p: [], BROKEN_LAST, setup=lambda p: truncate(p.ckpt)),
    Case("broken last.ckpt beside a step checkpoint (ckpt_path=auto)", "checkpoint", "train",
         lambda p: ["ckpt_path=auto"], BROKEN_LAST, setup=lambda p: truncate(p.ckpt)),
    Case("broken last.ckpt beside a step checkpoint (eval)", "checkpoint", "eval",
         lambda p: [], BROKEN_LAST, setup=lambda p: truncate(p.ckpt)),
    # -- a checkpoint from a newer fcn-lightning ---------------------------------------
    Case("hyperparameter from a newer version (train ckpt_path)", "checkpoint", "train",
         lambda p: [f"ckpt_path={newer_checkpoint(p)}"], NEWER, resume=False),
    Case("hyperparameter from a newer version (eval)", "checkpoint", "eval", lambda p: [],
         NEWER, setup=lambda p: p.extra.update(ckpt=newer_checkpoint(p))),
    Case("hyperparameter from a newer version (predict)", "checkpoint", "predict", lambda p: [],
         NEWER, setup=lambda p: p.extra.update(ckpt=newer_checkpoint(p))),
    # -- downloads that fail ------------------------------------------------------------
    Case("dead dataset mirror, official host and its mirror failing too", "data", "train",
         lambda p: [f"paths.data_dir={p.root / 'fresh'}", "data.download=true",
                    f"data.download_mirrors=['{URL}/dead/']"],
         [f"could not download {ARCHIVE} (2 MB) (3 URLs tried: {URL}/dead/{ARCHIVE}: HTTP 404",
          f"{URL}/official/{ARCHIVE}: HTTP 404",
          f"{URL}/cut/{ARCHIVE}: connection closed after 10 of 1000 bytes",
          f"download {URL}/official/{ARCHIVE} yourself (md5 {ARCHIVE_MD5})",
          f"and put it at {{root}}/fresh/downloads/{ARCHIVE}",
          "data.download=true then extracts it into {root}/fresh"],
         patch=downloadable_synthetic, fresh=True),
    Case("dead weights mirror", "data", "train",
         lambda p: ["model.pretrained=true", "model.weights=caffe",
                    f"model.weights_url={URL}/dead/{CAFFE_FILE}"],
         [f"could not fetch the caffe VGG16 weights from the mirror model.weights_url={URL}/dead/"
          f"{CAFFE_FILE} (HTTP 404 Not Found)",
          f"download {URL}/official/{CAFFE_FILE} yourself and put it at "
          f"{{root}}/torch_home/hub/checkpoints/{CAFFE_FILE}", "model.weights_path"],
         patch=local_caffe_host, resume=False),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_the_real_cause_and_fix_and_nothing_is_lost(
    case, earlier, tmp_path, monkeypatch, capfd
):
    check_case(case, earlier, tmp_path, monkeypatch, capfd)
    if "data_dir is empty" in case.id:  # nothing read from or written into the cwd
        assert not (tmp_path / "synthetic").exists()
        assert not (tmp_path / "downloads").exists()


def test_the_table_has_its_cases():
    assert len(CASES) >= 15 and len({c.id for c in CASES}) == len(CASES)


# -- cases that need a process of their own ---------------------------------------------


def copy_earlier(earlier: Place, root: Path) -> Place:
    """The earlier outputs in `root`, their recorded paths moved with them (as check_case)."""
    place = Place(root)
    shutil.copytree(earlier.root, place.root, dirs_exist_ok=True, symlinks=True)
    for path in place.run.rglob("*"):
        if path.suffix in (".yaml", ".log"):
            path.write_text(path.read_text().replace(str(earlier.root), str(place.root)))
    return place


def run_train(place: Place, *args: str, preexec_fn=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [sys.executable, "-m", "fcn_lightning.train", *tiny_overrides(place.data, place.run),
               "data.generate=false", *args]  # fmt: skip
    return subprocess.run(
        command, cwd=place.root, env=env, capture_output=True, text=True, timeout=600,
        preexec_fn=preexec_fn,
    )  # fmt: skip


def the_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


FILE_SIZE_LIMIT = 1_000_000  # the logs, CSV and sample pictures fit; a checkpoint does not


def file_size_limit() -> None:
    # Ignored, SIGXFSZ no longer kills the writer: write() fails with EFBIG instead.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, resource.RLIM_INFINITY))


def test_a_checkpoint_over_the_file_size_limit_is_one_line_and_every_checkpoint_is_kept(
    earlier, tmp_path
):
    place = copy_earlier(earlier, tmp_path)
    checkpoints = place.run / "checkpoints"
    before = snapshot(checkpoints)
    assert before and all(len(data) > FILE_SIZE_LIMIT for data in before.values())
    csv = (place.run / "csv" / "metrics.csv").read_bytes()

    done = run_train(place, "trainer.max_steps=4", "ckpt_path=last", preexec_fn=file_size_limit)
    message = the_error_line(done)
    assert f"could not write checkpoint {checkpoints}/" in message
    assert "File too large (EFBIG)" in message and "ulimit -f" in message
    assert "rerun the same command to resume" in message
    assert snapshot(checkpoints) == before  # byte for byte, and no .part left beside them
    assert (place.run / "csv" / "metrics.0.csv").read_bytes() == csv  # the record kept


def _without_dac_override() -> None:
    """Root reads any folder: drop the capabilities that let it (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH) from the bounding set, so the command runs as a plain owner."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_unreadable_data_dir_is_named_with_the_fix(earlier, tmp_path):
    place = copy_earlier(earlier, tmp_path)
    outputs = place.root / "outputs"
    before = snapshot(outputs)
    place.data.chmod(0)
    try:
        preexec = _without_dac_override if os.geteuid() == 0 else None
        try:
            done = run_train(place, "trainer.max_steps=4", "ckpt_path=last", preexec_fn=preexec)
        except subprocess.SubprocessError as err:  # no CAP_SETPCAP in this container
            pytest.skip(f"cannot drop root's read-anything capability here ({err})")
    finally:
        place.data.chmod(0o755)
    message = the_error_line(done)
    assert f"paths.data_dir={place.data} cannot be read (permission denied)" in message
    assert f"chmod u+rx {place.data}" in message
    after = snapshot(outputs)
    assert all(after.get(k) == v for k, v in before.items() if not k.endswith(".log"))
