"""The reference model zoo from the command line (also ``fcn-zoo``):

- ``python -m fcn_lightning.zoo``: every entry as a table (name, what it is, size, paper
  scores, cached or converted, loadable);
- ``python -m fcn_lightning.zoo show NAME``: one entry's facts, sources and cache paths;
- ``python -m fcn_lightning.zoo fetch NAME [--mirror BASE_URL ...]``: download and convert
  it now (a segmentation model into its cached checkpoint; an ImageNet backbone into the
  weights cache that ``model.pretrained=true`` reads), e.g. before going offline.
"""

from __future__ import annotations

import argparse
import sys

from fcn_lightning.interop.zoo import (
    checkpoint_for,
    checkpoint_path,
    is_converted,
    source_path,
    zoo_dir,
)
from fcn_lightning.interop.zoo_registry import ZooEntry, load_registry
from fcn_lightning.run.boundary import user_errors


def _size(entry: ZooEntry) -> str:
    main = entry.main
    if main.size:
        return f"{main.size / 1e6:.0f} MB"
    return f">= {main.min_size / 1e6:.0f} MB"


def _state(entry: ZooEntry) -> str:
    if entry.is_backbone:
        path = _backbone_cache(entry)
        return "converted" if path is not None and path.is_file() else "no"
    if is_converted(entry):
        return "converted"
    if any(source_path(f).is_file() for f in (entry.main, *entry.alternatives)):
        return "downloaded"
    return "no"


def _loadable(entry: ZooEntry) -> str:
    if entry.is_backbone:
        return "backbone"
    return "yes" if entry.loadable else "no (planned)"


def _backbone_cache(entry: ZooEntry):
    from fcn_lightning.models.build import backbone_weights
    from fcn_lightning.models.weights import cache_path

    spec = entry.backbone_weights or {}
    if not spec:
        return None
    return cache_path(backbone_weights(spec.get("backbone", "vgg16"), spec["weights"]))


def table(entries: list[ZooEntry]) -> str:
    rows = [("name", "what", "size", "paper scores", "cached", "loadable")]
    rows += [(e.name, e.what, _size(e), e.scores_text(), _state(e), _loadable(e)) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def show(entry: ZooEntry) -> str:
    lines = [f"{entry.name}: {entry.what}"]
    for file in (entry.main, *entry.alternatives):
        lines += [
            f"  {file.format}: {file.url}",
            f"    {file.expected()}",
            f"    cache: {source_path(file)}",
        ]
        lines += [f"    mirror: {m}" for m in file.mirrors]
    if entry.is_backbone:
        lines.append(f"  converted: {_backbone_cache(entry)}")
    else:
        lines.append(f"  converted: {checkpoint_path(entry)} ({_state(entry)})")
    lines.append(
        f"  loadable: {_loadable(entry)}" + (f" ({entry.refusal})" if entry.refusal else "")
    )
    if not entry.is_backbone:
        lines.append(f"  evaluate with: model_zoo={entry.name} {entry.evaluated_with()}")
    lines.append(f"  scores: {entry.scores or entry.scores_note}")
    lines.append(f"  source: {entry.source}")
    return "\n".join(lines)


def fetch(entry: ZooEntry, mirrors: list[str]) -> str:
    if not entry.is_backbone:
        path = checkpoint_for(entry.name, key="fcn-zoo fetch ", mirrors=mirrors, task="fetch")
        return f"{entry.name}: {path} (eval/predict/export model_zoo={entry.name})"
    return fetch_backbone(entry, mirrors)


def fetch_backbone(entry: ZooEntry, mirrors: list[str]) -> str:
    from fcn_lightning.download import download_file
    from fcn_lightning.errors import DownloadError
    from fcn_lightning.interop.caffe_convert import convert

    target = _backbone_cache(entry)
    spec = entry.backbone_weights or {}
    use = (
        f"model.backbone={spec.get('backbone')} model.pretrained=true "
        f"model.weights={spec.get('weights')}"
    )
    if target is not None and target.is_file():
        return f"{entry.name}: {target} is there ({use})"
    if entry.main.format == "torchvision":
        from fcn_lightning.models.build import backbone_weights
        from fcn_lightning.models.weights import fetch_state_dict

        fetch_state_dict(backbone_weights(spec["backbone"], spec["weights"]))
        return f"{entry.name}: {target} ({use})"
    main = entry.main
    urls = [*(f"{b.rstrip('/')}/{main.file}" for b in mirrors), main.url, *main.mirrors]
    dest = source_path(main)
    try:
        download_file(urls[0], dest, md5=main.md5, mirrors=urls[1:], official=main.url)
    except DownloadError as error:
        failures = "; ".join(getattr(error, "failures", [])) or str(error)
        raise DownloadError(
            f"fetch {entry.name}: could not download {main.file} ({failures}): download "
            f"{main.url} yourself ({main.expected()}) and put it at {dest}, then run again"
        ) from None
    path, what = convert(dest, target)
    return f"{entry.name}: wrote {what}: {path} ({use})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fcn_lightning.zoo",
        description="The FCN authors' released models: list them, show one, fetch one.",
    )
    parser.add_argument("command", nargs="?", default="list", choices=("list", "show", "fetch"))
    parser.add_argument("name", nargs="?", help="a zoo entry (show, fetch)")
    parser.add_argument("--mirror", action="append", default=[], help="a base URL tried first")
    args = parser.parse_args(argv)
    with user_errors():
        registry = load_registry()
        if args.command == "list":
            print(table(list(registry.entries.values())))
            print(f"\ncache: {zoo_dir()} (TORCH_HOME moves it); registry: {registry.path}")
            return
        if not args.name:
            print(f"error: {args.command} needs a NAME: python -m fcn_lightning.zoo "
                  f"{args.command} voc-fcn8s", file=sys.stderr)  # fmt: skip
            sys.exit(2)
        entry = registry.get(args.name, key=f"fcn-zoo {args.command} ")
        print(show(entry) if args.command == "show" else fetch(entry, args.mirror))


if __name__ == "__main__":
    main()
