"""A study's results as the paper prints them: one Markdown table, curves and bars.

    python -m fcn_lightning.report logs/train/multiruns/<sweep> [--out DIR]

Every run under the given directories (a folder holding ``csv/metrics.csv`` and
``config_resolved.yaml``; staged jobs' stage runs included) becomes a row with the four
metrics of its last validation, beside the paper's numbers where the study has them
(docs/paper.md section 6: VOC seg11valid). Writes ``report.md``, ``report.json``,
``miou_curves.png`` (validation mean IU against iteration, every run) and
``per_class_iu.png`` into ``--out`` (default: the first directory). Reads only the local
CSV records, so it works offline and while a sweep is still running.

    python -m fcn_lightning.report --wandb ENTITY/PROJECT [--group study_skips] [--out DIR]

reads the same from W&B instead (`fcn_lightning.report.wandb_source`), e.g. for runs made
on other machines.

    python -m fcn_lightning.report <eval run dir> --worst 8 [--out DIR]

draws the eval run's worst images, image | truth | prediction, as ``worst.png``
(`fcn_lightning.report.worst`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fcn_lightning.errors import FCNError
from fcn_lightning.report.results import ReportError, find_runs, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcn_lightning.report", description=__doc__)
    parser.add_argument("dirs", nargs="*", type=Path, help="run or multirun directories")
    parser.add_argument("--out", type=Path, help="where the report goes (default: first dir)")
    parser.add_argument("--title", help="the report's heading")
    parser.add_argument(
        "--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B instead (online)"
    )
    parser.add_argument("--group", help="with --wandb: only this group (e.g. study_skips)")
    parser.add_argument(
        "--worst", type=int, metavar="K", help="an eval run dir's K worst images as worst.png"
    )
    args = parser.parse_args(argv)
    try:
        if args.worst is not None:
            from fcn_lightning.report.worst import WorstError, write_worst_picture

            if args.worst < 1 or len(args.dirs) != 1:
                raise WorstError("--worst K: give one eval run directory and K >= 1")
            write_worst_picture(args.dirs[0], args.worst, args.out)
            return 0
        if args.wandb:
            from fcn_lightning.report.wandb_source import wandb_runs

            runs = wandb_runs(args.wandb, args.group)
            out = args.out or Path("reports") / args.wandb.replace("/", "_")
            sources = [f"W&B {args.wandb}" + (f" group {args.group}" if args.group else "")]
        elif args.dirs:
            runs, out = find_runs(args.dirs), args.out or args.dirs[0]
            sources = [d.name for d in args.dirs]
        else:
            raise ReportError("give run or multirun directories, or --wandb ENTITY/PROJECT")
        write_report(runs, out, args.title or f"Results: {', '.join(map(str, sources))}")
    except FCNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
