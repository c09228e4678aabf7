"""FLOPs of the caffe (pad 100) and aligned geometries: `python -m fcn_lightning.models.flops`.

Counted by torch.utils.flop_counter on meta tensors, so nothing is computed and any size
is instant. Prints a Markdown table.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from fcn_lightning.models.build import build_fcn
from fcn_lightning.models.fcn import VARIANTS


def forward_flops(variant: str, geometry: str, height: int, width: int, classes: int = 21) -> int:
    with torch.device("meta"):
        model = build_fcn(variant, num_classes=classes, geometry=geometry).eval()
        x = torch.empty(1, 3, height, width)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def flops_table(sizes: list[tuple[int, int]], variants: list[str]) -> str:
    rows = [
        "| variant | input (W x H) | caffe GFLOPs | aligned GFLOPs | caffe / aligned |",
        "|---|---|---|---|---|",
    ]
    for variant in variants:
        for height, width in sizes:
            caffe = forward_flops(variant, "caffe", height, width)
            aligned = forward_flops(variant, "aligned", height, width)
            rows.append(
                f"| {variant} | {width} x {height} | {caffe / 1e9:.1f} | {aligned / 1e9:.1f} "
                f"| {caffe / aligned:.2f} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["fcn32s", "fcn16s", "fcn8s"])
    parser.add_argument("--sizes", nargs="+", default=["500x375", "500x500"], help="WxH")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x"))[::-1] for s in args.sizes]
    print(flops_table(sizes, [v for v in args.variants if v in VARIANTS]))


if __name__ == "__main__":
    main()
