"""The worst images of an eval run as one picture:
``python -m fcn_lightning.report <eval run dir> --worst K`` writes ``worst.png``.

One row per image, worst first (eval's worst.csv order): a caption strip (rank, id, mean
IU, pixel accuracy), then image | truth | prediction side by side, the label maps in the
VOC palette (`fcn_lightning.visualize`), the panels at their pixels' true size with
`GAP` white pixels between them, so the picture holds exactly what was scored.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fcn_lightning.data.readers import read_image, read_label
from fcn_lightning.errors import FCNError
from fcn_lightning.visualize import colorize

GAP = 4
CAPTION = 14  # pixels of the caption strip above each row
COLUMNS = ("rank", "id", "mean_iu", "pixel_acc", "prediction", "image", "label")  # worst.csv


class WorstError(FCNError):
    """An eval run dir without (readable) worst-image records."""


def read_worst(run_dir: Path) -> list[dict[str, str]]:
    table = run_dir / "worst.csv"
    if not table.is_file():
        raise WorstError(
            f"{table}: not found; run python -m fcn_lightning.eval with worst_k=<K> "
            "(default 8) and give its run directory"
        )
    with table.open(newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise WorstError(
            f"{table}: lists no images: eval ranks only images with a labelled pixel (not "
            "255 only) and keeps none with worst_k=0; rerun eval with worst_k=<K> above 0 on "
            "a split with labels"
        )
    for number, row in enumerate(rows, start=2):
        problem = _row_problem(row)
        if problem is not None:  # a file cut short (a killed eval, a full disk) or edited
            raise WorstError(f"{table}: line {number} {problem}; rerun eval to write it again")
    return rows


def _row_problem(row: dict[str, str | None]) -> str | None:
    missing = [c for c in COLUMNS if not row.get(c)]
    if missing:
        return f"has no {', '.join(missing)} (cut short?)"
    for column in ("mean_iu", "pixel_acc"):
        try:
            float(row[column])  # type: ignore[arg-type]
        except ValueError:
            return f"has {column} {row[column]!r}, not a number"
    return None


def _pct(text: str) -> str:
    value = float(text)
    return "n/a" if value != value else f"{100 * value:.1f}%"


def worst_rows(run_dir: Path, count: int) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(caption, image, truth, prediction) for the `count` worst images, truth and
    prediction coloured with the palette eval gave the prediction PNG (the classes' own)."""
    rows = []
    for row in read_worst(run_dir)[:count]:
        pred_path = run_dir / row["prediction"]
        if not pred_path.is_file():
            raise WorstError(f"{pred_path}: missing (worst.csv names it); rerun eval")
        image = read_image(Path(row["image"])).permute(1, 2, 0).numpy()
        truth = read_label(Path(row["label"])).numpy()
        with Image.open(pred_path) as im:
            pred = np.asarray(im)
            # eval wrote it in the classes' own colours: truth is drawn in the same
            colours = im.getpalette()
        palette = np.asarray(colours or [], dtype=np.uint8).reshape(-1, 3).tolist() or None
        if not (image.shape[:2] == truth.shape == pred.shape):
            raise WorstError(
                f"{pred_path}: {pred.shape} does not match {row['image']} {image.shape[:2]}; "
                "the dataset changed since eval: rerun eval"
            )
        caption = (f"{row['rank']}. {row['id']}  mean IU {_pct(row['mean_iu'])}  "
                   f"pixel acc {_pct(row['pixel_acc'])}")  # fmt: skip
        rows.append((caption, image, colorize(truth, palette), colorize(pred, palette)))
    return rows


def worst_picture(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> Image.Image:
    """The rows stacked; as wide as the widest row of panels or caption."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    panels = max(3 * image.shape[1] + 2 * GAP for _, image, _, _ in rows)
    text = max(int(measure.textlength(caption)) + 2 for caption, *_ in rows)
    height = sum(CAPTION + image.shape[0] for _, image, _, _ in rows) + GAP * (len(rows) - 1)
    canvas = np.full((height, max(panels, text), 3), 255, dtype=np.uint8)
    y, captions = 0, []
    for caption, image, truth, pred in rows:
        captions.append((y, caption))
        y += CAPTION
        h, w = image.shape[:2]
        for i, panel in enumerate((image, truth, pred)):  # truth, pred: coloured
            canvas[y : y + h, i * (w + GAP) : i * (w + GAP) + w] = panel
        y += h + GAP
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for top, caption in captions:
        draw.text((1, top + 1), caption, fill=(0, 0, 0))
    return picture


def write_worst_picture(run_dir: Path, count: int, out: Path | None = None) -> Path:
    if not run_dir.is_dir():
        raise WorstError(f"{run_dir}: no such directory; give an eval run directory")
    rows = worst_rows(run_dir, count)
    path = (out or run_dir) / "worst.png"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file where the folder should be, a read-only place
        where = f"--out {out}" if out is not None else str(run_dir)
        raise WorstError(
            f"{where}: cannot be a folder ({error.strerror}); give a folder to write worst.png into"
        ) from None
    try:
        worst_picture(rows).save(path, format="PNG")
    except OSError as error:  # a folder named worst.png, a full disk
        raise WorstError(
            f"{path}: cannot be written ({error.strerror or error}); move what is there "
            "away or give another --out"
        ) from None
    kept = len(read_worst(run_dir))
    note = f" (eval kept {kept}; rerun it with worst_k={count} for more)" if kept < count else ""
    print(f"wrote {path}: the {len(rows)} worst images, image | truth | prediction{note}")
    return path
