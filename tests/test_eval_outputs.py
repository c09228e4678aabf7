"""eval's files beside metrics.json, checked against NumPy: confusion.csv is the bincount
confusion of the model's argmax (run here, from the checkpoint's weights) against the
label PNGs (read with Pillow); per_image.csv holds each image's pixel accuracy and mean
IU; worst.csv names the k lowest rows; the report's worst.png shows exactly those images,
truths and predictions; two DDP processes write the same files as one."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from fcn_lightning.report.cli import main as report_main
from fcn_lightning.train import train
from tests.bad_input.harness import run_entry
from tests.train_helpers import compose_train, run_module, tiny_dataset

NUM_CLASSES, NUM_VAL = 7, 5  # the synthetic dataset's classes; an odd split for 2 ranks
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_outputs")
    data = tiny_dataset(root / "data", num_val=NUM_VAL)
    run = root / "run"
    train(compose_train(data, run, f"data.synthetic.num_val={NUM_VAL}", "trainer.max_steps=4",
                        "trainer.val_check_interval=4", "optim.lr=0.05"))  # fmt: skip
    # Four steps teach the net one class; a random score layer on top makes the masks
    # vary pixel by pixel, so the comparisons below have something to compare.
    ckpt = run / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    torch.manual_seed(0)
    weight = saved["state_dict"]["model.score_fr.weight"]
    saved["state_dict"]["model.score_fr.weight"] = torch.randn_like(weight) * 3
    torch.save(saved, ckpt)
    return data, ckpt, root


def eval_run(trained, name: str, *args: str):
    data, ckpt, root = trained
    out = root / name
    done = run_module("fcn_lightning.eval", f"ckpt_path={ckpt}", f"data_dir={data}",
                      "num_workers=0", f"hydra.run.dir={out}", *args, cwd=root,
                      timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


@pytest.fixture(scope="module")
def single(trained):
    return eval_run(trained, "single", "trainer=cpu", "worst_k=3")[0]


def palette(index: np.ndarray) -> np.ndarray:
    """The VOC colour map, written out here: bits of the index spread over R, G, B."""
    colours = np.zeros((256, 3), np.uint8)
    for i in range(256):
        r = g = b = 0
        for bit in range(8):
            r |= ((i >> (3 * bit)) & 1) << (7 - bit)
            g |= ((i >> (3 * bit + 1)) & 1) << (7 - bit)
            b |= ((i >> (3 * bit + 2)) & 1) << (7 - bit)
        colours[i] = (r, g, b)
    return colours[index]


def numpy_truth(trained):
    """Per val image (in list order): id, RGB, label, the checkpoint's argmax."""
    from fcn_lightning.module import FCNModule

    data, ckpt, _ = trained
    saved = torch.load(ckpt, weights_only=True)
    hparams = {**saved["hyper_parameters"]}
    hparams["model"] = {**hparams["model"], "pretrained": False}
    net = FCNModule(**hparams)
    net.load_state_dict(saved["state_dict"])
    net.eval()
    voc = data / "synthetic"
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    out = []
    for image_id in ids:
        rgb = np.asarray(Image.open(voc / "JPEGImages" / f"{image_id}.jpg").convert("RGB"))
        x = ((rgb / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
        with torch.no_grad():
            pred = net.model(torch.from_numpy(x))[0].argmax(0).numpy()
        truth = np.asarray(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))
        out.append((image_id, rgb, truth, pred))
    return out


def hist_of(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    keep = truth < NUM_CLASSES
    index = NUM_CLASSES * truth[keep].astype(np.int64) + pred[keep]
    return np.bincount(index, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def read_csv(path):
    with path.open(newline="") as file:
        return list(csv.reader(file))


def test_eval_writes_confusion_per_image_and_worst_as_numpy_computes_them(
    trained, single, tmp_path
):
    images = numpy_truth(trained)
    hists = [hist_of(truth, pred) for _, _, truth, pred in images]
    total = sum(hists)
    assert (total.sum(0) > 0).sum() > 2, "the net predicts at most 2 classes: a weak test"

    # confusion.csv: names as header row and first column, counts as NumPy's
    names = json.loads((single / "metrics.json").read_text())["iu"].keys()
    rows = read_csv(single / "confusion.csv")
    assert rows[0][1:] == list(names) and [r[0] for r in rows[1:]] == list(names)
    confusion = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_array_equal(confusion, total)
    metrics = json.loads((single / "metrics.json").read_text())
    assert metrics["pixel_acc"] == pytest.approx(np.trace(confusion) / confusion.sum(), abs=1e-12)
    with np.errstate(invalid="ignore"):
        iu = np.diag(total) / (total.sum(0) + total.sum(1) - np.diag(total))
    assert metrics["mean_iu"] == pytest.approx(np.nanmean(iu), abs=1e-12)
    with Image.open(single / "confusion.png") as im:
        assert im.format == "PNG" and min(im.size) > 100

    # per_image.csv: split order, NumPy's scores
    rows = read_csv(single / "per_image.csv")
    assert rows[0] == ["id", "pixel_acc", "mean_iu", "labelled_pixels"]
    expected = []
    for (image_id, _, _, _), hist in zip(images, hists, strict=True):
        union = hist.sum(0) + hist.sum(1) - np.diag(hist)
        acc = np.trace(hist) / hist.sum()
        miu = float(np.mean(np.diag(hist)[union > 0] / union[union > 0]))
        expected.append((image_id, acc, miu, int(hist.sum())))
    assert [r[0] for r in rows[1:]] == [e[0] for e in expected]
    for row, (_, acc, miu, labelled) in zip(rows[1:], expected, strict=True):
        assert float(row[1]) == pytest.approx(acc, abs=1e-12)
        assert float(row[2]) == pytest.approx(miu, abs=1e-12)
        assert int(row[3]) == labelled
    assert len({e[2] for e in expected}) > 1, "all images score alike: the worst test is blind"

    # worst.csv: the 3 lowest (mean IU, then pixel acc), their predictions as NumPy's
    order = sorted(range(NUM_VAL), key=lambda i: (expected[i][2], expected[i][1], i))[:3]
    worst = list(csv.DictReader((single / "worst.csv").open(newline="")))
    assert [w["id"] for w in worst] == [expected[i][0] for i in order]
    for w, i in zip(worst, order, strict=True):
        with Image.open(single / w["prediction"]) as im:
            assert im.mode == "P"
            np.testing.assert_array_equal(np.asarray(im), images[i][3])

    # the report draws them: 3 rows of image | truth | prediction, pixel for pixel
    assert report_main([str(single), "--worst", "3", "--out", str(tmp_path)]) == 0
    with Image.open(tmp_path / "worst.png") as im:
        picture = np.asarray(im.convert("RGB"))
    gap, caption = 4, 14
    heights = [images[i][1].shape[0] for i in order]
    width = max(images[i][1].shape[1] for i in order)
    assert picture.shape[0] == sum(heights) + 3 * caption + 2 * gap
    assert picture.shape[1] >= 3 * width + 2 * gap  # wider where a caption is
    panels, top = 0, 0
    for i in order:
        _, rgb, truth, pred = images[i]
        (h, w), top = rgb.shape[:2], top + caption
        for col, expected_panel in enumerate((rgb, palette(truth), palette(pred))):
            left = col * (w + gap)
            np.testing.assert_array_equal(picture[top : top + h, left : left + w], expected_panel)
            panels += 1
        assert (picture[top : top + h, w : w + gap] == 255).all()  # the gaps
        top += h + gap
    assert panels == 9


def test_padded_batches_name_each_row_and_crop_the_kept_masks(trained, single, tmp_path):
    """Batches of 2 images of different sizes, padded: each row still names its own
    image, and each kept mask is cropped back to its image (padding changes the scores
    near the border, so the values are not compared)."""
    out, _ = eval_run(trained, "padded", "trainer=cpu", "worst_k=5", "batch_size=2",
                      "+data.collate=pad")  # fmt: skip
    rows, one_by_one = read_csv(out / "per_image.csv"), read_csv(single / "per_image.csv")
    assert [(r[0], r[3]) for r in rows] == [(r[0], r[3]) for r in one_by_one]
    sizes = {image_id: truth.shape for image_id, _, truth, _ in numpy_truth(trained)}
    assert len(set(sizes.values())) > 1, "one image size: nothing is padded"
    worst = list(csv.DictReader((out / "worst.csv").open(newline="")))
    assert len(worst) == NUM_VAL
    for w in worst:
        with Image.open(out / w["prediction"]) as im:
            assert im.size[::-1] == sizes[w["id"]]


def test_report_worst_refusals(single, tmp_path, capsys):
    bare = tmp_path / "eval_without_worst"
    bare.mkdir()
    (bare / "per_image.csv").write_bytes((single / "per_image.csv").read_bytes())
    assert report_main([str(bare), "--worst", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "worst.csv: not found" in err[0] and "worst_k" in err[0]
    assert not (bare / "worst.png").exists()
    assert report_main([str(single), "--worst", "0"]) == 2
    assert report_main([str(tmp_path / "nowhere"), "--worst", "2"]) == 2
    # more asked than kept: the kept ones, said so
    assert report_main([str(single), "--worst", "10", "--out", str(tmp_path)]) == 0
    assert "eval kept 3" in capsys.readouterr().out


def test_worst_k_0_keeps_no_mask_and_a_bad_worst_k_is_refused(
    trained, tmp_path, monkeypatch, capfd
):
    from fcn_lightning.eval_outputs import PerImageScores

    scores = PerImageScores(NUM_CLASSES, worst_k=0)
    scores._batches = [[0, 1]]
    logits = torch.randn(2, NUM_CLASSES, 6, 5)
    labels = torch.randint(0, NUM_CLASSES, (2, 6, 5), dtype=torch.uint8)
    scores.on_validation_batch_end(None, None, logits, (None, labels), 0)
    assert scores.worst == [] and [r[0] for r in scores.rows] == [0, 1]
    expected = sum(hist_of(labels[i].numpy(), logits[i].argmax(0).numpy()) for i in (0, 1))
    np.testing.assert_array_equal(scores.confusion, expected)
    status = run_entry("eval", [f"ckpt_path={trained[1]}", "worst_k=-1",
                                f"hydra.run.dir={tmp_path / 'bad'}"], monkeypatch)  # fmt: skip
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error")]
    assert status == 2 and len(err) == 1 and "worst_k" in err[0], err
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_ddp_writes_the_same_files_as_one_process(trained, single):
    out, done = eval_run(trained, "ddp", "trainer=ddp_cpu", "worst_k=3")
    assert "MEMBER: 2/2" in done.stderr + done.stdout  # two processes really ran
    for name in ("per_image.csv", "confusion.csv", "worst.csv"):
        assert (out / name).read_text() == (single / name).read_text(), name
    for w in csv.DictReader((single / "worst.csv").open(newline="")):
        assert (out / w["prediction"]).read_bytes() == (single / w["prediction"]).read_bytes()
    assert not math.isnan(json.loads((out / "metrics.json").read_text())["mean_iu"])


def test_the_worst_picture_and_sample_grid_draw_the_classes_own_colours(tmp_path):
    """A folder dataset's colours (the checkpoint's palette) reach the pictures, not VOC's."""
    from fcn_lightning.eval_outputs import WORST_DIR
    from fcn_lightning.report.worst import worst_picture, worst_rows
    from fcn_lightning.visualize import palette_image, sample_grid

    colours = [[10, 20, 30], [200, 100, 50], [1, 2, 3]]
    label = np.array([[0, 1], [1, 2]], dtype=np.uint8)
    Image.fromarray(np.full((2, 2, 3), 128, dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(label).save(tmp_path / "a_label.png")
    (tmp_path / WORST_DIR).mkdir()
    palette_image(label[::-1], colours).save(tmp_path / WORST_DIR / "01_a.png")
    with (tmp_path / "worst.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["rank", "id", "mean_iu", "pixel_acc", "prediction", "image", "label"])
        writer.writerow([1, "a", 0.5, 0.5, f"{WORST_DIR}/01_a.png", tmp_path / "a.png",
                         tmp_path / "a_label.png"])  # fmt: skip
    ((_, _, truth, pred),) = worst_rows(tmp_path, 1)
    expected = np.asarray(colours, dtype=np.uint8)
    assert (truth == expected[label]).all() and (pred == expected[label[::-1]]).all()
    assert np.asarray(worst_picture(worst_rows(tmp_path, 1))).shape[-1] == 3
    grid = sample_grid([(np.zeros((2, 2, 3), np.uint8), label, label)], gap=0, palette=colours)
    assert (grid[:, 2:4] == expected[label]).all()


@pytest.mark.parametrize("cut", ["row", "header", "number"])
def test_report_worst_on_a_truncated_worst_csv_is_one_line(single, tmp_path, capsys, cut):
    # Before: a TypeError traceback (a row cut short has None for its last fields).
    import shutil

    copy = tmp_path / "cut"
    shutil.copytree(single, copy)
    text = (copy / "worst.csv").read_text()
    header, first = text.splitlines()[:2]
    cuts = {"row": header + "\n" + first[: first.index(",worst/")], "header": header[:20],
            "number": header + "\n" + first.replace(first.split(",")[2], "0.4x", 1)}  # fmt: skip
    (copy / "worst.csv").write_text(cuts[cut])
    assert report_main([str(copy), "--worst", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {copy / 'worst.csv'}: "), err
    assert "rerun eval" in err[0]
    assert not (copy / "worst.png").exists()


def test_eval_again_into_the_same_dir_with_worst_k_0_leaves_no_stale_worst(
    trained, single, tmp_path
):
    # Before: worst.csv and worst/*.png of the earlier eval stayed beside the new
    # per_image.csv, and report --worst drew the earlier run's worst images.
    import shutil

    data, ckpt, root = trained
    again = tmp_path / "again"
    shutil.copytree(single, again)
    (again / "worst" / "notes.txt").write_text("mine")
    done = run_module("fcn_lightning.eval", f"ckpt_path={ckpt}", f"data_dir={data}",
                      "num_workers=0", f"hydra.run.dir={again}", "trainer=cpu", "worst_k=0",
                      cwd=root, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (again / "worst.csv").exists()
    assert sorted(p.name for p in (again / "worst").iterdir()) == ["notes.txt"]
    assert report_main([str(again), "--worst", "2"]) == 2


def test_class_names_with_commas_quotes_and_dollars_are_written_as_given(tmp_path):
    # Before: a name with two "$" was read by matplotlib as math ("$\frac{$" raised
    # after metrics.json was written; "$1-$5" lost its dollars in the picture).
    from fcn_lightning.eval_outputs import plot_confusion, write_confusion_csv

    names = ["back,ground", '"quoted"', "$\\frac{$", "$1-$5"]
    confusion = np.arange(16, dtype=np.int64).reshape(4, 4)
    write_confusion_csv(tmp_path / "confusion.csv", confusion, names)
    plot_confusion(tmp_path / "confusion.png", confusion, names)
    with (tmp_path / "confusion.csv").open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0][1:] == names and [r[0] for r in rows[1:]] == names
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == confusion.tolist()
    with Image.open(tmp_path / "confusion.png") as im:
        assert im.format == "PNG"


def _one_row_eval_dir(root):
    """An eval run dir holding one worst image, written here with Pillow."""
    (root / "worst").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(root / "img.jpg")
    Image.fromarray(np.ones((8, 6), np.uint8), "P").save(root / "label.png")
    Image.fromarray(np.ones((8, 6), np.uint8), "P").save(root / "worst" / "01_a.png")
    (root / "worst.csv").write_text(
        "rank,id,mean_iu,pixel_acc,prediction,image,label\n"
        f"1,a,0.5,0.5,worst/01_a.png,{root / 'img.jpg'},{root / 'label.png'}\n"
    )
    return root


@pytest.mark.parametrize("out", ["a_file", "a_file/sub"])
def test_report_worst_out_a_file_is_one_line(tmp_path, capsys, out):
    # Before: FileExistsError / NotADirectoryError tracebacks.
    run = _one_row_eval_dir(tmp_path / "eval")
    (tmp_path / "a_file").write_text("mine")
    assert report_main([str(run), "--worst", "1", "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out {tmp_path / out}: "), err
    assert (tmp_path / "a_file").read_text() == "mine"
    (run / "worst.png").mkdir()  # a folder where the picture goes
    assert report_main([str(run), "--worst", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {run / 'worst.png'}: "), err
    assert report_main([str(run), "--worst", "1", "--out", str(tmp_path / "new")]) == 0
    with Image.open(tmp_path / "new" / "worst.png") as im:
        assert im.size[1] == 14 + 8  # the caption strip and one row of 8 pixels


def test_a_split_without_labelled_pixels_says_so_in_report_worst(tmp_path, capsys):
    # Before: eval (worst_k=3) wrote no worst.csv and report said "not found; run eval
    # with worst_k=<K>", which it just had.
    from fcn_lightning.eval_outputs import PerImageScores, write_eval_outputs

    scores = PerImageScores(NUM_CLASSES, worst_k=3)
    scores._batches, scores.ids = [[0, 1]], ["a", "b"]
    labels = torch.full((2, 6, 5), 255, dtype=torch.uint8)  # nothing labelled
    scores.on_validation_batch_end(None, None, torch.randn(2, NUM_CLASSES, 6, 5),
                                   (None, labels), 0)  # fmt: skip
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    written = write_eval_outputs(tmp_path, scores, names, dataset=None)
    assert "worst.csv" in written
    with (tmp_path / "per_image.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["id"], r["mean_iu"], r["labelled_pixels"]) for r in rows] == [
        ("a", "nan", "0"), ("b", "nan", "0")]  # fmt: skip
    assert report_main([str(tmp_path), "--worst", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lists no images" in err[0] and "labelled pixel" in err[0], err
