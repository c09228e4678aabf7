"""Bad data files, configs and checkpoints (the first table): each refused with its message,
nothing lost. The harness (tests/bad_input/harness.py) says what each case asserts."""

from __future__ import annotations

import pytest

from tests.bad_input.harness import (
    SPLITS,
    Case,
    check_case,
    code_pickle,
    edited_checkpoint,
    fake_jpeg_among_images,
    images_and_notes,
    learned_upsampling_checkpoint,
    other_classes_checkpoint,
    raw_code_pickle,
    small_label,
    stray_label,
    text_file,
    truncate,
    truncated_checkpoint,
    weights_only_file,
    write_text,
)

CASES = [
    # -- data ---------------------------------------------------------------------------
    Case("missing dataset root", "data", "train",
         lambda p: [f"paths.data_dir={p.root / 'nowhere'}"],
         ["synthetic dataset not found at {root}/nowhere/synthetic", "data.generate=true"]),
    Case("misnamed dataset root", "data", "train", lambda p: [],
         ["not found at {data}/synthetic", "found {data}/Synthetic: rename it"],
         setup=lambda p: p.voc.rename(p.data / "Synthetic")),
    Case("data_dir pointing into the dataset", "data", "train",
         lambda p: [f"paths.data_dir={p.voc}"],
         ["paths.data_dir points into the dataset", "holds synthetic/"]),
    Case("missing split file", "data", "train", lambda p: [],
         ["split list {voc}/" + SPLITS + "/train.txt is missing",
          "splits of synthetic here are ['synthetic_trainval', 'synthetic_val']"],
         setup=lambda p: (p.voc / SPLITS / "train.txt").unlink()),
    Case("empty split", "data", "train", lambda p: [],
         ["split list {voc}/" + SPLITS + "/val.txt lists no image IDs"],
         setup=lambda p: write_text(p.voc / SPLITS / "val.txt", "\n")),
    Case("ID with no image", "data", "train", lambda p: [],
         ["{image}: missing image of ID", "in split synthetic_val", "verify_data"],
         setup=lambda p: p.image().unlink()),
    Case("ID with no label", "data", "train", lambda p: [],
         ["{label}: missing label of ID", "in split synthetic_val"],
         setup=lambda p: p.label().unlink()),
    Case("corrupt JPEG", "data", "train", lambda p: [],
         ["{image}: corrupt or unreadable image", "replace it"],
         setup=lambda p: p.image().write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG"), fresh=True),
    Case("truncated JPEG", "data", "train", lambda p: [],
         ["{image}: corrupt or unreadable image", "replace it"],
         setup=lambda p: truncate(p.image()), fresh=True),
    Case("corrupt PNG label", "data", "train", lambda p: [],
         ["{label}: corrupt or unreadable label PNG", "replace it"],
         setup=lambda p: p.label().write_bytes(b"\x89PNG\r\n\x1a\n garbage"), fresh=True),
    Case("truncated PNG label", "data", "train", lambda p: [],
         ["{label}: corrupt or unreadable label PNG", "replace it"],
         setup=lambda p: truncate(p.label()), fresh=True),
    Case("image/label size mismatch", "data", "train", lambda p: [],
         ["{label}: label is 10x10 (HxW) but image {image} is"],
         setup=small_label, fresh=True),
    Case("label values outside [0, C) and not 255", "data", "train", lambda p: [],
         ["{label}: label values [9] are neither classes 0..6 nor 255", "data.num_classes"],
         setup=stray_label, fresh=True),
    Case("predict folder with non-image files", "data", "predict",
         lambda p: [f"inputs={p.extra['folder']}"],
         ["inputs={root}/photos: holds 1 non-image file(s)", "notes.txt", "inputs=<list.txt>"],
         setup=lambda p: p.extra.update(folder=images_and_notes(p))),
    Case("predict image that is not an image", "data", "predict",
         lambda p: [f"inputs={p.extra['folder']}"],
         ["{root}/photos/b.jpg: corrupt or unreadable image"],
         setup=lambda p: p.extra.update(folder=fake_jpeg_among_images(p))),
    Case("predict inputs that do not exist", "data", "predict",
         lambda p: [f"inputs={p.root / 'photos'}"],
         ["inputs={root}/photos: no such image, folder or list file"]),
    Case("eval on a missing data_dir", "data", "eval",
         lambda p: [f"data_dir={p.root / 'moved'}"],
         ["synthetic dataset not found at {root}/moved/synthetic"]),
    # -- config -------------------------------------------------------------------------
    Case("unknown variant", "config", "train", lambda p: ["model.variant=fcn4s"],
         ["model.variant='fcn4s': choose one of", "fcn8s"], resume=False),
    Case("unknown backbone", "config", "train", lambda p: ["model.backbone=resnet34"],
         ["model.backbone='resnet34': choose one of ['vgg16', 'alexnet'"], resume=False),
    Case("unknown model preset", "config", "train", lambda p: ["model=fcn4s"],
         ["model=fcn4s: no such model preset (nearest: model=fcn8s); choose one of fcn16s,"]),
    Case("unknown data preset", "config", "train", lambda p: ["data=voc2013"],
         ["data=voc2013: no such data preset (nearest: data=voc2012)",
          "one of folder, nyud, paper, pascal_context,"]),
    Case("unknown experiment preset", "config", "train", lambda p: ["experiment=nope"],
         ["experiment=nope: no such experiment preset; choose one of fcn_alexnet,"]),
    Case("num_classes not matching the data", "config", "train",
         lambda p: ["model.num_classes=5"],
         ["model.num_classes=5 but the data has 7 classes", "data.num_classes"], resume=False),
    Case("num_classes not matching the checkpoint (train)", "config", "train",
         lambda p: [f"ckpt_path={p.extra['ckpt']}"],
         ["ckpt_path={root}/classes21.ckpt: the checkpoint was trained with model.num_classes=21",
          "this run has data.num_classes=7 (model.num_classes follows it)"],
         setup=lambda p: p.extra.update(
             ckpt=edited_checkpoint(p, "classes21.ckpt", num_classes=21)),
         resume=False),
    Case("num_classes not matching the checkpoint (eval)", "config", "eval",
         lambda p: ["data=voc2012", f"paths.data_dir={p.data}"],
         ["ckpt_path={ckpt} predicts 7 classes but the data has 21", "choose matching data"]),
    Case("batch > 1 without padding collate or crop", "config", "train",
         lambda p: ["data.batch_size=2"],
         ["data.batch_size=2 needs images of one size", "data.collate=pad", "data.crop_size"],
         resume=False),
    Case("validation batch > 1 without padding collate", "config", "train",
         lambda p: ["data.val_batch_size=2"],
         ["data.val_batch_size=2", "data.collate=pad or data.val_batch_size=1"]),
    Case("learned upsampling with shift-and-stitch", "config", "eval",
         lambda p: ["inference.dense=stitch", "inference.factor=2"],
         ["inference.factor=2: this model learned its final upsampling (upscore)",
          "inference.factor=32"],
         setup=lambda p: p.extra.update(ckpt=learned_upsampling_checkpoint(p))),
    Case("missing run to resume", "config", "train", lambda p: ["ckpt_path=last"],
         ["ckpt_path=last: no checkpoint at {new_run}/checkpoints/last.ckpt"], fresh=True),
    # -- checkpoints --------------------------------------------------------------------
    Case("not a checkpoint (train ckpt_path)", "checkpoint", "train",
         lambda p: [f"ckpt_path={text_file(p)}"],
         ["ckpt_path={root}/notes.ckpt: not a readable PyTorch weights file"], resume=False),
    Case("not a checkpoint (eval)", "checkpoint", "eval", lambda p: [],
         ["ckpt_path={root}/notes.ckpt: not a readable PyTorch weights file"],
         setup=lambda p: p.extra.update(ckpt=text_file(p))),
    Case("not a checkpoint (predict)", "checkpoint", "predict", lambda p: [],
         ["ckpt_path={root}/notes.ckpt: not a readable PyTorch weights file"],
         setup=lambda p: p.extra.update(ckpt=text_file(p))),
    Case("truncated checkpoint (eval)", "checkpoint", "eval", lambda p: [],
         ["ckpt_path={root}/half.ckpt: not a readable PyTorch weights file", "re-download"],
         setup=lambda p: p.extra.update(ckpt=truncated_checkpoint(p))),
    Case("weights without training state (train ckpt_path)", "checkpoint", "train",
         lambda p: [f"ckpt_path={weights_only_file(p)}"],
         ["not a fcn-lightning training checkpoint", "model.init_from"], resume=False),
    Case("checkpoint of another variant (train ckpt_path)", "checkpoint", "train",
         lambda p: [f"ckpt_path={edited_checkpoint(p, 'fcn16s.ckpt', variant='fcn16s')}"],
         ["the checkpoint was trained with model.variant=fcn16s",
          "this run has model.variant=fcn32s"], resume=False),
    Case("checkpoint of another class count (model.init_from)", "checkpoint", "train",
         lambda p: [f"model.init_from={p.extra['other']}"],
         ["model.init_from={root}/other.ckpt: score_fr.weight has shape (21,", "num_classes"],
         setup=lambda p: p.extra.update(other=other_classes_checkpoint(p)), resume=False),
    Case("checkpoint with a tensor of another shape (eval)", "checkpoint", "eval", lambda p: [],
         ["ckpt_path={root}/sliced.ckpt: model.score_fr.weight has shape (3,",
          "the file was altered or is from another model"],
         setup=lambda p: p.extra.update(ckpt=sliced_checkpoint(p))),
    Case("code-carrying pickle (train ckpt_path)", "checkpoint", "train",
         lambda p: [f"ckpt_path={code_pickle(p)}"],
         ["ckpt_path={root}/evil.ckpt: refused to load, it would import code"], resume=False),
    Case("code-carrying pickle (eval)", "checkpoint", "eval", lambda p: [],
         ["ckpt_path={root}/evil.ckpt: refused to load, it would import code"],
         setup=lambda p: p.extra.update(ckpt=code_pickle(p))),
    Case("code-carrying pickle (predict)", "checkpoint", "predict", lambda p: [],
         ["ckpt_path={root}/evil.ckpt: refused to load, it would import code"],
         setup=lambda p: p.extra.update(ckpt=code_pickle(p))),
    Case("bare code-carrying pickle (eval)", "checkpoint", "eval", lambda p: [],
         ["ckpt_path={root}/evil.pkl: refused to load, a Python pickle"],
         setup=lambda p: p.extra.update(ckpt=raw_code_pickle(p))),
    Case("code-carrying pickle (model.init_from)", "checkpoint", "train",
         lambda p: [f"model.init_from={code_pickle(p)}"],
         ["model.init_from={root}/evil.ckpt: refused to load"], resume=False),
]  # fmt: skip


def sliced_checkpoint(place) -> object:
    """The earlier run's checkpoint with one tensor cut (a file edited by hand)."""
    import torch

    checkpoint = torch.load(place.ckpt, weights_only=True)
    state = checkpoint["state_dict"]
    state["model.score_fr.weight"] = state["model.score_fr.weight"][:3].clone()
    path = place.root / "sliced.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_its_message_and_nothing_is_lost(
    case, earlier, tmp_path, monkeypatch, capfd
):
    check_case(case, earlier, tmp_path, monkeypatch, capfd)


def test_the_table_covers_every_kind_of_bad_input():
    kinds = {kind: sum(c.kind == kind and not c.skip for c in CASES) for kind in
             ("data", "config", "checkpoint")}  # fmt: skip
    assert all(kinds.values()), kinds
    assert len({c.id for c in CASES}) == len(CASES)
