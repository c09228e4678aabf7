"""The reference model zoo: ``model_zoo=<name>`` (eval, predict, export) and
``model.init_from=zoo:<name>`` (train) resolve to a fcn-lightning checkpoint made once.

The first use downloads the released file into the cache (`zoo_dir`:
``<torch hub dir>/fcn_lightning/zoo``, so ``TORCH_HOME`` moves it like the weights cache),
user mirrors (``zoo_mirrors``: base URLs, the file name appended) first, then the official
URL and the registry's mirrors; resumable, checked by md5/sha1 where known and by size
always. The .caffemodel (or pytorch-fcn .pth) is converted once into ``<name>.ckpt``; a
``<name>.ckpt.json`` beside it records that checkpoint's md5, so a later run uses it without
network or conversion, and one truncated or altered since is made again, never trusted. A
file lock keeps two processes resolving the same entry from writing the same files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from fcn_lightning.download import download_file, file_digest
from fcn_lightning.errors import ConfigError, DownloadError, WeightsError
from fcn_lightning.interop.zoo_registry import (
    ZooEntry,
    ZooFile,
    _typed,
    load_registry,
    model_source_problem,
)

log = logging.getLogger("fcn_lightning")
PREFIX = "zoo:"  # model.init_from=zoo:<name>
LOCK_TIMEOUT_S = 3600.0  # another process downloading 500 MB on a slow line


def zoo_dir() -> Path:
    return Path(torch.hub.get_dir()) / "fcn_lightning" / "zoo"


def source_path(file: ZooFile) -> Path:
    return zoo_dir() / file.file


def checkpoint_path(entry: ZooEntry) -> Path:
    return zoo_dir() / f"{entry.name}.ckpt"


def _record_path(entry: ZooEntry) -> Path:
    return checkpoint_path(entry).with_name(f"{entry.name}.ckpt.json")


def _lock_path(entry: ZooEntry) -> Path:
    return zoo_dir() / f".{entry.name}.lock"


def _refuse_folders(entry: ZooEntry, *, key: str) -> None:
    """A folder at a path where the cache keeps one of the entry's files would end in a
    traceback (or in advice to delete the intact download): named, and left as it is."""
    sources = [source_path(f) for f in (entry.main, *entry.alternatives)]
    record = _record_path(entry)
    paths = [_lock_path(entry), checkpoint_path(entry), record,
             record.with_name(record.name + ".part"), *sources,
             *(s.with_name(s.name + ".part") for s in sources)]  # fmt: skip
    for path in paths:
        if path.exists() and not path.is_file():
            raise WeightsError(
                f"{key}: {path} is a folder where the zoo cache keeps a file; move it "
                "elsewhere (or set TORCH_HOME to another folder), then run again"
            )


def usable_entry(name: str, *, key: str, task: str = "eval") -> ZooEntry:
    """The registry entry ``name``, refused in one line when this project cannot use it
    for ``task``. Reads the registry only: no network, no weights."""
    entry = load_registry().get(name, key=key)
    key = _typed(key, name)
    if entry.loadable is False:
        raise WeightsError(f"{key}: {entry.refusal}; it stays listed in the zoo")
    if entry.is_backbone:
        weights = (entry.backbone_weights or {}).get("weights", "caffe")
        backbone = (entry.backbone_weights or {}).get("backbone", "vgg16")
        raise ConfigError(
            f"{key}: ImageNet {backbone} weights, not a segmentation model, so "
            f"nothing to {task}; train from them with model.backbone={backbone} "
            f"model.pretrained=true model.weights={weights}"
        )
    return entry


def is_converted(entry: ZooEntry) -> bool:
    """Whether ``<name>.ckpt`` is there with the md5 recorded when it was written."""
    ckpt, record = checkpoint_path(entry), _record_path(entry)
    if not ckpt.is_file() or not record.is_file():
        return False
    try:
        recorded = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get("size") != ckpt.stat().st_size:
        return False
    return recorded.get("md5") == file_digest(ckpt, "md5")


def checkpoint_for(name: str, *, key: str, mirrors: Sequence[str] = (), task: str = "eval") -> Path:
    """The converted checkpoint of zoo entry ``name``: from the cache, or downloaded and
    converted now. ``key``: the config key that named it, for messages."""
    from filelock import FileLock, Timeout

    entry = usable_entry(name, key=key, task=task)
    key = _typed(key, name)  # as typed: model_zoo=<name>, model.init_from=zoo:<name>
    folder = zoo_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsError(
            f"{key}: the zoo cache {folder} cannot be created ({error.strerror}); "
            "set TORCH_HOME to a writable folder"
        ) from None
    _refuse_folders(entry, key=key)
    lock = FileLock(str(_lock_path(entry)))
    try:
        lock.acquire(timeout=1)
    except Timeout:
        log.info("waiting for another process preparing %s in %s", entry.name, folder)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout:
            raise WeightsError(
                f"{key}: another process has held {lock.lock_file} for "
                f"{LOCK_TIMEOUT_S:.0f} s; if none is running, delete that file and rerun"
            ) from None
    try:
        if is_converted(entry):
            log.info("%s: the converted checkpoint %s", key, checkpoint_path(entry))
            return checkpoint_path(entry)
        source, fmt = _source_file(entry, key=key, mirrors=mirrors)
        return _convert(entry, source, fmt, key=key)
    finally:
        lock.release()


def _check_file(path: Path, file: ZooFile) -> str | None:
    """Why ``path`` is not ``file`` as released (size, md5, sha1), or None."""
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        return f"has {size:,} bytes, the released file {file.size:,}"
    if size < file.min_size:
        return f"has {size:,} bytes, fewer than the {file.min_size:,} the weights alone take"
    for algorithm in ("md5", "sha1"):
        expected = getattr(file, algorithm)
        if expected and file_digest(path, algorithm) != expected.lower():
            return f"has another {algorithm} than the released file ({expected})"
    return None


def _advice(entry: ZooEntry) -> str:
    """Where to put the file by hand so that the next run picks it up."""
    main = entry.main
    words = (
        f"download {main.url} yourself ({main.expected()}) and put it at "
        f"{source_path(main)}, then run again"
    )
    for alt in entry.alternatives:
        words += (
            f" (or pytorch-fcn's {alt.file}, {alt.expected()}, from {alt.url}, at "
            f"{source_path(alt)})"
        )
    return words


def _source_file(entry: ZooEntry, *, key: str, mirrors: Sequence[str]) -> tuple[Path, str]:
    """A checked copy of the entry's weights in the cache: one already there (by hand or
    by an earlier run), else a download of the main file."""
    for file in (entry.main, *entry.alternatives):
        path = source_path(file)
        if not path.is_file():
            continue
        problem = _check_file(path, file)
        if problem is not None:  # the user's file: refused, kept as it is
            raise WeightsError(f"{key}: {path} {problem}; delete it, and {_advice(entry)}")
        return path, file.format
    main = entry.main
    user = [f"{base.rstrip('/')}/{main.file}" for base in mirrors]
    urls = [*user, main.url, *main.mirrors]
    dest = source_path(main)
    log.info("%s: downloading %s to %s", key, main.file, dest)
    try:
        download_file(
            urls[0], dest, md5=main.md5, mirrors=urls[1:], desc=main.file, official=main.url
        )
    except DownloadError as error:
        failures = "; ".join(getattr(error, "failures", [])) or str(error)
        raise DownloadError(
            f"{key}: could not download {main.file} ({failures}): {_advice(entry)}"
        ) from None
    problem = _check_file(dest, main)
    if problem is not None:  # what came down is not the file: nothing of it is kept
        dest.unlink()
        raise DownloadError(
            f"{key}: the downloaded {main.file} {problem} (removed): {_advice(entry)}"
        )
    return dest, main.format


@contextlib.contextmanager
def _own_hydra() -> Iterator[None]:
    """The converter composes the model's config with Hydra's compose API, which refuses to
    start inside a running @hydra.main app (eval, predict, export, train): the app's global
    Hydra is set aside meanwhile and put back after."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton

    running = Singleton._instances.pop(GlobalHydra, None)
    try:
        yield
    finally:
        Singleton._instances.pop(GlobalHydra, None)
        if running is not None:
            Singleton._instances[GlobalHydra] = running


def _convert(entry: ZooEntry, source: Path, fmt: str, *, key: str) -> Path:
    from fcn_lightning.run.checkpoint_io import atomic_torch_save

    ckpt, record = checkpoint_path(entry), _record_path(entry)
    record.unlink(missing_ok=True)  # the checkpoint below is not trusted until recorded
    log.info("%s: converting %s into %s (once)", key, source.name, ckpt)
    try:
        with _own_hydra():
            if fmt == "caffemodel":
                from fcn_lightning.interop.caffe_convert import convert

                convert(source, ckpt, input_name=entry.input)
            else:
                atomic_torch_save(_torchfcn_checkpoint(entry, source), ckpt)
    except WeightsError as error:  # a damaged copy that passed the checks known for it
        raise WeightsError(
            f"{key}: {source.name} does not convert ({error}); delete {source}, and "
            f"{_advice(entry)}"
        ) from None
    _check_converted(entry, ckpt, source, key=key)
    body = {"md5": file_digest(ckpt, "md5"), "size": ckpt.stat().st_size, "source": source.name}
    part = record.with_name(record.name + ".part")
    part.write_text(json.dumps(body, indent=2))
    os.replace(part, record)
    return ckpt


def _torchfcn_checkpoint(entry: ZooEntry, source: Path) -> dict:
    """pytorch-fcn's .pth of a reference FCN as a fcn-lightning checkpoint (its layer
    names are the reference's; every tensor checked against the model's shape)."""
    from fcn_lightning.interop.caffe_blobs import _fill, _shapes
    from fcn_lightning.interop.caffe_fcn import _upsampling, fcn_checkpoint
    from fcn_lightning.interop.torchfcn import torchfcn_to_fcn_lightning
    from fcn_lightning.models.build import build_fcn
    from fcn_lightning.models.checkpoints import read_state_dict

    where = str(source)
    params = {k: v.numpy() for k, v in read_state_dict(source, key="model_zoo").items()}
    if "score_fr.weight" not in params or "conv1_1.weight" not in params:
        raise WeightsError(f"{where}: no conv1_1/score_fr weights, so not a pytorch-fcn FCN")
    settings = {
        "variant": entry.variant, "backbone": "vgg16",
        "num_classes": int(params["score_fr.weight"].shape[0]), "geometry": "caffe",
        "weights": "caffe", "upsampling": _upsampling(params),
        "width": params["conv1_1.weight"].shape[0] / 64,
    }  # fmt: skip
    renamed = torchfcn_to_fcn_lightning(params)  # type: ignore[arg-type]
    with torch.device("meta"):
        target = build_fcn(**settings).state_dict()
    unexpected = sorted(set(renamed) - set(target))
    if unexpected:
        raise WeightsError(f"{where}: layers {unexpected[:4]} have no place in {entry.variant}")
    return fcn_checkpoint(_fill(_shapes(target), renamed, where), settings, source)


def _check_converted(entry: ZooEntry, ckpt: Path, source: Path, *, key: str) -> None:
    """The file must hold the model the registry names (variant, classes)."""
    from fcn_lightning.models.checkpoints import read_checkpoint

    model = (read_checkpoint(ckpt, key=key, mmap=True).get("hyper_parameters") or {})["model"]
    found = (model.get("variant"), model.get("num_classes"), model.get("backbone"),
             model.get("input", "rgb"))  # fmt: skip
    wanted = (entry.variant, entry.num_classes, entry.backbone, entry.input)
    if found != wanted:
        ckpt.unlink()
        raise WeightsError(
            f"{key}: {source} holds a {found[0]} ({found[2]}, input {found[3]}, {found[1]} "
            f"classes), the zoo entry is a {wanted[0]} ({wanted[2]}, input {wanted[3]}, "
            f"{wanted[1]} classes); delete {source} and {_advice(entry)}"
        )


# -- the entry points' hooks -----------------------------------------------------------


def resolve_checkpoint(cfg: DictConfig, task: str) -> str:
    """``cfg.ckpt_path``, set from ``cfg.model_zoo`` when that names the model (eval,
    predict, export); exactly one of the two must be given."""
    name, path = cfg.get("model_zoo"), cfg.get("ckpt_path")
    problem = model_source_problem(path, name)
    if problem is not None:
        raise ConfigError(problem)
    if name:
        mirrors = list(cfg.get("zoo_mirrors") or [])
        ckpt = checkpoint_for(str(name), key="model_zoo", mirrors=mirrors, task=task)
        with open_dict(cfg):
            cfg.ckpt_path = str(ckpt)
    return str(cfg.ckpt_path)


def init_from_problem(
    value: object, num_classes: int | None = None, *, key: str = "model.init_from"
) -> str | None:
    """Why ``model.init_from=zoo:<name>`` cannot be used, found without any download;
    None for a usable entry (or a value that is not ``zoo:``). ``num_classes``: the
    data's, which the released score layers must have to be copied."""
    if not (isinstance(value, str) and value.startswith(PREFIX)):
        return None
    try:
        entry = usable_entry(value[len(PREFIX) :], key=f"{key}=zoo:", task="start from")
    except (ConfigError, WeightsError) as error:
        return str(error)
    if entry.num_classes and num_classes and entry.num_classes != num_classes:
        return (
            f"{key}={value}: predicts {entry.num_classes} classes, the data has "
            f"{num_classes} (data.num_classes), so its score layers cannot be copied; "
            f"choose data with {entry.num_classes} classes, or start from ImageNet weights "
            "(model.pretrained=true) instead"
        )
    return None


def resolve_init_from(value: str | Path, mirrors: Sequence[str] = ()) -> str | Path:
    """``model.init_from``: a ``zoo:<name>`` value becomes that entry's checkpoint."""
    if isinstance(value, str) and value.startswith(PREFIX):
        name = value[len(PREFIX) :]
        return checkpoint_for(name, key="model.init_from=zoo:", mirrors=mirrors, task="start from")
    return value
