"""Dense prediction without interpolation: shift-and-stitch and filter dilation (docs/paper.md
section 1, "Shift-and-stitch is filter dilation").

Both turn a net of output stride ``S`` into one whose coarse scores are ``factor`` times
denser (stride ``S / factor``), ``factor`` a power of two dividing ``S``:

- `shift_and_stitch` runs the unchanged net on the ``factor x factor`` copies of the input
  shifted by ``(dy, dx) * S / factor`` pixels and interleaves their coarse outputs.
- `dilate_` converts the net in place: the last pooling layers lose their stride and every
  later filter is dilated by the stride removed before it ("a trous"), same weights.

What "the same numbers" means, exactly (tests/models/test_dense.py checks each claim):

- Dilation equals stitching applied *layer by layer*: at each pooling whose stride is removed,
  the rest of the net is evaluated on the pooling input shifted by 0 or 1 cell and the outputs
  are interleaved. This holds at every output cell, in both geometries and at any input size,
  provided the stride-1 poolings keep Caffe's rounding up (``ceil_mode``): a window hanging
  over the right/bottom edge is a max over the cells that exist, i.e. padding by -inf there.
- Stitching shifted copies of the *input* (the paper's recipe, and what `shift_and_stitch`
  does) equals dilation away from the image border. Near it they differ, because a shifted
  copy loses its first ``dy`` rows and ``dx`` columns, and every convolution pads with zeros
  at the copy's border, which moves with the shift. For a single pooling layer (no padded
  convolution before it) the two agree everywhere: stitched stride-2 pooling is stride-1
  pooling evaluated at every position.

Both leave a map at stride ``S / factor`` whose cells sit on input pixels
``scale * i + offset`` (`FCN.coarse_coord`); `Resample` turns it into per-pixel scores by
bilinear interpolation between cell centres. With ``factor == S`` that is only a half-pixel
shift (pooling puts cell centres between pixels), otherwise it replaces the final
upsampling, which is why a *learned* final upsampling is refused unless ``factor == S``.
Skip nets (FCN-16s/8s) can be stitched (their fused stride-8/16 map comes out denser), but
not dilated: their upsampling layers between the fused maps have no dilated counterpart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcn_lightning.errors import ConfigError
from fcn_lightning.models.backbones.resnet import ResNetBackbone
from fcn_lightning.models.bilinear import bilinear_weight
from fcn_lightning.models.coord_map import PASS_THROUGH, CoordMap
from fcn_lightning.models.fcn import FCN

METHODS = ("none", "stitch", "dilate")


class DilatedMaxPool2d(nn.MaxPool2d):
    """A max pooling whose stride was removed: stride 1, ``dilation`` apart, and (for a
    pooling that rounded its output size up) padded by -inf at the right/bottom so that the
    output is as large as the input, as the interleaved shifted poolings are."""

    def __init__(self, kernel_size: int, *, dilation: int, ceil_mode: bool) -> None:
        super().__init__(kernel_size, stride=1, padding=0, dilation=dilation)
        self.pad_end = dilation * (kernel_size - 1) if ceil_mode else 0

    def forward(self, x: Tensor) -> Tensor:
        if self.pad_end:
            x = F.pad(x, (0, self.pad_end, 0, self.pad_end), value=float("-inf"))
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad_end={self.pad_end}"


class Resample(nn.Module):
    """Per-pixel scores from a map whose cell ``i`` sits on pixel ``scale * i + offset``:
    bilinear interpolation between cell centres, the edge cells repeated beyond them.

    Without ``size`` the output reaches as far as the map does (``ceil(offset + scale * n)``
    pixels), which covers the image wherever the FCN's own upsampling would."""

    def __init__(self, scale: Fraction | float, offset: Fraction | float) -> None:
        super().__init__()
        self.scale, self.offset = float(scale), float(offset)

    def _axis(self, x: Tensor, dim: int, size: int) -> Tensor:
        cells = x.shape[dim]
        position = torch.arange(size, device=x.device, dtype=torch.float64) - self.offset
        position = (position / self.scale).clamp(0, cells - 1)
        low = position.floor().long().clamp(max=cells - 1)
        high = (low + 1).clamp(max=cells - 1)
        weight = (position - low).to(x.dtype)
        shape = [1] * x.dim()
        shape[dim] = size
        weight = weight.view(shape)
        return x.index_select(dim, low) * (1 - weight) + x.index_select(dim, high) * weight

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        if size is None:
            size = tuple(math.ceil(self.offset + self.scale * n) for n in x.shape[-2:])
        return self._axis(self._axis(x, -2, size[0]), -1, size[1])

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, offset={self.offset:g}"


def _least(values: list[int | Tensor]) -> int | Tensor:
    """``min(values)``; while tracing for export the sizes are tensors, and the minimum is
    kept in the graph so that it follows the input size."""
    if any(isinstance(v, Tensor) for v in values):
        return torch.stack([torch.as_tensor(v) for v in values]).min()
    return min(values)


def interleave(phases: list[list[Tensor]], factor: int) -> Tensor:
    """One map from ``factor x factor`` maps: ``phases[a][b]`` goes to rows ``a::factor``
    and columns ``b::factor``. Shifted copies can have fewer cells than the unshifted one;
    the result is the largest block of rows and columns that every phase fills.

    Written as pad, stack and reshape (no strided writes), so it traces into an ONNX or
    TorchScript graph of dynamic size."""
    # Largest n such that phase a fills its ceil((n - a) / factor) cells.
    rows = _least([phases[a][0].shape[-2] * factor + a for a in range(factor)])
    cols = _least([phases[0][b].shape[-1] * factor + b for b in range(factor)])
    height, width = phases[0][0].shape[-2:]  # the unshifted copy has the most cells
    grid = torch.stack(
        [
            torch.stack(
                [F.pad(p, (0, width - p.shape[-1], 0, height - p.shape[-2])) for p in row], -3
            )
            for row in phases
        ],
        -4,
    )  # ... x a x b x height x width
    lead = grid.dim() - 4
    out = grid.permute(*range(lead), lead + 2, lead, lead + 3, lead + 1)  # ... h x a x w x b
    out = out.reshape(*grid.shape[:lead], height * factor, width * factor)
    return out[..., :rows, :cols]


def shift_and_stitch(net: Callable[[Tensor], Tensor], x: Tensor, factor: int, step: int) -> Tensor:
    """``net``'s output made ``factor`` times denser by running it on shifted copies of ``x``.

    Copy ``(a, b)`` is ``x`` without its first ``a * step`` rows and ``b * step`` columns
    (the input shifted up and left); its output lands on rows ``a::factor`` and columns
    ``b::factor``. ``step`` is the net's stride divided by ``factor``, so output cell ``i``
    of the result sits ``step * i`` input pixels after cell 0. An input too small to lose
    ``(factor - 1) * step`` pixels is first padded with zeros at the bottom/right.
    """
    need = (factor - 1) * step + 1
    short = [(need - n).clamp(min=0) if isinstance(n, Tensor) else max(0, need - n)
             for n in x.shape[-2:]]  # fmt: skip
    if any(isinstance(n, Tensor) for n in short) or any(short):
        x = F.pad(x, (0, short[1], 0, short[0]))
    phases = [[net(x[..., a * step :, b * step :]) for b in range(factor)] for a in range(factor)]
    return interleave(phases, factor)


def _stride(layer: nn.Module) -> int:
    stride = getattr(layer, "stride", 1)
    stride = stride if isinstance(stride, int) else stride[0]
    return int(stride)


def _chain(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, name) of each layer that `module` (an ``nn.Sequential`` or an FCN's
    backbone) applies in order to reach its scores."""
    if isinstance(module, nn.Sequential):
        return [(module, name) for name, _ in module.named_children()]
    if not isinstance(getattr(module, "features", None), nn.Sequential):
        raise ConfigError(
            f"inference.dense=dilate: the {type(module).__name__} backbone is not a "
            "chain of layers that dilation can convert; use inference.dense=stitch"
        )
    chain = _chain(module.features)
    if getattr(module, "with_fc", False):
        names = {id(child): name for name, child in module.named_children()}
        chain += [(module, names[id(layer)]) for layer in module._fc_layers()]
    return chain


def _scaled(value: int | tuple[int, ...], rate: int) -> tuple[int, int]:
    values = (value, value) if isinstance(value, int) else tuple(value)
    return (values[0] * rate, values[1] * rate)


def _dilate_conv(conv: nn.Conv2d, rate: int) -> None:
    """``conv`` with its dilation and "same" padding multiplied by ``rate``."""
    if rate > 1 and conv.kernel_size != (1, 1):
        conv.dilation = _scaled(conv.dilation, rate)
        conv.padding = _scaled(conv.padding, rate)


def _dilate_chain(chain: list[tuple[nn.Module, str]], factor: int) -> None:
    layers = [getattr(parent, name) for parent, name in chain]
    strided = [i for i, layer in enumerate(layers) if _stride(layer) > 1]
    # Remove the last strides: the layers before them stay as they are and run once.
    removed, product = [], 1
    for i in reversed(strided):
        if product >= factor:
            break
        removed.append(i)
        product *= _stride(layers[i])
    if product != factor:
        strides = [_stride(layers[i]) for i in strided]
        raise ConfigError(
            f"inference.factor={factor}: the net's strides {strides} cannot remove exactly "
            f"that factor; choose a product of its last strides"
        )
    rate = 1
    for i, ((parent, name), layer) in enumerate(zip(chain, layers, strict=True)):
        if i in removed:
            kernel, stride = layer.kernel_size, _stride(layer)
            kernel = kernel if isinstance(kernel, int) else kernel[0]
            if (
                not isinstance(layer, nn.MaxPool2d)
                or kernel != stride
                or _scaled(layer.padding, 1) != (0, 0)
                or _scaled(layer.dilation, 1) != (1, 1)
            ):
                raise ConfigError(
                    f"inference.dense=dilate: cannot remove the stride of {layer}; only "
                    "unpadded max poolings whose kernel equals their stride convert exactly"
                )
            pool = DilatedMaxPool2d(kernel, dilation=rate, ceil_mode=layer.ceil_mode)
            setattr(parent, name, pool)
            rate *= stride
        elif rate > 1:
            if isinstance(layer, nn.Conv2d) and not isinstance(layer.padding, str):
                _dilate_conv(layer, rate)
            elif not isinstance(layer, PASS_THROUGH):
                raise ConfigError(
                    f"inference.dense=dilate: does not know how to dilate {layer}; "
                    "use inference.dense=stitch"
                )


def _dilate_resnet(backbone: nn.Module, factor: int) -> None:
    """torchvision's ``replace_stride_with_dilation`` done to a built ResNet: the last
    log2(``factor``) stages that halve the resolution keep it, their first block's strided
    3x3 conv and downsampling 1x1 conv at stride 1, and every later 3x3 conv is dilated by
    the stride removed before it (the first block of such a stage by the rate before it)."""
    stages = [getattr(backbone, name) for name in backbone.stages]
    strided = [stage for stage in stages if _stride(stage[0].conv2) > 1]
    removals = int(math.log2(factor))
    if removals > len(strided):
        raise ConfigError(
            f"inference.factor={factor}: this ResNet has {len(strided)} strided stage(s) "
            f"to dilate, so inference.factor={2 ** len(strided)} at most with "
            "inference.dense=dilate; use inference.dense=stitch for more"
        )
    removed = {id(stage) for stage in strided[len(strided) - removals :]}
    rate = 1
    for stage in stages:
        for index, block in enumerate(stage):
            _dilate_conv(block.conv2, rate)
            if index == 0 and id(stage) in removed:
                block.conv2.stride = (1, 1)
                block.downsample[0].stride = (1, 1)
                rate *= 2


def check_dense(model: FCN, method: str, factor: int) -> None:
    """Refuse, with a one-line `ConfigError`, what `method` cannot do for ``model``."""
    if method not in METHODS:
        raise ConfigError(f"inference.dense={method!r}: choose one of {list(METHODS)}")
    if method == "none":
        return
    stride = model.output_stride
    if not isinstance(factor, int) or factor < 2 or factor & (factor - 1):
        raise ConfigError(f"inference.factor={factor!r}: must be a power of two, at least 2")
    if stride % factor:
        raise ConfigError(
            f"inference.factor={factor}: must divide the model's output stride {stride} "
            f"(model.variant={model.variant})"
        )
    if getattr(model, "dense_factor", 1) > 1:
        raise ConfigError(f"inference.dense={method}: the model is already dilated")
    for final, (_, classes) in zip(model.final_upsamplings, model.heads, strict=True):
        layer = getattr(model, final)
        bilinear = bilinear_weight(classes, layer.kernel_size[0]).to(layer.weight)
        learned = not layer.weight.is_meta and not torch.equal(layer.weight.detach(), bilinear)
        if factor < stride and learned:
            raise ConfigError(
                f"inference.factor={factor}: this model learned its final upsampling "
                f"({final}), which dense prediction would replace by bilinear "
                f"interpolation; use inference.factor={stride} (fully dense) or "
                "inference.dense=none"
            )
    if method == "dilate" and model.skips:
        raise ConfigError(
            f"inference.dense=dilate: model.variant={model.variant} fuses skips through "
            "upsampling layers, which have no dilated form; use inference.dense=stitch"
        )


def dilate_(module: nn.Module, factor: int) -> nn.Module:
    """Convert ``module`` in place so that its scores come out ``factor`` times denser.

    For an `FCN` the final upsampling becomes a `Resample` of the denser map, so ``module(x)``
    still returns ``B x C x H x W`` scores, and ``coarse_scores`` the map at stride
    ``output_stride`` (divided by ``factor``). An ``nn.Sequential`` is converted as is.
    """
    if not isinstance(module, FCN):
        _dilate_chain(_chain(module), factor)
        return module
    check_dense(module, "dilate", factor)
    for backbone in module.stream_backbones().values():  # every stream alike
        if isinstance(backbone, ResNetBackbone):
            _dilate_resnet(backbone, factor)
        else:
            _dilate_chain(_chain(backbone), factor)
    coord = module.coarse_coord
    module.coarse_coord = CoordMap(coord.scale / factor, coord.offset)
    for final in module.final_upsamplings:  # one per head
        setattr(module, final, Resample(module.coarse_coord.scale, coord.offset))
        module.crops[final] = 0
    module.output_stride //= factor
    module.dense_factor = factor
    return module


class DenseFCN(nn.Module):
    """``B x C x H x W`` -> ``B x K x H x W`` scores of ``model`` predicted ``factor`` times
    more densely by ``method`` (``stitch`` or ``dilate``; ``dilate`` converts ``model``).

    Streams and heads need nothing of their own: the coarse scores are already the streams'
    mean, every head's map has the same cells, and `Resample` treats each channel alone."""

    def __init__(self, model: FCN, method: str, factor: int) -> None:
        super().__init__()
        check_dense(model, method, factor)
        if method == "none":
            raise ConfigError("inference.dense=none: nothing to make dense; use the model")
        self.method, self.factor = method, factor
        self.step = model.output_stride // factor
        if method == "dilate":
            dilate_(model, factor)
        coord = model.coarse_coord
        scale = coord.scale if method == "dilate" else coord.scale / factor
        self.model = model
        self.resample = Resample(scale, coord.offset)

    def dense_scores(self, x: Tensor) -> Tensor:
        """The scores at stride ``output_stride / factor``, before `Resample`."""
        if self.method == "dilate":
            return self.model.coarse_scores(x)
        return shift_and_stitch(self.model.coarse_scores, x, self.factor, self.step)

    def forward(self, x: Tensor) -> Tensor:
        return self.resample(self.dense_scores(x), tuple(x.shape[-2:]))
