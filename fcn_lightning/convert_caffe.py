"""Convert Caffe weights: ``python -m fcn_lightning.convert_caffe FILE.caffemodel [--out P]``
(also ``fcn-convert-caffe``). The reader and converter are `fcn_lightning.interop`."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcn_lightning.interop.caffe_convert import convert
from fcn_lightning.run.boundary import user_errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fcn_lightning.convert_caffe",
        description="Convert a Caffe .caffemodel (ImageNet VGG16/AlexNet or a reference FCN).",
    )
    parser.add_argument("caffemodel", type=Path, help="the binary .caffemodel file")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write (default: the weights cache for ImageNet models, "
        "<caffemodel>.ckpt for FCNs)",
    )
    args = parser.parse_args(argv)
    with user_errors():
        print(f"reading {args.caffemodel}", flush=True)
        path, what = convert(args.caffemodel, args.out)
        print(f"wrote {what}: {path}")


if __name__ == "__main__":
    main()
