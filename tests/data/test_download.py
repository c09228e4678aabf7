"""download_file / extract_archive / dataset download against a local HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fcn_lightning.data import sources
from fcn_lightning.data.datamodule import SegmentationDataModule
from fcn_lightning.download import download_file, extract_archive
from fcn_lightning.errors import DataError, DownloadError
from tests.data_fakes import FakeTree, fake_ids, make_tar


class FileServer:
    """Serves `files` (URL path -> bytes) with HTTP Range support on 127.0.0.1.

    `cut_after[path] = n` makes the next response for `path` stop after n body bytes
    (the connection drops, as a flaky server's would).
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if range_header:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                body = data[start:]
                self.send_response(206 if range_header else 200)
                if range_header:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.cut_after.pop(self.path, None)
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def payload(size: int = 300_000) -> bytes:
    return bytes((i * 7919) % 251 for i in range(size))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"


def test_download_checks_md5_and_sha256(server, tmp_path):
    data = payload()
    server.files["/a.bin"] = data
    dest = download_file(
        f"{server.url}/a.bin",
        tmp_path / "a.bin",
        md5=md5(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    assert dest.read_bytes() == data
    assert not (tmp_path / "a.bin.part").exists()


def test_download_resumes_a_cut_transfer_with_a_range_request(server, tmp_path):
    data = payload()
    server.files["/a.bin"] = data
    server.cut_after["/a.bin"] = 100_000
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError):
        download_file(f"{server.url}/a.bin", dest, md5=md5(data))
    assert (tmp_path / "a.bin.part").stat().st_size == 100_000
    assert not dest.exists()
    download_file(f"{server.url}/a.bin", dest, md5=md5(data))
    assert dest.read_bytes() == data
    assert server.requests[-1] == ("/a.bin", "bytes=100000-")


def test_download_restarts_when_the_part_does_not_match(server, tmp_path):
    data = payload()
    server.files["/a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(b"x" * 5000)  # not a prefix of the file
    with pytest.raises(DownloadError, match="md5 mismatch"):
        download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=md5(data))
    assert not (tmp_path / "a.bin.part").exists()  # a bad part is dropped, not resumed again
    assert download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=md5(data)).is_file()


def test_download_skips_a_complete_file_and_replaces_a_corrupt_one(server, tmp_path):
    data = payload()
    server.files["/a.bin"] = data
    dest = tmp_path / "a.bin"
    dest.write_bytes(data)
    download_file(f"{server.url}/a.bin", dest, md5=md5(data))
    assert server.requests == []
    dest.write_bytes(b"corrupt")
    download_file(f"{server.url}/a.bin", dest, md5=md5(data))
    assert dest.read_bytes() == data
    assert len(server.requests) == 1


def test_download_falls_back_to_mirrors(server, tmp_path):
    data = payload(1000)
    server.files["/mirror/a.bin"] = data
    dest = download_file(
        f"{server.url}/missing/a.bin",
        tmp_path / "a.bin",
        md5=md5(data),
        mirrors=[closed_port_url(), f"{server.url}/mirror/a.bin"],
    )
    assert dest.read_bytes() == data


def test_download_without_network_says_what_to_fetch_and_where(tmp_path):
    url = closed_port_url()
    dest = tmp_path / "sub" / "big.tar"
    with pytest.raises(DownloadError) as info:
        download_file(url, dest, md5="0123456789abcdef0123456789abcdef")
    message = str(info.value)
    assert "\n" not in message
    assert url in message and str(dest) in message
    assert "md5 0123456789abcdef0123456789abcdef" in message


def test_download_rejects_a_wrong_checksum(server, tmp_path):
    server.files["/a.bin"] = payload(1000)
    with pytest.raises(DownloadError, match="md5 mismatch"):
        download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5="0" * 32)
    assert not (tmp_path / "a.bin").exists()


def test_extract_refuses_members_outside_the_target(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(DownloadError, match="evil"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_extract_reports_a_truncated_archive(tmp_path):
    staging = tmp_path / "staging"
    (staging / "d").mkdir(parents=True)
    (staging / "d" / "f.bin").write_bytes(np.random.default_rng(0).bytes(50_000))
    archive = make_tar(tmp_path / "a.tgz", staging, ["d"])
    archive.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(DownloadError, match=r"a\.tgz"):
        extract_archive(archive, tmp_path / "out")


def test_datamodule_downloads_voc_and_sbd_archives(server, tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    tree = FakeTree(staging)
    voc_train, voc_val = fake_ids(1, 3), fake_ids(10, 2)
    tree.voc({"train": voc_train, "val": voc_val, "trainval": voc_train + voc_val})
    tree.sbd({"train": fake_ids(20, 3) + voc_val[:1], "val": fake_ids(30, 2)})
    voc_tar = make_tar(tmp_path / "voc.tar", staging, ["VOCdevkit"])
    sbd_tgz = make_tar(tmp_path / "sbd.tgz", staging, ["benchmark_RELEASE"])
    server.files["/m/VOCtrainval_11-May-2012.tar"] = voc_tar.read_bytes()
    server.files["/m/benchmark.tgz"] = sbd_tgz.read_bytes()
    # The real archives' checksums cannot match the fakes, and the real hosts must never
    # be contacted from a test: point both at the local server.
    for name, data in (("voc2012", voc_tar), ("voc2011", voc_tar), ("sbd", sbd_tgz)):
        source = sources.SOURCES[name]
        archive = dataclasses.replace(
            source.archive, url=closed_port_url(), md5=md5(data.read_bytes()), mirrors=()
        )
        monkeypatch.setitem(sources.SOURCES, name, dataclasses.replace(source, archive=archive))

    data_dir = tmp_path / "data"
    kwargs = dict(train_split="voc_aug_train", val_split="voc2012_val", num_workers=0)
    offline = SegmentationDataModule(data_dir=str(data_dir), **kwargs)
    offline.prepare_data()  # download=false: nothing fetched
    with pytest.raises(DataError, match=r"data\.download=true"):
        offline.setup("fit")

    dm = SegmentationDataModule(
        data_dir=str(data_dir), download=True, download_mirrors=[f"{server.url}/m/"], **kwargs
    )
    dm.prepare_data()
    dm.setup("fit")
    assert sorted(dm.train_dataset.ids) == sorted(
        set(voc_train + fake_ids(20, 3) + fake_ids(30, 2))
    )
    assert dm.val_dataset.ids == voc_val
    assert (data_dir / "downloads" / "benchmark.tgz").is_file()
    fetched = len(server.requests)
    dm.prepare_data()
    assert len(server.requests) == fetched  # already there: no second download


def test_interrupted_extraction_is_not_taken_for_a_dataset(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / "VOCdevkit" / "VOC2012").mkdir(parents=True)
    (data_dir / ".VOCtrainval_11-May-2012.tar.extracting").touch()
    dm = SegmentationDataModule(
        train_split="voc2012_train", val_split="voc2012_val", data_dir=str(data_dir)
    )
    with pytest.raises(DataError, match="interrupted"):
        dm.setup("fit")


def test_missing_dataset_message_names_the_archive_and_the_place(tmp_path):
    dm = SegmentationDataModule(
        train_split="sbd_train", val_split="sbd_val", data_dir=str(tmp_path)
    )
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "benchmark_RELEASE" / "dataset") in message
    assert "benchmark.tgz" in message and "82b4d87ceb2ed10f6038a1cba92111cb" in message


def test_partial_file_is_kept_for_the_next_run(server, tmp_path):
    data = payload()
    server.files["/a.bin"] = data
    server.cut_after["/a.bin"] = 10
    with pytest.raises(DownloadError):
        download_file(f"{server.url}/a.bin", tmp_path / "a.bin")
    assert Path(tmp_path / "a.bin.part").read_bytes() == data[:10]


def test_a_failed_download_names_the_official_url_not_the_users_mirror(server, tmp_path):
    server.files["/cut/a.bin"] = payload(1000)
    server.cut_after["/cut/a.bin"] = 10
    mirror, official = f"{server.url}/dead/a.bin", f"{server.url}/official/a.bin"
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError) as info:
        download_file(
            mirror, dest, md5=md5(payload(1000)), mirrors=[official, f"{server.url}/cut/a.bin"],
            official=official,
        )  # fmt: skip
    message = str(info.value)
    assert (
        f"3 URLs tried: {mirror}: HTTP 404 Not Found; {official}: HTTP 404 Not Found; " in message
    )
    assert f"{server.url}/cut/a.bin: connection closed after 10 of 1000 bytes" in message
    assert message.endswith(f"download {official} yourself (md5 {md5(payload(1000))}) and put "
                            f"it at {dest}")  # fmt: skip
