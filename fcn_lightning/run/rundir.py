"""The run directory."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.utilities import rank_zero_only


@rank_zero_only
def keep_csv_history(run_dir: Path) -> None:
    """Before a run resumes in its directory: set its CSV record aside as the next
    ``metrics.<n>.csv``, which Lightning's CSVLogger would otherwise overwrite. Rank 0
    only: DDP's re-launched ranks run this too and must not move the file again."""
    current = run_dir / "csv" / "metrics.csv"
    if current.is_file():
        current.rename(current.with_name(f"metrics.{len(csv_segments(run_dir)) - 1}.csv"))


def csv_segments(run_dir: Path) -> list[Path]:
    """A run's CSV records in the order they were written (one per resumption)."""
    folder = run_dir / "csv"
    earlier = sorted(folder.glob("metrics.*.csv"), key=lambda p: int(p.suffixes[0][1:]))
    current = folder / "metrics.csv"
    return [*earlier, current] if current.is_file() else earlier
