"""Parameters and FLOPs per backbone, variant and geometry:
`python -m fcn_lightning.bench.flops [--backbones vgg16 resnet50 ...]`.

Counted by torch.utils.flop_counter on meta tensors, so nothing is computed and any size
is instant. Prints a Markdown table: the caffe (pad 100) and aligned geometries side by
side where the backbone has both.
"""

from __future__ import annotations

import argparse

import torch

from fcn_lightning.bench.counting import inference_flops
from fcn_lightning.models.build import BACKBONES, backbone_default, build_fcn
from fcn_lightning.models.fcn import VARIANTS


def _meta_model(variant: str, geometry: str | None, backbone: str, classes: int):
    # The layers the config would build: AlexNet's follow its default (Caffe) weights.
    weights = backbone_default(backbone, "weights")
    with torch.device("meta"):
        return build_fcn(
            variant, num_classes=classes, geometry=geometry, backbone=backbone, weights=weights
        ).eval()


def forward_flops(
    variant: str,
    geometry: str,
    height: int,
    width: int,
    classes: int = 21,
    backbone: str = "vgg16",
) -> int:
    return inference_flops(_meta_model(variant, geometry, backbone, classes), height, width)


def parameter_count(variant: str, backbone: str = "vgg16", classes: int = 21) -> int:
    model = _meta_model(variant, None, backbone, classes)
    return sum(p.numel() for p in model.parameters())


def supports(backbone: str, variant: str) -> bool:
    cls, _ = BACKBONES[backbone]
    spec = VARIANTS[variant]
    return {spec.score_from, *spec.skips} <= set(cls.ROLES)


def flops_table(
    sizes: list[tuple[int, int]], variants: list[str], backbones: tuple[str, ...] = ("vgg16",)
) -> str:
    rows = [
        "| backbone | variant | params (M) | input (W x H) | caffe GFLOPs | aligned GFLOPs "
        "| caffe / aligned |",
        "|---|---|---|---|---|---|---|",
    ]
    for backbone in backbones:
        geometries = BACKBONES[backbone][0].GEOMETRIES
        for variant in (v for v in variants if supports(backbone, v)):
            params = parameter_count(variant, backbone) / 1e6
            for height, width in sizes:
                flops = {
                    g: forward_flops(variant, g, height, width, backbone=backbone)
                    for g in geometries
                }
                caffe, aligned = flops.get("caffe"), flops["aligned"]
                ratio = f"{caffe / aligned:.2f}" if caffe else "-"
                caffe_text = f"{caffe / 1e9:.1f}" if caffe else "-"
                rows.append(
                    f"| {backbone} | {variant} | {params:.1f} | {width} x {height} "
                    f"| {caffe_text} | {aligned / 1e9:.1f} | {ratio} |"
                )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["vgg16"], choices=sorted(BACKBONES))
    parser.add_argument("--variants", nargs="+", default=["fcn32s", "fcn16s", "fcn8s"])
    parser.add_argument("--sizes", nargs="+", default=["500x375", "500x500"], help="WxH")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x"))[::-1] for s in args.sizes]
    variants = [v for v in args.variants if v in VARIANTS]
    print(flops_table(sizes, variants, tuple(args.backbones)))


if __name__ == "__main__":
    main()
