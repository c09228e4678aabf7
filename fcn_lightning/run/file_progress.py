"""The bar of work over files (verify_data's reads, fcn-hha's encodings): what, how many of
how many, how long; on stderr, so a command's printed report stays clean on stdout. Kept
apart from run/progress.py, which imports Lightning, so that commands without it start fast."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def file_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
