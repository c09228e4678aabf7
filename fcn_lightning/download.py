"""Fetching and unpacking the files a run needs: dataset archives and pretrained weights.

Dataset archives are gigabytes on servers that are often down, so a download resumes
where it stopped (a `.part` file and an HTTP Range request), falls back to mirrors, and is
only accepted once its checksum matches. Every failure ends in a `DownloadError` whose
one line says which file to fetch by hand and where to put it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from fcn_lightning.errors import DownloadError

CHUNK = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "fcn-lightning-downloader"


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _checksum_problem(path: Path, md5: str | None, sha256: str | None) -> str | None:
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected and file_digest(path, algorithm) != expected.lower():
            return f"{algorithm} mismatch (expected {expected})"
    return None


def _expected(md5: str | None, sha256: str | None) -> str:
    sums = [f"{name} {value}" for name, value in (("md5", md5), ("sha256", sha256)) if value]
    return f" ({', '.join(sums)})" if sums else ""


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _fetch(url: str, part: Path, desc: str) -> None:
    """Append the rest of `url` to `part`: a Range request when part of it is there."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return  # the .part already holds the whole file; the checksum decides
        raise
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with _progress() as progress, open(part, "ab" if offset else "wb") as out:
            task = progress.add_task(desc, total=total, completed=offset)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                progress.advance(task, len(chunk))
        if total is not None and part.stat().st_size < total:
            raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")


def download_file(
    url: str,
    dest: Path | str,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    mirrors: Iterable[str] = (),
    desc: str | None = None,
    official: str | None = None,
) -> Path:
    """Download `url` (or else each of `mirrors`, in order) to `dest` and return `dest`.

    An existing `dest` whose checksum matches is kept without network access. Bytes
    arrive in `dest.part`, which a later call resumes; `dest` appears only when the whole
    file is there and its checksum matches. `official`: the file's own home, the one a
    failure tells the user to fetch by hand (default `url`); `url` may be a user's mirror.
    """
    dest = Path(dest)
    desc = desc or dest.name
    if dest.is_file():
        if _checksum_problem(dest, md5, sha256) is None:
            return dest
        dest.unlink()  # a corrupt earlier copy: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = []
    for candidate in (url, *mirrors):
        try:
            _fetch(candidate, part, desc)
        except (OSError, http.client.HTTPException, ValueError) as err:
            # The .part is kept: the next attempt, or the next run, resumes it.
            failures.append(f"{candidate}: {_reason(err)}")
            continue
        problem = _checksum_problem(part, md5, sha256)
        if problem is None:
            os.replace(part, dest)
            return dest
        part.unlink()
        failures.append(f"{candidate}: {problem}")
    tried = f"{len(failures)} URLs tried: " if len(failures) > 1 else ""
    error = DownloadError(
        f"could not download {desc} ({tried}{'; '.join(failures)}): download "
        f"{official or url} yourself{_expected(md5, sha256)} and put it at {dest}"
    )
    error.failures = failures  # for a caller that words its own advice
    raise error


def _reason(err: BaseException) -> str:
    """One line for a failed fetch: ``HTTP 404 Not Found``, ``connection refused``, ..."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, http.client.IncompleteRead):
        return f"the connection closed early ({err})"
    reason = getattr(err, "reason", None) or err
    return " ".join(str(reason).split()) or type(err).__name__


def extract_archive(archive: Path | str, dest_dir: Path | str) -> Path:
    """Unpack a .tar, .tar.gz/.tgz or .zip into `dest_dir` and return `dest_dir`.

    Members that would land outside `dest_dir` (absolute paths, `..`, links out) are
    refused. Existing directories are merged, so two archives can share a top folder.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    _refuse_outside(archive, name, dest_dir)
                zf.extractall(dest_dir)
        else:
            with tarfile.open(archive) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest_dir, filter="data")
                else:  # Python < 3.10.12 has no extraction filters
                    for member in tf.getmembers():
                        _refuse_outside(archive, member.name, dest_dir)
                        if member.islnk() or member.issym():
                            _refuse_outside(archive, member.linkname, dest_dir)
                    tf.extractall(dest_dir)
    except _filter_errors() as err:
        raise DownloadError(f"{archive}: refused to extract an unsafe member ({err})") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise DownloadError(
            f"{archive} is not a readable archive ({err}): delete it and download it again"
        ) from None
    except OSError as err:  # a corrupt gzip stream is an OSError too
        raise DownloadError(
            f"could not extract {archive} into {dest_dir} ({err}): check the archive "
            "(delete it to download it again), free space and permissions"
        ) from None
    return dest_dir


def _refuse_outside(archive: Path, name: str, dest_dir: Path) -> None:
    if not (dest_dir / name).resolve().is_relative_to(dest_dir.resolve()):
        raise DownloadError(f"{archive}: member {name!r} would be written outside {dest_dir}")


def _filter_errors() -> tuple[type[Exception], ...]:
    error = getattr(tarfile, "FilterError", None)
    return (error,) if error is not None else ()


def download_and_extract(
    url: str,
    archive: Path | str,
    dest_dir: Path | str,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    mirrors: Iterable[str] = (),
    desc: str | None = None,
    official: str | None = None,
) -> Path:
    """`download_file` then `extract_archive`; an interrupted extraction is redone.

    A marker file lives beside the extracted tree while it is being written, so a caller
    can tell a finished tree from one cut short (see `extraction_unfinished`).
    """
    archive = download_file(
        url, archive, md5=md5, sha256=sha256, mirrors=mirrors, desc=desc, official=official
    )
    marker = _marker(archive, Path(dest_dir))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    extract_archive(archive, dest_dir)
    marker.unlink()
    return Path(dest_dir)


def extraction_unfinished(archive_name: str, dest_dir: Path | str) -> bool:
    """Whether extracting `archive_name` into `dest_dir` started and never finished."""
    return _marker(Path(archive_name), Path(dest_dir)).exists()


def _marker(archive: Path, dest_dir: Path) -> Path:
    return dest_dir / f".{archive.name}.extracting"
