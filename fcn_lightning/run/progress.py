"""What the console shows while Lightning runs: one step-based bar for the whole fit and a
validation bar under it (the device and model lines are `fcn_lightning.run.summary`).

On a terminal the bars redraw in place (tqdm). Elsewhere (a SLURM .out file, a pipe, CI)
redraws would pile up as carriage-return spam, so each bar prints a plain line every
`line_every` steps and one when it finishes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm, convert_inf

from fcn_lightning.run.summary import device_line

T = TypeVar("T")

# The same columns live and in a log file: what, how far, how long, how fast, metrics.
BAR_FORMAT = (
    "{desc} {n_fmt}/{total_fmt} |{bar}| {percentage:3.0f}% "
    "[{elapsed}<{remaining}, {rate_fmt}{postfix}]"
)
LINE_FORMAT = BAR_FORMAT.replace(" |{bar}|", "")
# Seconds between redraws on a terminal: the metrics are read only when the bar redraws.
REDRAW_S = 0.25
# Metric names as the bar shows them (the names of markdown_table's columns).
METRIC_NAMES = {
    "mean_iu": "mean IU",
    "pixel_acc": "pixel acc",
    "mean_acc": "mean acc",
    "fw_iu": "f.w. IU",
}


def is_terminal() -> bool:
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


def metric_label(key: str) -> str:
    """``train/loss`` -> ``loss``, ``val/mean_iu`` -> ``val mean IU``; others unchanged."""
    stage, _, name = key.rpartition("/")
    name = METRIC_NAMES.get(name, name)
    return name if stage in ("", "train") else f"{stage} {name}"


def format_metrics(metrics: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in metrics.items()
    )


class StepTqdm(Tqdm):
    """A tqdm bar that, given `line_every`, prints a plain line each time its count passes
    a multiple of `line_every` and when it closes, instead of redrawing in place."""

    def __init__(self, *args: Any, line_every: int | None = None, **kwargs: Any) -> None:
        self.line_every = line_every
        self._printed = kwargs.get("initial", 0)  # the count the last line showed
        self._drawn = 0.0
        if line_every is not None:
            kwargs.update(bar_format=LINE_FORMAT, dynamic_ncols=False, mininterval=0, miniters=1)
        super().__init__(*args, **kwargs)

    def due(self, n: int) -> bool:
        """Whether moving to count `n` shows: a line is due (the last one, with the final
        metrics, is printed on close), or the last redraw is old enough."""
        finished = self.total is not None and n >= self.total
        if self.line_every is not None:
            return not finished and n // self.line_every > self._printed // self.line_every
        return finished or time.monotonic() - self._drawn >= REDRAW_S

    def move(self, n: int, metrics: Callable[[], Mapping[str, Any]] | None = None) -> None:
        """Set the count to `n`; `metrics` is called only when the bar shows."""
        if self.disable:
            return
        due = self.due(n)
        self.n = n
        if due:
            if metrics is not None:
                self.set_postfix(metrics(), refresh=False)
            self.refresh()

    @property
    def format_dict(self) -> dict[str, Any]:
        values = super().format_dict
        self._unknown_size_is_not_zero()
        values.update(ncols=self.ncols, nrows=self.nrows)
        return values

    def _unknown_size_is_not_zero(self) -> None:
        # A terminal that reports no size (a pty nobody sized, e.g. under `script` or in
        # CI) reads as 0 or -1 columns and rows, and tqdm then draws nothing at all.
        if self.ncols is not None and self.ncols <= 0:
            self.ncols = None
        if self.nrows is not None and self.nrows <= 0:
            self.nrows = None

    def set_postfix(
        self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None:
        self.set_postfix_str(format_metrics({**(ordered_dict or {}), **kwargs}), refresh=refresh)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        self._drawn = time.monotonic()
        if self.line_every is None:
            self._unknown_size_is_not_zero()
            return super().display(msg, pos)
        if msg is None and self.n != self._printed and self.due(self.n):
            self._print_line()
        return False  # nothing drawn in place, so nothing to clear

    def clear(self, nolock: bool = False) -> None:
        if self.line_every is None:
            super().clear(nolock)

    def reset(self, total: float | None = None) -> None:
        self._printed = 0
        super().reset(total)

    def print_line(self) -> None:
        """In the line form, print the count now unless the last line showed it."""
        if self.line_every is not None and not self.disable and self.n != self._printed:
            self._print_line()

    def close(self) -> None:
        if self.line_every is not None and not self.disable:
            self.print_line()  # where it finished, or stopped, with the last metrics
            self.leave = False  # a line bar has nothing in place to leave
        super().close()

    def _print_line(self) -> None:
        self.fp.write(f"{self}\n")
        self.fp.flush()
        self._printed = self.n


def track(
    sequence: Iterable[T],
    description: str,
    total: int | None = None,
    unit: str = "it",
    line_every: int = 100,
) -> Iterable[T]:
    """``rich.progress.track`` with the training bar's look (and its plain lines when the
    output is not a terminal)."""
    return StepTqdm(
        sequence,
        desc=description,
        total=total,
        unit=unit,
        leave=True,
        dynamic_ncols=True,
        file=sys.stdout,
        bar_format=BAR_FORMAT,
        line_every=None if is_terminal() else line_every,
    )


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar counting the optimiser steps of the whole fit
    (``step 1240/3000``: across epochs and validations, on from the step a resumed run
    starts at), with the loss and the latest validation mean IU, and no ``v_num``; a
    validation bar under it while validating. Without a terminal, or with ``tty=false``:
    a line every `line_every` steps (batches, in validate and test) and at the end.

    Args:
        refresh_rate: batches between redraws on a terminal (0 hides every bar); redraws
            are also at most 4 a second.
        line_every: steps (or batches) between the lines printed without a terminal.
        tty: force the terminal (true) or the line (false) form; null: ask stdout.
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        line_every: int = 100,
        tty: bool | None = None,
        process_position: int = 0,
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position)
        self.line_every = line_every
        self.tty = tty
        self._device_shown = False

    @property
    def lines(self) -> bool:
        return not (is_terminal() if self.tty is None else self.tty)

    @property
    def train_description(self) -> str:
        return "step"

    @property
    def validation_description(self) -> str:
        return "val"

    @property
    def sanity_check_description(self) -> str:
        return "sanity check"

    @property
    def test_description(self) -> str:
        return "test"

    @property
    def predict_description(self) -> str:
        return "predict"

    def _bar(self, desc: str, leave: bool, below: bool = False, **kwargs: Any) -> StepTqdm:
        return StepTqdm(
            desc=desc,
            position=2 * self.process_position + below,
            disable=self.is_disabled,
            leave=leave,
            dynamic_ncols=True,
            file=sys.stdout,
            bar_format=BAR_FORMAT,
            line_every=self.line_every if self.lines else None,
            **kwargs,
        )

    def init_sanity_tqdm(self) -> StepTqdm:
        return self._bar(self.sanity_check_description, leave=False)

    def init_train_tqdm(self) -> StepTqdm:
        trainer = self.trainer
        return self._bar(
            self.train_description,
            leave=True,
            total=convert_inf(trainer.estimated_stepping_batches),
            initial=trainer.global_step,
            unit="step",
            smoothing=0,
        )

    def init_validation_tqdm(self) -> StepTqdm:
        under_training = self.trainer.state.fn != "validate"
        return self._bar(
            self.validation_description, leave=not under_training, below=under_training
        )

    def init_test_tqdm(self) -> StepTqdm:
        return self._bar(self.test_description, leave=True)

    def init_predict_tqdm(self) -> StepTqdm:
        return self._bar(self.predict_description, leave=True)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's run version: in the run directory's name
        return {metric_label(key): value for key, value in metrics.items()}

    def _stage_metrics(self, stage: str) -> dict[str, Any]:
        metrics = self.trainer.progress_bar_metrics
        return {metric_label(k): v for k, v in metrics.items() if k.startswith(f"{stage}/")}

    def _should_update(self, current: int, total: int) -> bool:
        # A line bar decides itself when a line is due; checking is cheap.
        return self.is_enabled and (self.lines or super()._should_update(current, total))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and not self._device_shown:
            print(device_line(trainer), flush=True)
            self._device_shown = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_progress_bar = self.init_train_tqdm()

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # one bar for the whole fit: no reset per epoch

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        bar = self._train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            bar.move(trainer.global_step, lambda: self.get_metrics(trainer, pl_module))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bar = self.train_progress_bar
        if not bar.disable:
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.n = trainer.global_step
        bar.close()

    def _start_loader(self, bar: StepTqdm, desc: str, loaders: list, index: int) -> None:
        """A new dataloader of an evaluation: its name (a number only if there are several)
        and its length, before the bar first draws it."""
        if bar.disable or not self.has_dataloader_changed(index):
            return
        bar.set_description_str(desc if len(loaders) < 2 else f"{desc} {index}", refresh=False)
        bar.reset(total=convert_inf(loaders[index]))

    def _advance(self, bar: StepTqdm | None, batch_idx: int) -> None:
        if bar is not None and self._should_update(batch_idx + 1, bar.total):
            bar.move(batch_idx + 1)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bar = self._train_progress_bar
        if self.lines and bar is not None and not bar.disable and not trainer.sanity_checking:
            # In a log, each validation's line follows the step it validates.
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.print_line()
        super().on_validation_start(trainer, pl_module)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if trainer.sanity_checking:
            desc, loaders = self.sanity_check_description, trainer.num_sanity_val_batches
        else:
            desc, loaders = self.validation_description, trainer.num_val_batches
        self._start_loader(self.val_progress_bar, desc, loaders, dataloader_idx)

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._advance(self._val_progress_bar, batch_idx)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and not self.val_progress_bar.disable:
            self.val_progress_bar.set_postfix(self._stage_metrics("val"), refresh=False)
        super().on_validation_end(trainer, pl_module)

    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        bar = self.test_progress_bar
        self._start_loader(bar, self.test_description, trainer.num_test_batches, dataloader_idx)

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._advance(self._test_progress_bar, batch_idx)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.test_progress_bar.disable:
            self.test_progress_bar.set_postfix(self._stage_metrics("test"), refresh=False)
        super().on_test_end(trainer, pl_module)

    def on_predict_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        bar, desc = self.predict_progress_bar, self.predict_description
        self._start_loader(bar, desc, trainer.num_predict_batches, dataloader_idx)

    def on_predict_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._advance(self._predict_progress_bar, batch_idx)
