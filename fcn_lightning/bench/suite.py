"""The sections of the benchmark, each returning table rows (see ``__init__``)."""

from __future__ import annotations

import copy
import gc
from dataclasses import dataclass, field

import torch

from fcn_lightning.bench import memory, pipeline
from fcn_lightning.bench.devices import bf16_peak_tflops
from fcn_lightning.bench.flops import forward_flops
from fcn_lightning.bench.models import (
    check_same,
    infer_step,
    inputs,
    our_nets,
    sgd,
    torchfcn_net,
    train_flops,
    train_step,
)
from fcn_lightning.bench.table import Row, Target, failed
from fcn_lightning.bench.timing import Clock, interleaved, matmul, median
from fcn_lightning.metrics import SegmentationMetrics
from fcn_lightning.models import build_fcn

NO_SLOWER = Target("<=", 1.0)
ALIGNED_SPEEDUP = Target(">=", 1.8)
MATMUL_FRACTION = Target(">=", 0.6)
PIPELINE_MARGIN = Target(">=", 3.0)
METRIC_SHARE = Target("<=", 0.02)
GPU_MFU = Target(">=", 0.4)


@dataclass
class Settings:
    device: torch.device
    threads: int
    size: tuple[int, int] = (375, 500)  # H, W: VOC's most common image size
    square: tuple[int, int] = (500, 500)
    pipeline_size: tuple[int, int] = (375, 500)  # VOC-size pairs even in a quick run
    variants: tuple[str, ...] = ("fcn32s", "fcn16s", "fcn8s")
    # fcn8s first: it reuses the nets the inference rows made last.
    train_variants: tuple[str, ...] = ("fcn8s", "fcn32s")
    repeats: int = 5
    warmup: int = 1  # untimed rounds first
    switch_repeats: int = 3
    batch: int = 1
    matmul_n: int = 4096
    width: float = 1.0  # section 7's VGG16 channel multiplier
    images: int = 40
    compile: bool = True
    memory: bool = True
    peak_tflops: float | None = None
    # Filled as sections run: what later rows compare against.
    results: dict[str, float] = field(default_factory=dict)
    # One variant's nets at a time (full-width VGG16s are 0.5 GB each): see `nets_for`.
    nets: dict[str, dict[str, torch.nn.Module]] = field(default_factory=dict)


def nets_for(s: Settings, variant: str) -> dict[str, torch.nn.Module]:
    """pytorch-fcn's ``variant`` and ours (caffe, aligned) with its weights, on the device.

    Kept until another variant is asked for; training steps change the weights by lr 1e-10
    steps, which no later row depends on (outputs are compared right after making them)."""
    if variant not in s.nets:
        s.nets.clear()
        _free()
        reference = torchfcn_net(variant)
        nets = {"torchfcn": reference, **our_nets(reference, variant)}
        torchfcn_net.cache_clear()
        s.nets[variant] = {name: net.to(s.device) for name, net in nets.items()}
    return s.nets[variant]


def _wh(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _ScoresAndMetric:
    """Ours caffe's inference keeping its scores, and the metric update that reads them."""

    def __init__(self, net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
        self.forward, self.labels = infer_step(net, images), labels
        self.metric = SegmentationMetrics(21).to(images.device)
        self.scores: torch.Tensor | None = None

    def infer(self) -> torch.Tensor:
        self.scores = self.forward()
        return self.scores

    def update(self) -> None:
        self.metric.update(self.scores, self.labels)


def _inference_rounds(s: Settings, clock: Clock, variant: str, images, labels):
    nets = {name: net.eval() for name, net in nets_for(s, variant).items()}
    caffe = _ScoresAndMetric(nets["caffe"], images, labels)
    sides = {
        "torchfcn": infer_step(nets["torchfcn"], images),
        "caffe": caffe.infer,
        "aligned": infer_step(nets["aligned"], images),
        "metric": caffe.update,
    }
    checked = {}

    def check(outputs):
        checked["diff"] = check_same(outputs["torchfcn"], outputs["caffe"], variant)

    return interleaved(sides, clock, repeats=s.repeats, warmup=s.warmup, on_warmup=check), checked[
        "diff"
    ]


def versus_torchfcn_inference(s: Settings, clock: Clock) -> list[Row]:
    """Sections 1, 2 and 5: inference of pytorch-fcn, ours caffe, ours aligned, interleaved;
    the metric update on ours caffe's scores rides along in the same rounds."""
    rows, (height, width) = [], s.size
    images, labels = inputs(s.batch, height, width, 21, s.device)
    for variant in s.variants:
        t, diff = _inference_rounds(s, clock, variant, images, labels)
        med = {name: t.median(name) for name in t.times}
        what = f"{variant} inference, {_wh(s.size)}, batch {s.batch}"
        rows += [
            Row("1", what, "ours caffe", "pytorch-fcn", med["caffe"], med["torchfcn"], "s",
                NO_SLOWER, f"same outputs ({diff}); ratio of the minima "
                f"{min(t.times['caffe']) / min(t.times['torchfcn']):.3f}"),
            Row("2", what, "pytorch-fcn", "ours aligned", med["torchfcn"], med["aligned"], "s",
                ALIGNED_SPEEDUP, "speed-up of the aligned geometry"),
        ]  # fmt: skip
        if variant == s.variants[-1]:
            s.results["caffe_s"], s.results["aligned_s"] = med["caffe"], med["aligned"]
            rows.append(
                Row("5", f"{variant} metric update / eval step, {_wh(s.size)}", "update",
                    "forward + update", med["metric"], med["caffe"] + med["metric"], "s",
                    METRIC_SHARE, "SegmentationMetrics.update on ours caffe's scores")
            )  # fmt: skip
    return rows


def geometry_rows(s: Settings, clock: Clock) -> list[Row]:
    """Section 2: aligned vs caffe, time (inference, interleaved) and FLOPs, two sizes."""
    rows, variant = [], s.variants[-1]
    nets = {g: net.eval() for g, net in nets_for(s, variant).items() if g != "torchfcn"}
    for size in (s.size, s.square):
        if size == s.size:  # measured with pytorch-fcn in the same rounds already
            med = {g: s.results[f"{g}_s"] for g in nets}
        else:
            images, _ = inputs(s.batch, *size, 21, s.device)
            t = interleaved({g: infer_step(n, images) for g, n in nets.items()}, clock,
                            repeats=s.repeats, warmup=s.warmup)  # fmt: skip
            med = {g: t.median(g) for g in nets}
        flops = {g: forward_flops(variant, g, *size) / 1e9 for g in nets}
        what = f"{variant} inference, {_wh(size)}"
        rows += [
            Row("2", what + ", time", "caffe", "aligned", med["caffe"], med["aligned"], "s"),
            Row("2", what + ", FLOPs", "caffe", "aligned", flops["caffe"], flops["aligned"],
                "GFLOP", note="torch.utils.flop_counter, forward"),
        ]  # fmt: skip
    return rows


def versus_torchfcn_training(s: Settings, clock: Clock) -> list[Row]:
    """Sections 1-3: training steps of pytorch-fcn, ours caffe, ours aligned and a large
    matmul, interleaved; achieved FLOP/s against the matmul's."""
    rows, (height, width) = [], s.size
    images, labels = inputs(s.batch, height, width, 21, s.device)
    mm, mm_flops = matmul(s.matmul_n, s.device)
    matmul_times: list[float] = []
    fractions = []
    for variant in s.train_variants:
        sides = {}
        for name, net in nets_for(s, variant).items():
            net.train()
            sides[name] = train_step(net, sgd(net), images, labels)
        sides["matmul"] = mm
        t = interleaved(sides, clock, repeats=s.repeats, warmup=s.warmup)
        matmul_times += t.times["matmul"]
        med = {name: t.median(name) for name in sides}
        what = f"{variant} train step, {_wh(s.size)}, batch {s.batch}"
        rows += [
            Row("1", what, "ours caffe", "pytorch-fcn", med["caffe"], med["torchfcn"], "s",
                NO_SLOWER, "same weights; dropout masks differ (torchfcn drops channels)"),
            Row("2", what, "pytorch-fcn", "ours aligned", med["torchfcn"], med["aligned"], "s",
                ALIGNED_SPEEDUP, "speed-up of the aligned geometry"),
        ]  # fmt: skip
        mm_rate = mm_flops / med["matmul"] / 1e9
        for geometry in ("caffe", "aligned"):
            flops = train_flops(variant, geometry, s.batch, height, width)
            rate = flops / med[geometry] / 1e9
            fractions.append(
                Row("3", f"{variant} train step FLOP/s, {geometry}", "train step",
                    f"matmul {s.matmul_n}", rate, mm_rate, "GFLOP/s", MATMUL_FRACTION,
                    f"{flops / 1e9:.0f} GFLOP per step (forward + backward)")
            )  # fmt: skip
        s.results["train_s"] = med["caffe"]
        s.results["train_variant"] = variant
        del sides  # and with them the momentum buffers
        for net in nets_for(s, variant).values():
            net.zero_grad(set_to_none=True)
    s.nets.clear()
    _free()
    s.results["matmul_gflops"] = mm_flops / median(matmul_times) / 1e9
    return rows + fractions


def pipeline_rows(s: Settings, clock: Clock) -> list[Row]:
    """Section 4: images/s per worker against the training step it feeds."""
    height, width = s.pipeline_size
    with pipeline.pairs(s.images, height, width) as samples:
        in_process = pipeline.in_process_rates(samples, clock, s.repeats, s.warmup)
        loader = pipeline.loader_rates(samples, clock, s.repeats, s.warmup)
    train_rate = s.batch / s.results["train_s"]
    what = f"{_wh(s.pipeline_size)} JPEG/PNG pairs, batch 1, images/s"
    return [
        Row("4", f"{what}, in process, 1 thread", "ours", "plain PIL", in_process["ours"],
            in_process["PIL"], "img/s", note="read, decode, checks, Caffe normalisation, collate"),
        Row("4", f"{what}, DataLoader 1 worker", "ours", "plain PIL", loader["ours"],
            loader["PIL"], "img/s", note="adds the hand-over between processes"),
        Row("4", "1 loader worker vs the training step it feeds", "loader worker",
            f"{s.results['train_variant']} caffe train step", loader["ours"], train_rate,
            "img/s", PIPELINE_MARGIN, "the train step's time from section 1 of this run"),
    ]  # fmt: skip


def memory_rows(s: Settings) -> list[Row]:
    """Section 6: peak memory of a training step, each net in a fresh process."""
    variant, (height, width) = s.variants[-1], s.size
    nets = memory.NETS if s.memory else ()
    peaks = {}
    for net in nets:
        try:
            peaks[net] = memory.peak_in_subprocess(
                net, variant, s.batch, height, width, str(s.device), s.threads
            )
        except Exception as error:  # a failed measurement is a row, not a crash
            return [failed("6", f"{variant} train step peak memory", net, "-", error)]
    if not peaks:
        return []

    def gib(net: str) -> float:
        return peaks[net]["peak_bytes"] / 2**30

    def note(net: str) -> str:
        before = peaks[net]["before_bytes"] / 2**30
        return f"{net}: {gib(net) - before:.2f} GiB above the {before:.2f} GiB held between steps"

    kind = "peak CUDA tensors" if s.device.type == "cuda" else "peak RSS"
    what = f"{variant} train step {kind}, {_wh(s.size)}"
    return [
        Row("6", what, "ours caffe", "ours aligned", gib("caffe"), gib("aligned"), "GiB",
            note=f"{note('caffe')}; {note('aligned')}"),
        Row("6", what, "ours caffe", "pytorch-fcn", gib("caffe"), gib("torchfcn"), "GiB",
            note=note("torchfcn")),
    ]  # fmt: skip


SWITCHES = ("channels_last", "bf16", "compile")


def _switched(model: torch.nn.Module, switches: tuple[str, ...]):
    """(callable net, input memory format, autocast dtype) for a set of switches."""
    net = copy.deepcopy(model)
    memory_format = torch.contiguous_format
    if "channels_last" in switches:
        net = net.to(memory_format=torch.channels_last)
        memory_format = torch.channels_last
    runner = torch.compile(net) if "compile" in switches else net
    return net, runner, memory_format, torch.bfloat16 if "bf16" in switches else None


def switch_rows(s: Settings, clock: Clock) -> list[Row]:
    """Section 7: channels_last, bf16 autocast and torch.compile each against none of them,
    inference and training step, on ours aligned (the modern options' geometry; random
    weights, ``width`` 1 but in a quick run)."""
    variant, (height, width) = s.variants[-1], s.size
    with torch.device(s.device):
        base = build_fcn(variant, geometry="aligned", width=s.width)
    with torch.no_grad():  # non-zero scores, as a trained net's
        for name, p in base.named_parameters():
            if name.startswith("score"):
                p.normal_(0, 1e-3)
    configs: dict[str, tuple[str, ...]] = {"off": ()}
    configs.update({name: (name,) for name in SWITCHES if name != "compile" or s.compile})
    if s.device.type == "cuda":
        configs["all three"] = SWITCHES
    images, labels = inputs(s.batch, height, width, 21, s.device)
    rows: list[Row] = []
    built = {name: _switched(base, switches) for name, switches in configs.items()}
    del base
    flops = train_flops(variant, "aligned", s.batch, height, width)
    for mode in ("inference", "train step"):
        sides, first, errors = {}, {}, {}
        for name, (net, runner, fmt, dtype) in built.items():
            x = images.contiguous(memory_format=fmt)
            if mode == "inference":
                net.eval()
                step = infer_step(runner, x, autocast=dtype)
            else:
                net.train()
                step = train_step(runner, sgd(net), x, labels, autocast=dtype)
            try:
                first[name] = clock.seconds(step)[0]  # compiles, for compile
            except Exception as error:
                errors[name] = error
                continue
            sides[name] = step
        t = interleaved(sides, clock, repeats=s.switch_repeats, warmup=0)
        what = f"{variant} aligned {mode}, {_wh(s.size)}"
        for name in configs:
            if name == "off":
                continue
            if name in errors:
                rows.append(failed("7", f"{what}: {name}", "on", "off", errors[name]))
                continue
            on, off = t.median(name), t.median("off")
            note = "time on / time off"
            if "compile" in configs[name]:
                note += f"; first call (compiling) {first[name]:.0f} s, not counted"
            rows.append(Row("7", f"{what}: {name}", "on", "off", on, off, "s", note=note))
            if name == "all three" and mode == "train step":
                rows += gpu_rows(s, flops, on, off)
    del built
    _free()
    return rows


def gpu_rows(s: Settings, flops: int, seconds: float, off_seconds: float) -> list[Row]:
    """Images/s and model FLOP/s utilisation against the GPU's bf16 peak."""
    peak = bf16_peak_tflops(s.device, s.peak_tflops)
    rows = [Row("7", "train step images/s", "all three switches", "none", s.batch / seconds,
                s.batch / off_seconds, "img/s")]  # fmt: skip
    if peak is None:
        return [
            *rows,
            Row("3", "MFU vs bf16 peak", "train step", "peak", float("nan"), float("nan"),
                "", note="unknown GPU: pass --peak-tflops")
        ]  # fmt: skip
    return [
        *rows,
        Row("3", "MFU: train step (all three switches) vs bf16 peak", "train step",
            "bf16 peak", flops / seconds / 1e12, peak, "TFLOP/s", GPU_MFU)
    ]  # fmt: skip
