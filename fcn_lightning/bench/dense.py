"""Shift-and-stitch vs filter dilation, FLOPs and CPU time:
``python -m fcn_lightning.bench.dense [--size 500x375] [--time-size 256x256]``.

FLOPs (of the map before the final upsampling/resampling, which both methods share) are
counted by torch.utils.flop_counter on meta tensors, so nothing is computed; times are the
fastest of a few forward passes on this machine's CPU. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch

from fcn_lightning.bench.counting import inference_flops
from fcn_lightning.models.build import build_fcn
from fcn_lightning.models.dense import DenseFCN


def dense_net(variant: str, method: str, factor: int, *, geometry: str, width: float, device):
    with torch.device(device):
        model = build_fcn(variant, num_classes=21, geometry=geometry, width=width).eval()
    return model.coarse_scores if method == "none" else DenseFCN(model, method, factor).dense_scores


def seconds(net, height: int, width: int, repeats: int) -> float:
    x = torch.randn(1, 3, height, width)
    times = []
    with torch.no_grad():
        net(x)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    return min(times)  # the least disturbed by other processes


def table(args: argparse.Namespace) -> str:
    (fh, fw), (th, tw) = args.size, args.time_size
    rows = [
        f"| variant | method | factor | GFLOPs at {fw} x {fh} | x plain | "
        f"CPU s at {tw} x {th} (width {args.width:g}) |",
        "|---|---|---|---|---|---|",
    ]
    for variant in args.variants:
        plain = None
        for method, factor in [("none", 1)] + [
            (m, f) for f in args.factors for m in ("stitch", "dilate")
        ]:
            kw = {"geometry": args.geometry}
            counted = inference_flops(
                dense_net(variant, method, factor, width=1.0, device="meta", **kw), fh, fw
            )
            plain = plain or counted
            timed = dense_net(variant, method, factor, width=args.width, device="cpu", **kw)
            spent = seconds(timed, th, tw, args.repeats)
            rows.append(
                f"| {variant} | {method} | {factor} | {counted / 1e9:.1f} | "
                f"{counted / plain:.2f} | {spent:.2f} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def size(text: str) -> tuple[int, int]:
        w, h = (int(v) for v in text.split("x"))
        return h, w

    parser.add_argument("--variants", nargs="+", default=["fcn32s", "pool5"])
    parser.add_argument("--factors", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--geometry", default="aligned")
    parser.add_argument("--size", type=size, default=(375, 500), help="WxH for FLOPs")
    parser.add_argument("--time-size", type=size, default=(256, 256), help="WxH for timing")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier, timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(table(args))


if __name__ == "__main__":
    main()
