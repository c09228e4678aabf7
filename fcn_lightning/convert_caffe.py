"""Convert Caffe weights: ``python -m fcn_lightning.convert_caffe FILE.caffemodel [--out P]``
(also ``fcn-convert-caffe``). The reader and converter are `fcn_lightning.interop`."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcn_lightning.interop.caffe_convert import convert
from fcn_lightning.interop.caffe_nets import INPUT_CHOICES
from fcn_lightning.run.boundary import user_errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fcn_lightning.convert_caffe",
        description="Convert a Caffe .caffemodel (ImageNet VGG16/AlexNet or a reference FCN of "
        "PASCAL VOC / Context, NYUDv2 or SIFT Flow).",
    )
    parser.add_argument("caffemodel", type=Path, help="the binary .caffemodel file")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write (default: the weights cache for ImageNet models, "
        "<caffemodel>.ckpt for FCNs)",
    )
    parser.add_argument(
        "--input",
        choices=INPUT_CHOICES,
        default=None,
        help="data.input of the net, for NYUDv2's single-stream nets (color | hha), which "
        "their layers do not tell apart; read off the released file names otherwise",
    )
    args = parser.parse_args(argv)
    with user_errors():
        print(f"reading {args.caffemodel}", flush=True)
        path, what = convert(args.caffemodel, args.out, input_name=args.input)
        print(f"wrote {what}: {path}")


if __name__ == "__main__":
    main()
