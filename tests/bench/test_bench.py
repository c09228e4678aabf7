"""The benchmark suite runs end to end at tiny sizes and yields finite, positive ratios.
Speed itself is measured by `make bench`, never asserted here."""

from __future__ import annotations

import math

import pytest
import torch

from fcn_lightning.bench import __main__ as bench
from fcn_lightning.bench import memory
from fcn_lightning.bench.devices import bf16_peak_tflops
from fcn_lightning.bench.table import Row, Target, markdown
from fcn_lightning.bench.timing import Clock, interleaved


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.md"
    threads = torch.get_num_threads()
    try:
        bench.main(["--quick", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return out.read_text()


def _rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| #")]
    return [[cell.strip() for cell in ln.strip("|").split("|")] for ln in lines]


def test_quick_run_has_every_section_with_finite_positive_ratios(quick_report):
    rows = _rows(quick_report)
    assert {row[0] for row in rows} == {"1", "2", "3", "4", "5", "7"}  # 6 spawns processes
    for _, what, _, _, ratio, _, note in rows:
        assert not note.startswith("failed"), f"{what}: {note}"
        value = float(ratio.strip("*"))
        # A share (the metric update of an eval step) can print as 0.000 at tiny sizes.
        assert math.isfinite(value) and value >= 0, f"{what}: ratio {ratio}"
        assert value > 0 or "metric update" in what, f"{what}: ratio {ratio}"
    assert "same outputs" in quick_report  # ours caffe checked against pytorch-fcn
    assert "torch threads" in quick_report and "--quick" in quick_report


def test_interleaving_alternates_sides_after_warmup():
    calls = []
    sides = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    seen = {}
    timings = interleaved(sides, Clock(torch.device("cpu")), repeats=3, on_warmup=seen.update)
    assert calls == ["a", "b"] * 4
    assert set(seen) == {"a", "b"} and set(timings.first) == {"a", "b"}
    assert all(len(times) == 3 for times in timings.times.values())


def test_targets_say_by_how_much_they_are_missed():
    assert Target("<=", 1.0).verdict(1.1) == "<= 1: missed by 10.0%"
    assert Target(">=", 0.6).verdict(0.3) == ">= 0.6: missed by 50.0%"
    assert Target(">=", 1.8).verdict(2.0) == ">= 1.8: met"
    row = Row("1", "x", "a", "b", float("nan"), 1.0, "s", Target("<=", 1.0))
    assert "n/a" in markdown([row]) and "not measured" in markdown([row])


def test_gpu_peak_comes_from_the_flag_or_the_table():
    assert bf16_peak_tflops(torch.device("cpu")) is None
    assert bf16_peak_tflops(torch.device("cpu"), override=123.0) == 123.0


def test_training_step_peak_memory_is_measured():
    peak = memory.measure("aligned", "fcn32s", 1, 32, 32, "cpu", scale=0.125)
    assert peak["peak_bytes"] >= peak["before_bytes"] > 0
