"""``python -m fcn_lightning.hha`` end to end on tiny depth PNGs and a tiny HDF5 .mat: what
it writes (checked against the scenes' geometry), reruns, workers, raw depth, and every bad
input ending in one ``error:`` line, exit status 2, with what was written kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_lightning.data.depth_files import DepthItem
from fcn_lightning.data.hha import NYUD_CAMERA, Camera
from fcn_lightning.hha import camera_for, main
from tests.data.hha_scenes import CX, CY, FX, FY, SHAPE, Room, expected_disparity

INTRINSICS = ["--fx", str(FX), "--fy", str(FY), "--cx", str(CX), "--cy", str(CY)]
ROOT = Path(__file__).resolve().parents[2]


def floor_mm(pitch: float = 40.0) -> np.ndarray:
    """A floor 1.5 m below a camera pitched down `pitch` degrees, in whole millimetres."""
    return np.round(Room(pitch=pitch, height=150.0).depth_cm() * 10).astype(np.uint16)


def write_depth(path: Path, depth_mm: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(depth_mm.astype(np.uint16)).save(path)  # 16-bit greyscale
    return path


def depth_folder(root: Path, pitches=(40.0, 30.0)) -> Path:
    for n, pitch in enumerate(pitches):
        write_depth(root / "depth" / f"img_{5001 + n}.png", floor_mm(pitch))
    return root / "depth"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main([str(a) for a in argv])
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def assert_floor_hha(hha: np.ndarray, depth_mm: np.ndarray) -> None:
    np.testing.assert_array_equal(hha[..., 0], expected_disparity(depth_mm / 10.0))
    assert (hha[..., 1] == 0).all() and (hha[..., 2] == 38).all()


def test_writes_one_hha_png_per_depth_png(tmp_path, capsys):
    source = depth_folder(tmp_path)
    status, out, _ = run([source, "--out", tmp_path / "hha", *INTRINSICS], capsys)
    assert status == 0 and "wrote 2 HHA PNGs" in out
    assert sorted(p.name for p in (tmp_path / "hha").iterdir()) == ["img_5001.png", "img_5002.png"]
    for n, pitch in enumerate((40.0, 30.0)):
        assert_floor_hha(read_rgb(tmp_path / "hha" / f"img_{5001 + n}.png"), floor_mm(pitch))


def test_a_rerun_skips_what_is_written_and_redoes_what_is_not(tmp_path, capsys):
    source, out_dir = depth_folder(tmp_path), tmp_path / "hha"
    assert run([source, "--out", out_dir, *INTRINSICS], capsys)[0] == 0
    first, second = out_dir / "img_5001.png", out_dir / "img_5002.png"
    os.utime(first, ns=(10**9, 10**9))  # a mark a rewrite would erase
    second.unlink()
    status, out, _ = run([source, "--out", out_dir, *INTRINSICS], capsys)
    assert status == 0 and "wrote 1 HHA PNG to" in out and "1 already there" in out
    assert first.stat().st_mtime_ns == 10**9 and second.is_file()
    assert run([source, "--out", out_dir, "--overwrite", *INTRINSICS], capsys)[0] == 0
    assert first.stat().st_mtime_ns != 10**9


def test_workers_write_the_same_files(tmp_path, capsys):
    source = depth_folder(tmp_path, pitches=(40.0, 35.0, 30.0))
    assert run([source, "--out", tmp_path / "one", *INTRINSICS], capsys)[0] == 0
    assert run([source, "--out", tmp_path / "two", "--jobs", 2, *INTRINSICS], capsys)[0] == 0
    for name in ("img_5001.png", "img_5002.png", "img_5003.png"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_raw_depth_zeros_are_left_out_of_the_normals(tmp_path, capsys):
    source = depth_folder(tmp_path, pitches=(40.0,))
    raw = floor_mm()
    raw[10:30, 10:40] = 0  # filled in: inside, 7 x 7 windows hold no measured point
    write_depth(tmp_path / "raw" / "img_5001.png", raw)
    argv = [source, "--out", tmp_path / "hha", "--raw-depth", tmp_path / "raw", *INTRINSICS]
    assert run(argv, capsys)[0] == 0
    hha = read_rgb(tmp_path / "hha" / "img_5001.png")
    assert (hha[14:26, 14:36, 2] == 218).all()  # no normal there: read as 180 degrees
    assert (hha[:8, :, 2] == 38).all() and (hha[34:, :, 2] == 38).all()
    np.testing.assert_array_equal(hha[..., 0], expected_disparity(floor_mm() / 10.0))


def test_the_official_mat_file_is_read_transposed_in_metres(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    depths = np.stack([floor_mm(40.0), floor_mm(30.0)]) / 1000.0
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "w") as mat:
        mat["depths"] = depths.transpose(0, 2, 1).astype(np.float32)  # MATLAB's column order
        mat["rawDepths"] = np.ones_like(mat["depths"])
    argv = [tmp_path / "nyu_depth_v2_labeled.mat", "--out", tmp_path / "hha", *INTRINSICS]
    status, out, _ = run(argv, capsys)
    assert status == 0 and "wrote 2 HHA PNGs" in out
    for n, pitch in enumerate((40.0, 30.0)):
        assert_floor_hha(read_rgb(tmp_path / "hha" / f"img_{5001 + n}.png"), floor_mm(pitch))


def test_the_mat_file_without_h5py_asks_for_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now fails
    (tmp_path / "nyu_depth_v2_labeled.mat").write_bytes(b"\x89HDF\r\n\x1a\n")
    status, _, err = run([tmp_path / "nyu_depth_v2_labeled.mat", "--out", tmp_path], capsys)
    assert status == 2 and err.strip().splitlines() == [
        "error: reading nyu_depth_v2_labeled.mat needs h5py: "
        "pip install 'fcn-lightning[nyud]' (or pip install h5py)"
    ]


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _h5(path: Path, **datasets) -> None:
    import h5py

    with h5py.File(path, "w") as mat:
        for name, value in datasets.items():
            mat[name] = value


# Each: how to spoil the inputs (given the root, returns the argv) and what the line says.
BAD = {
    "missing folder": (lambda r: [r / "nowhere", *INTRINSICS], "no such folder or file"),
    "empty folder": (lambda r: [_mkdir(r / "empty"), *INTRINSICS], "no .png files"),
    "8-bit PNG": (
        lambda r: [_with(r, "img_5003.png", np.zeros(SHAPE, np.uint8)), *INTRINSICS],
        "img_5003.png: a PNG image of mode L, not a 16-bit greyscale PNG",
    ),
    "RGB PNG": (
        lambda r: [_with(r, "img_5003.png", np.zeros((*SHAPE, 3), np.uint8)), *INTRINSICS],
        "mode RGB, not a 16-bit greyscale PNG",
    ),
    "not a PNG": (lambda r: [_garbage(r), *INTRINSICS], "img_5003.png: not a readable PNG"),
    "some intrinsics": (lambda r: [r / "depth", "--fx", "50"], "--fy, --cx, --cy: give all"),
    "unknown camera": (lambda r: [r / "depth"], "64 x 48 depth image; the NYUDv2 camera"),
    "no jobs": (lambda r: [r / "depth", "--jobs", "0", *INTRINSICS], "--jobs=0: give 1"),
    "zero scale": (lambda r: [r / "depth", "--depth-scale", "0", *INTRINSICS], "--depth-scale"),
    "text file": (lambda r: [_touch(r / "depth.txt"), *INTRINSICS], "neither a folder"),
    "crop of 64 x 48": (lambda r: [r / "depth", "--crop"], "64 x 48 depth image; --crop needs"),
    "no raw depth": (
        lambda r: [r / "depth", "--raw-depth", _mkdir(r / "raw"), *INTRINSICS],
        "raw/img_5001.png: missing; --raw-depth needs a PNG for each",
    ),
    "v5 .mat": (
        lambda r: [_touch(r / "nyu.mat", b"MATLAB 5.0 MAT-file"), *INTRINSICS],
        "nyu.mat: not a MATLAB v7.3 (HDF5) file",
    ),
    ".mat without depths": (
        lambda r: [_h5_at(r / "nyu.mat", images=np.zeros((1, 2, 2))), *INTRINSICS],
        "no 3-d 'depths' dataset",
    ),
    "no depth at all": (
        lambda r: [_with(r, "img_5003.png", np.zeros(SHAPE, np.uint16)), *INTRINSICS],
        "img_5003.png: the depth image has no pixel with a depth",
    ),
}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.write_bytes(data)
    return path


def _with(root: Path, name: str, array: np.ndarray) -> Path:
    _png(root / "depth" / name, array)
    return root / "depth"


def _garbage(root: Path) -> Path:
    _touch(root / "depth" / "img_5003.png", b"\x89PNG not really")
    return root / "depth"


def _h5_at(path: Path, **datasets) -> Path:
    pytest.importorskip("h5py")
    _h5(path, **datasets)
    return path


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_ends_in_one_error_line_and_keeps_what_was_written(case, tmp_path, capsys):
    spoil, message = BAD[case]
    depth_folder(tmp_path)
    out_dir = _mkdir(tmp_path / "hha")
    earlier = _touch(out_dir / "img_4000.png", b"written before")
    status, _, err = run([*spoil(tmp_path), "--out", out_dir], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and errors[0] == err.strip().splitlines()[-1]
    assert message in errors[0], errors[0]
    assert earlier.read_bytes() == b"written before"
    written = sorted(p.name for p in out_dir.iterdir())
    if case == "no depth at all":  # found while writing: the two good ones before it stay
        assert written == ["img_4000.png", "img_5001.png", "img_5002.png"]
    else:  # found by the checks before the first write
        assert written == ["img_4000.png"]


def test_an_out_path_that_is_a_file_or_the_depth_folder_is_refused(tmp_path, capsys):
    source = depth_folder(tmp_path)
    status, _, err = run([source, "--out", _touch(tmp_path / "f"), *INTRINSICS], capsys)
    assert status == 2 and "--out is a file, not a folder" in err
    status, _, err = run([source, "--out", source, *INTRINSICS], capsys)
    assert status == 2 and "is the depth folder itself" in err
    assert sorted(p.name for p in source.iterdir()) == ["img_5001.png", "img_5002.png"]


def test_python_m_fcn_lightning_hha_exits_2_on_a_missing_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fcn_lightning.hha", str(tmp_path / "none"), "--out", "x"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none'}: no such folder or file: give the folder of depth PNGs"
    ]


def test_crop_moves_the_principal_point_by_the_prepared_datas_offsets():
    frame = DepthItem("img_5001.png", (480, 640), Path("nyu.mat"), index=0)
    prepared = DepthItem("img_5001.png", (425, 560), Path("img_5001.png"))
    cropped = camera_for(frame, None, crop=True)
    assert cropped == camera_for(prepared, None, crop=False)
    assert (cropped.cx, cropped.cy) == (NYUD_CAMERA.cx - 40, NYUD_CAMERA.cy - 45)
    assert camera_for(frame, None, crop=False) == NYUD_CAMERA
    given = Camera(fx=500.0, fy=500.0, cx=320.0, cy=240.0)
    assert camera_for(frame, given, crop=True) == Camera(500.0, 500.0, 280.0, 195.0)
    assert camera_for(prepared, given, crop=False) == given
