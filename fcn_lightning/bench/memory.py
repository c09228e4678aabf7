"""Peak memory of one training step, each net in a fresh process.

CPU: the process's peak resident set (Linux ``VmHWM``), reset just before the measured
step by writing 5 to ``/proc/self/clear_refs``, so it covers weights, gradients, momentum,
activations, the allocator's and oneDNN's workspaces: what the step needs of the machine's
RAM. A warm-up step comes first, so gradients and momentum buffers already exist. GPU:
``torch.cuda.max_memory_allocated`` over the measured step (tensors only, without the
caching allocator's slack).

    python -m fcn_lightning.bench.memory --net caffe --variant fcn8s --size 500x375
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from fcn_lightning.bench.models import inputs, sgd, torchfcn_net, train_step
from fcn_lightning.models import build_fcn

NETS = ("torchfcn", "caffe", "aligned")


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def measure(
    net: str, variant: str, batch: int, height: int, width: int, device: str, scale: float = 1.0
) -> dict:
    """Peak and between-steps bytes; ``scale`` is our nets' VGG16 width (tests)."""
    dev = torch.device(device)
    if net == "torchfcn":
        model = torchfcn_net(variant)
    else:  # the weights' values do not change the memory a step needs
        model = build_fcn(variant, geometry=net, width=scale)
    model = model.to(dev).train()
    images, labels = inputs(batch, height, width, 21, dev)
    step = train_step(model, sgd(model), images, labels)
    step()  # gradients and momentum exist from here on
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step()
        torch.cuda.synchronize(dev)
        return {"peak_bytes": torch.cuda.max_memory_allocated(dev), "before_bytes": before}
    before = _status_kib("VmRSS") * 1024
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    step()
    return {"peak_bytes": _status_kib("VmHWM") * 1024, "before_bytes": before}


def peak_in_subprocess(
    net: str, variant: str, batch: int, height: int, width: int, device: str, threads: int
) -> dict:
    command = [
        sys.executable, "-m", "fcn_lightning.bench.memory", "--net", net, "--variant", variant,
        "--batch", str(batch), "--size", f"{width}x{height}", "--device", device,
        "--threads", str(threads),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "no output")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=NETS, required=True)
    parser.add_argument("--variant", default="fcn8s")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", default="500x375", help="WxH")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    print(json.dumps(measure(args.net, args.variant, args.batch, height, width, args.device)))


if __name__ == "__main__":
    main()
