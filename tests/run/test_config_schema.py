"""The typed config schema against the config tree: every preset of every group passes it,
every key it declares exists in some preset, and wrong values are named with the fix."""

# ruff: noqa: E501  (the table of wrong values reads one case per line)
from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from fcn_lightning import resolvers  # noqa: F401  (the config's resolvers)
from fcn_lightning.errors import ConfigError
from fcn_lightning.run.check_config import check_config
from fcn_lightning.run.config import CONF_DIR
from fcn_lightning.run.schema import SCHEMAS

GROUPS = ("model", "data", "optim", "loss", "trainer", "logger", "callbacks", "debug",
          "experiment", "row", "recipe", "inference", "hparams_search")  # fmt: skip
REQUIRED = {"eval": ["ckpt_path=x.ckpt"], "export": ["ckpt_path=x.ckpt"],
            "predict": ["ckpt_path=x.ckpt", "inputs=photos"]}  # fmt: skip
NEEDS_GPU = {"trainer=gpu", "trainer=ddp"}  # refused on this CPU machine, by design


@pytest.fixture(scope="module")
def hydra_compose():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        yield composed
    GlobalHydra.instance().clear()


_composed: dict[tuple[str, ...], object] = {}


def composed(task: str, overrides: list[str]):
    """The config ``python -m fcn_lightning.<task> overrides`` hands its main (composed
    once per process: the checks only read it)."""
    key = (task, *overrides)
    if key not in _composed:
        _composed[key] = _compose(task, overrides)
    return _composed[key]


def _compose(task: str, overrides: list[str]):
    cfg = compose(task, overrides=[*REQUIRED.get(task, []), *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "/tmp/run"
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def presets() -> list[tuple[str, str]]:
    conf = Path(CONF_DIR)
    return [(g, p.stem) for g in GROUPS for p in sorted((conf / g).glob("*.yaml"))]


def tasks_of(group: str) -> list[str]:
    """The entry points whose config has this group."""
    text = {t: (Path(CONF_DIR) / f"{t}.yaml").read_text() for t in SCHEMAS}
    found = [t for t, body in text.items() if f"- {group}:" in body]
    return found or ["train"]  # experiment, row, debug, ...: train's globals


@pytest.mark.parametrize("task", sorted(SCHEMAS))
def test_each_entry_points_default_config_passes(hydra_compose, task):
    check_config(hydra_compose(task, []), task)


@pytest.mark.parametrize(("group", "option"), presets(), ids=[f"{g}={o}" for g, o in presets()])
def test_every_preset_passes_the_schema(hydra_compose, group, option):
    for task in tasks_of(group):
        cfg = hydra_compose(task, [f"{group}={option}"])
        if f"{group}={option}" in NEEDS_GPU:
            with pytest.raises(ConfigError, match="this machine has no CUDA GPU"):
                check_config(cfg, task)
        else:
            check_config(cfg, task)


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls, vars(__import__("fcn_lightning.run.schema").run.schema))
    keys = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        inner = [a for a in (typing.get_args(hint) or (hint,)) if dataclasses.is_dataclass(a)]
        keys += leaf_keys(inner[0], f"{prefix}{f.name}.") if inner else [f"{prefix}{f.name}"]
    return keys


def test_every_key_the_schema_declares_is_set_by_some_preset(hydra_compose):
    """A schema key no config file sets is stale (renamed or removed in conf/)."""
    seen: set[str] = set()
    for task in SCHEMAS:
        for group, option in [(None, None), *presets()]:
            if group is not None and task not in tasks_of(group):
                continue
            overrides = [] if group is None else [f"{group}={option}"]
            plain = OmegaConf.to_container(hydra_compose(task, overrides), resolve=False)
            seen |= {f"{task}:{k}" for k in flatten(plain)}
    groups = {key.partition(":")[2] for key in seen if "." in key}  # a group's keys: any task
    for task, cls in SCHEMAS.items():
        missing = [k for k in leaf_keys(cls) if f"{task}:{k}" not in seen and k not in groups]
        assert missing == [], f"{task}: schema keys no preset sets: {missing}"


def flatten(node, prefix=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from flatten(value, f"{prefix}{key}.")
    yield prefix.rstrip(".")


# The message each wrong value gets: (task, overrides, fragments of the one problem line).
WRONG = [
    ("train", ["optim.lr=abc"], ["optim.lr='abc': expected a number"]),
    ("train", ["data=voc2012", "+data.expected_counts.voc2012_trian=3"],
     ["data.expected_counts.voc2012_trian: no split of this run is named voc2012_trian (its "
      "splits: voc2012_train, voc2012_val; nearest: voc2012_train)"]),
    ("train", ["optim.lr=-0.1"], ["optim.lr=-0.1: must be greater than 0"]),
    ("train", ["optim.lr=0"], ["optim.lr=0: must be greater than 0"]),
    ("train", ["optim.momentum=1.5"], ["optim.momentum=1.5: must be less than 1"]),
    ("train", ["optim.momentum=1"], ["optim.momentum=1: must be less than 1"]),
    ("train", ["optim.weight_decay=-1e-4"], ["optim.weight_decay=-0.0001: must be at least 0"]),
    ("train", ["optim.schedule=cosine"], ["optim.schedule='cosine': choose one of ['fixed', 'poly']"]),
    ("train", ["loss.normalize=avg"], ["loss.normalize='avg': choose one of ['sum', 'mean']"]),
    ("train", ["loss.keep_prob=0"], ["loss.keep_prob=0: must be greater than 0"]),
    ("train", ["loss.keep_prob=1.5"], ["loss.keep_prob=1.5: must be at most 1"]),
    ("train", ["loss.class_weight=[1,-1]"], ["loss.class_weight[1]=-1: must be at least 0"]),
    ("train", ["loss.class_balance=median"], ["loss.class_balance='median'", "median_frequency"]),
    ("train", ["trainer.val_check_interval=0"], ["trainer.val_check_interval=0: must be greater than 0"]),
    ("train", ["trainer.max_steps=abc"], ["trainer.max_steps='abc': expected an integer"]),
    ("train", ["trainer.max_steps=1e3"], ["trainer.max_steps=1000.0: expected an integer",
                                          "e.g. trainer.max_steps=1000"]),
    ("train", ["trainer.max_steps=-1"], ["trainer.max_steps=-1: training needs a number of steps",
                                         "-1 would train forever"]),
    ("train", ["trainer.max_steps=0"], ["trainer.max_steps=0: training needs a number of steps"]),
    ("train", ["trainer.devices=abc"], ["trainer.devices='abc': expected a count, -1, auto or GPU ids"]),
    ("train", ["trainer.precision=15"], ["trainer.precision=15: choose one of"]),
    ("train", ["trainer.accelerator=gpux"], ["trainer.accelerator='gpux'", "(did you mean gpu?)"]),
    ("train", ["trainer.accelerator=gpu"], ["trainer.accelerator=gpu: this machine has no CUDA GPU",
                                            "use trainer=cpu"]),
    ("train", ["trainer=ddp"], ["this machine has no CUDA GPU"]),
    ("train", ["trainer.log_every_n_steps=0"], ["trainer.log_every_n_steps=0: must be at least 1"]),
    ("train", ["trainer.ddp_timeout_s=0"], ["trainer.ddp_timeout_s=0: must be greater than 0"]),
    ("train", ["+trainer.foo=1"], ["unknown key trainer.foo", "or any pytorch_lightning.Trainer argument"]),
    ("train", ["+trainer.max_step=3"], ["unknown key trainer.max_step: did you mean trainer.max_steps?"]),
    ("train", ["+optim.momentun=0.5"], ["unknown key optim.momentun: did you mean optim.momentum?"]),
    ("train", ["+seedd=3"], ["unknown key seedd: did you mean seed?"]),
    ("train", ["+model.widht=0.5"], ["unknown key model.widht: did you mean model.width?"]),
    ("train", ["+data.crop=224"], ["unknown key data.crop: did you mean data.crop_size?"]),
    ("train", ["seed=abc"], ["seed='abc': expected an integer"]),
    ("train", ["seed=-1"], ["seed=-1: must be at least 0"]),
    ("train", ["test=yes"], ["test='yes': expected true or false, e.g. test=true"]),
    ("train", ["claim_gpu=1"], ["claim_gpu=1: expected true or false, e.g. claim_gpu=true"]),
    ("train", ["paths.data_dir="], ["paths.data_dir is empty"]),
    ("train", ["paths.log_dir="], ["paths.log_dir is empty"]),
    ("train", ["ckpt_path="], ["ckpt_path is empty"]),
    ("train", ["model.variant=fcn4s"], ["model.variant='fcn4s': choose one of", "(did you mean fcn8s?)"]),
    ("train", ["model.width=0"], ["model.width=0: must be greater than 0"]),
    ("train", ["model.dropout=1"], ["model.dropout=1: must be less than 1"]),
    ("train", ["model.geometry=pad100"], ["model.geometry='pad100': choose one of ['caffe', 'aligned']"]),
    ("train", ["model.upsampling=bilinear"], ["model.upsampling='bilinear'", "['fixed', 'learned']"]),
    ("train", ["model.weights=imagenet"], ["model.weights='imagenet': choose one of"]),
    ("train", ["model.pretrained=maybe"], ["model.pretrained='maybe': expected true or false"]),
    ("train", ["data.batch_size=0"], ["data.batch_size=0: must be at least 1"]),
    ("train", ["data.batch_size=2.5"], ["data.batch_size=2.5: expected an integer"]),
    ("train", ["data.num_workers=-1"], ["data.num_workers=-1: must be at least 0"]),
    ("train", ["data.collate=padding"], ["data.collate='padding'", "(did you mean pad?)"]),
    ("train", ["data.sampling=random"], ["data.sampling='random': choose one of"]),
    ("train", ["data.normalization=imagenet"], ["data.normalization='imagenet': choose one of"]),
    ("train", ["data.ignore_index=256"], ["data.ignore_index=256: must be at most 255"]),
    ("train", ["data.crop_size=0"], ["data.crop_size=0: must be at least 1"]),
    ("train", ["data.crop_size=[224,224,3]"], ["data.crop_size=[224, 224, 3]: give one size or [height, width]"]),
    ("train", ["data.scale_range=[0.5]"], ["data.scale_range=[0.5]: expected 2 values, got 1"]),
    ("train", ["data.scale_range=[2.0,0.5]"], ["data.scale_range=[2.0, 0.5]: give [low, high]"]),
    ("train", ["data.hflip=3"], ["data.hflip=3: expected true or false"]),
    ("train", ["data.num_workers=0", "data.persistent_workers=true"],
     ["data.persistent_workers=true needs data.num_workers > 0"]),
    ("train", ["data.train_split="], ["data.train_split is empty"]),
    ("train", ["resume.overwrite=sure"], ["resume.overwrite='sure': expected true or false"]),
    ("train", ["resume.allow_changes=optim.lr"], ["resume.allow_changes='optim.lr': expected a list"]),
    ("train", ["tags=a"], ["tags='a': expected a list of strings"]),
    ("eval", ["batch_size=0"], ["batch_size=0: must be at least 1"]),
    ("eval", ["+data.normalisation=caffe"], ["unknown key data.normalisation: did you mean data.normalization?"]),
    ("eval", ["+data.batch_size=0"], ["data.batch_size=0: must be at least 1"]),
    ("eval", ["split="], ["split is empty"]),
    ("eval", ["inference.dense=tile"], ["inference.dense='tile': choose one of ['none', 'stitch', 'dilate']"]),
    ("eval", ["inference.factor=0"], ["inference.factor=0: must be at least 1"]),
    ("eval", ["inference.tta.scales=[]"], ["inference.tta.scales=[]: give at least one value"]),
    ("eval", ["inference.tta.scales=[1.0,-0.5]"], ["inference.tta.scales[1]=-0.5: must be greater than 0"]),
    ("predict", ["device=gpu"], ["device='gpu': expected auto, cpu, cuda or cuda:<index>"]),
    ("predict", ["alpha=2"], ["alpha=2: must be at most 1"]),
    ("predict", ["inputs="], ["inputs is empty"]),
    ("export", ["format=tflite"], ["format='tflite': choose one of ['onnx', 'torchscript']"]),
    ("export", ["example_size=[0,0]"], ["example_size[0]=0: must be at least 1"]),
    ("export", ["example_size=224"], ["example_size=224: expected a list of integers"]),
    ("export", ["opset=abc"], ["opset='abc': expected an integer"]),
    ("export", ["check_tolerance=0"], ["check_tolerance=0: must be greater than 0"]),
    ("verify_data", ["num_workers=-2"], ["num_workers=-2: must be at least 0"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("task", "overrides", "expect"), WRONG, ids=[" ".join(w[1]) for w in WRONG]
)
def test_a_wrong_value_is_named_with_what_it_may_be(hydra_compose, task, overrides, expect):
    with pytest.raises(ConfigError) as caught:
        check_config(hydra_compose(task, overrides), task)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in expect:
        assert fragment in message, message


def test_a_count_for_the_split_eval_scores_is_checked_not_refused(hydra_compose):
    overrides = ["ckpt_path=x.ckpt", "data=voc_aug", "+data.expected_counts.seg11valid=736",
                 "split=seg11valid"]  # fmt: skip
    check_config(hydra_compose("eval", overrides), "eval")


def test_every_problem_is_reported_at_once(hydra_compose):
    wrong = ["optim.lr=-1", "optim.momentum=2", "loss.normalize=avg", "seed=x", "data.batch_size=0"]
    with pytest.raises(ConfigError) as caught:
        check_config(hydra_compose("train", wrong), "train")
    message = str(caught.value)
    assert message.startswith("5 config problems: (1) ")
    for key in ("optim.lr=-1", "optim.momentum=2", "loss.normalize='avg'", "seed='x'",
                "data.batch_size=0"):  # fmt: skip
        assert key in message, message


def test_a_missing_mandatory_value_says_how_to_give_it(hydra_compose):
    cfg = compose("predict", overrides=["ckpt_path=a.ckpt"], return_hydra_config=False)
    with pytest.raises(ConfigError, match=r"inputs is required: give inputs=<an image, a folder"):
        check_config(cfg, "predict")
    cfg = compose("eval", overrides=[], return_hydra_config=False)  # no ckpt_path, no model_zoo
    with pytest.raises(ConfigError, match=r"ckpt_path is required: give ckpt_path=<file.ckpt>, or"):
        check_config(cfg, "eval")


def test_a_missing_key_is_named(hydra_compose):
    with pytest.raises(ConfigError, match=r"optim.lr is missing: set optim.lr=<a number>"):
        check_config(hydra_compose("train", ["~optim.lr"]), "train")


def test_an_unknown_variant_names_the_recipe_entry_it_lacks(hydra_compose):
    with pytest.raises(ConfigError) as caught:
        check_config(hydra_compose("train", ["model.variant=fcn4s"]), "train")
    assert "optim.lr: the recipe has no learning rate for model.backbone=vgg16 model.variant=fcn4s" \
        in str(caught.value)  # fmt: skip


def test_a_user_variant_with_its_own_lr_passes_the_recipe_check(hydra_compose):
    """recipe.paper_lr may be null (no entry) when optim.lr does not use it."""
    cfg = copy.deepcopy(hydra_compose("train", ["optim=sgd_poly", "data=synthetic"]))
    with open_dict(cfg):
        cfg.recipe.lr = {}
    check_config(cfg, "train")
