"""``python -m fcn_lightning.bench``: run the suite, print and save the table."""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from fcn_lightning.bench import suite
from fcn_lightning.bench.devices import describe
from fcn_lightning.bench.table import Row, markdown
from fcn_lightning.bench.timing import Clock
from fcn_lightning.interop.torchfcn import TORCHFCN_VARIANTS


def settings(args: argparse.Namespace) -> suite.Settings:
    device = torch.device(args.device)
    if args.quick:
        # Tiny sizes for a smoke test: pytorch-fcn's nets are full width, so the input is
        # what keeps it quick (pad 100 still makes it 248 x 264 inside).
        s = suite.Settings(
            device, args.threads, size=(48, 64), square=(64, 64), variants=("fcn32s",),
            train_variants=("fcn32s",), repeats=1, warmup=0, switch_repeats=1,
            matmul_n=256, images=3, width=0.125, compile=False, memory=False,
        )  # fmt: skip
    else:
        s = suite.Settings(device, args.threads)
    if args.repeats:
        s.repeats = s.switch_repeats = args.repeats
    if args.variants:
        s.variants = tuple(args.variants)
        s.train_variants = tuple(v for v in s.train_variants if v in args.variants) or (
            args.variants[-1],
        )
    if args.train_variants:
        s.train_variants = tuple(args.train_variants)
    if args.no_compile:
        s.compile = False
    s.peak_tflops = args.peak_tflops
    return s


def run(s: suite.Settings, clock: Clock, log=print) -> list[Row]:
    rows: list[Row] = []
    steps = [
        ("1/2/5 inference vs pytorch-fcn", lambda: suite.versus_torchfcn_inference(s, clock)),
        ("2 geometry", lambda: suite.geometry_rows(s, clock)),
        ("1/2/3 training vs pytorch-fcn", lambda: suite.versus_torchfcn_training(s, clock)),
        ("4 data pipeline", lambda: suite.pipeline_rows(s, clock)),
        ("6 memory", lambda: suite.memory_rows(s)),
        ("7 switches", lambda: suite.switch_rows(s, clock)),
    ]
    for name, step in steps:
        start = time.perf_counter()
        new = step()
        log(f"[bench] {name}: {len(new)} rows in {time.perf_counter() - start:.0f} s")
        rows += new
    return sorted(rows, key=lambda row: row.section)


def report(rows: list[Row], s: suite.Settings, command: str, seconds: float) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "# fcn-lightning benchmark",
            "",
            f"- when: {now}; the suite took {seconds / 60:.1f} min",
            f"- machine: {describe(s.device, s.threads)}",
            f"- command: `{command}`",
            f"- input {suite._wh(s.size)} (and {suite._wh(s.square)} in section 2), batch "
            f"{s.batch}, 21 classes, full-width VGG16; medians of {s.repeats} interleaved "
            f"repeats ({s.switch_repeats} in section 7) after a warm-up round",
            "",
            markdown(rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fcn_lightning.bench",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--out", type=Path, default=Path("results/bench/results.md"))
    parser.add_argument("--repeats", type=int, default=0, help="timed rounds per comparison")
    parser.add_argument("--variants", nargs="+", choices=TORCHFCN_VARIANTS[:3])
    parser.add_argument("--train-variants", nargs="+", choices=TORCHFCN_VARIANTS[:3])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--peak-tflops", type=float, help="GPU bf16 peak (default: table)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = settings(args)
    command = " ".join(["python -m fcn_lightning.bench", *map(shlex.quote, argv or sys.argv[1:])])
    start = time.perf_counter()
    rows = run(s, Clock(s.device), log=lambda text: print(text, file=sys.stderr, flush=True))
    text = report(rows, s, command.strip(), time.perf_counter() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
