"""Config values checked before anything is written, through the real entry points: the
values that used to be caught only in configure_optimizers, the first step or Lightning's
fit (after the run dir's config, hparams and CSV history were rewritten), and untyped ones
that ended in tracebacks or were silently ignored. Plus a property test: any invalid value
of any typed key gets one line naming that key, exit status 2, and nothing written.
"""

from __future__ import annotations

import dataclasses
import math
import string
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fcn_lightning.run import schema
from fcn_lightning.run.schema import TrainConfig
from tests.bad_input.harness import Case, Place, check_case, entry_args, run_entry, snapshot

CASES = [
    # -- checked too late (after the run dir was rewritten), now first ------------------
    Case("negative lr", "config", "train", lambda p: ["optim.lr=-0.1"],
         ["optim.lr=-0.1: must be greater than 0"]),
    Case("momentum of 1.5", "config", "train", lambda p: ["optim.momentum=1.5"],
         ["optim.momentum=1.5: must be less than 1"]),
    Case("loss.normalize typo", "config", "train", lambda p: ["loss.normalize=avg"],
         ["loss.normalize='avg': choose one of ['sum', 'mean']"]),
    Case("validation every 0 steps", "config", "train", lambda p: ["trainer.val_check_interval=0"],
         ["trainer.val_check_interval=0: must be greater than 0"]),
    Case("lr not a number", "config", "train", lambda p: ["optim.lr=abc"],
         ["optim.lr='abc': expected a number"]),
    Case("infinite lr", "config", "train", lambda p: ["optim.lr=inf"],
         ["optim.lr=inf: must be a finite number"]),
    Case("NaN lr", "config", "train", lambda p: ["optim.lr=nan"],
         ["optim.lr=nan: must be a finite number"]),
    Case("poly schedule typo", "config", "train", lambda p: ["optim.schedule=poly2"],
         ["optim.schedule='poly2'", "(did you mean poly?)"]),
    Case("every problem at once", "config", "train",
         lambda p: ["optim.lr=-0.1", "optim.momentum=1.5", "loss.normalize=avg",
                    "trainer.val_check_interval=0"],
         ["4 config problems: (1) optim.lr=-0.1", "(2) optim.momentum=1.5",
          "(3) loss.normalize='avg'", "(4) trainer.val_check_interval=0"]),
    # -- untyped config --------------------------------------------------------------------
    Case("max_steps not a number", "config", "train", lambda p: ["trainer.max_steps=abc"],
         ["trainer.max_steps='abc': expected an integer"]),
    Case("max_steps -1 trains forever", "config", "train", lambda p: ["trainer.max_steps=-1"],
         ["trainer.max_steps=-1: training needs a number of steps", "-1 would train forever"]),
    Case("max_steps as a float", "config", "train", lambda p: ["trainer.max_steps=4.0"],
         ["trainer.max_steps=4.0: expected an integer, e.g. trainer.max_steps=4"]),
    Case("typo under + is refused", "config", "train", lambda p: ["+optim.momentun=0.5"],
         ["unknown key optim.momentun: did you mean optim.momentum?"]),
    Case("typo of a Trainer argument", "config", "train", lambda p: ["+trainer.max_epoch=3"],
         ["unknown key trainer.max_epoch: did you mean trainer.max_epochs?"]),
    Case("unknown top-level key", "config", "train", lambda p: ["+sed=3"],
         ["unknown key sed: did you mean seed?"]),
    Case("seed not a number", "config", "train", lambda p: ["seed=abc"],
         ["seed='abc': expected an integer"]),
    Case("empty data_dir", "config", "train", lambda p: ["paths.data_dir="],
         ["paths.data_dir is empty"]),
    Case("bool as yes", "config", "train", lambda p: ["data.hflip=yes"],
         ["data.hflip='yes': expected true or false, e.g. data.hflip=true"]),
    Case("a GPU trainer without a GPU", "config", "train", lambda p: ["trainer=gpu"],
         ["trainer.accelerator=gpu: this machine has no CUDA GPU", "use trainer=cpu"]),
    Case("accelerator=cuda without a GPU", "config", "train",
         lambda p: ["trainer.accelerator=cuda"], ["this machine has no CUDA GPU"]),
    Case("interpolation to nothing", "config", "train", lambda p: ["optim.lr=${nope}"],
         ["optim.lr: ", "nope"]),
    Case("environment variable not set", "config", "train",
         lambda p: ["paths.log_dir=${oc.env:FCN_TEST_UNSET_VARIABLE}"],
         ["paths.log_dir: ", "FCN_TEST_UNSET_VARIABLE"]),
    Case("crop of three sizes", "config", "train", lambda p: ["data.crop_size=[8,8,8]"],
         ["data.crop_size=[8, 8, 8]: give one size or [height, width]"]),
    Case("workers kept without workers", "config", "train",
         lambda p: ["data.persistent_workers=true"],
         ["data.persistent_workers=true needs data.num_workers > 0"]),
    Case("fresh run: negative lr", "config", "train", lambda p: ["optim.lr=-1"],
         ["optim.lr=-1: must be greater than 0"], fresh=True),
    Case("fresh run: unknown key", "config", "train", lambda p: ["+model.widht=2"],
         ["unknown key model.widht: did you mean model.width?"], fresh=True),
    Case("fresh run: GPU trainer", "config", "train", lambda p: ["trainer=gpu"],
         ["this machine has no CUDA GPU"], fresh=True),
    # -- handed to Lightning and to the callbacks ------------------------------------------
    Case("a float validation interval above 1", "config", "train",
         lambda p: ["trainer.val_check_interval=1.5"],
         ["trainer.val_check_interval=1.5: a float is a fraction of an epoch (at most 1.0)"]),
    Case("no devices", "config", "train", lambda p: ["trainer.devices=0"],
         ["trainer.devices=0: give a count"]),
    Case("a batch limit fraction above 1", "config", "train",
         lambda p: ["+trainer.limit_train_batches=1.5"],
         ["trainer.limit_train_batches=1.5: a float is a fraction (at most 1.0)"]),
    Case("a Trainer argument Lightning refuses", "config", "train",
         lambda p: ["+trainer.max_time=abc"],
         ["trainer: Lightning refused the settings:", "is not a valid duration"], fresh=True),
    Case("a callback argument of the wrong type", "config", "train",
         lambda p: ["callbacks.samples.num_samples=abc"],
         ["callbacks.samples.num_samples='abc': expected an integer"], fresh=True),
    Case("a callback argument that does not exist", "config", "train",
         lambda p: ["+callbacks.lr_monitor.foo=1"],
         ["unknown key callbacks.lr_monitor.foo: the keys under callbacks.lr_monitor are"]),
    Case("a callback class that does not import", "config", "train",
         lambda p: ["+callbacks.extra._target_=nope.Nope"],
         ["callbacks.extra._target_='nope.Nope': cannot be imported (No module named 'nope')"]),
    Case("a logger argument that does not exist", "config", "train",
         lambda p: ["+logger.csv.foo=1"], ["unknown key logger.csv.foo"]),
    Case("a run name that is a path", "config", "train", lambda p: ["run_name=../../escape"],
         ["run_name='../../escape': expected a name without /"], fresh=True),
    Case("a run directory that cannot be made", "config", "train",
         lambda p: ["hydra.run.dir=/proc/no/such/run"],
         ["run directory /proc/no/such/run cannot be created", "paths.log_dir or hydra.run.dir"],
         resume=False),
    # -- the other entry points ------------------------------------------------------------
    Case("export opset too old for the graph", "config", "export", lambda p: ["opset=7"],
         ["opset=7: must be at least 11"]),
    Case("eval batch of 0", "config", "eval", lambda p: ["batch_size=0"],
         ["batch_size=0: must be at least 1"]),
    Case("eval on a GPU trainer without a GPU", "config", "eval", lambda p: ["trainer=gpu"],
         ["this machine has no CUDA GPU"]),
    Case("eval dense mode typo", "config", "eval", lambda p: ["inference.dense=stich"],
         ["inference.dense='stich'", "(did you mean stitch?)"]),
    Case("eval typo in a data key", "config", "eval", lambda p: ["+data.batch_sise=2"],
         ["unknown key data.batch_sise: did you mean data.batch_size?"]),
    Case("predict alpha above 1", "config", "predict", lambda p: ["alpha=2"],
         ["alpha=2: must be at most 1"]),
    Case("predict with no inputs", "config", "predict", lambda p: ["inputs="],
         ["inputs is empty"]),
    Case("predict scales empty", "config", "predict", lambda p: ["inference.tta.scales=[]"],
         ["inference.tta.scales=[]: give at least one value"]),
    Case("export opset not a number", "config", "export", lambda p: ["opset=abc"],
         ["opset='abc': expected an integer"]),
    Case("export tolerance 0", "config", "export", lambda p: ["check_tolerance=0"],
         ["check_tolerance=0: must be greater than 0"]),
    # -- the model zoo (fcn_lightning/interop/zoo.yaml): refused before any download --------
    Case("eval ckpt_path and model_zoo", "config", "eval", lambda p: ["model_zoo=voc-fcn8s"],
         ["ckpt_path={ckpt} and model_zoo=voc-fcn8s: give one of them, not both"]),
    Case("predict model_zoo typo", "config", "predict",
         lambda p: ["ckpt_path=null", "model_zoo=voc-fcn8z"],
         ["model_zoo=voc-fcn8z: no such model in the zoo", "did you mean voc-fcn8s"]),
    Case("export model_zoo never released", "config", "export",
         lambda p: ["ckpt_path=null", "model_zoo=nyud-fcn32s-color-d"],
         ["model_zoo=nyud-fcn32s-color-d: not released by the FCN authors", "no caffemodel-url"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_config_value_is_refused_before_anything_is_written(
    case, earlier, tmp_path, monkeypatch, capfd
):
    place = check_case(case, earlier, tmp_path, monkeypatch, capfd)
    if case.fresh:  # the run dir this launch created holds nothing of its own: removed
        assert not place.new_run.exists()


def test_the_table_covers_both_classes():
    assert len({c.id for c in CASES}) == len(CASES) >= 30
    assert {c.entry for c in CASES} == {"train", "eval", "predict", "export"}


def test_eval_without_ckpt_path_says_how_to_give_it(earlier, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    status = run_entry("eval", [f"hydra.run.dir={tmp_path / 'eval'}"], monkeypatch)
    err = capfd.readouterr().err
    assert status == 2, err[-2000:]
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        "error: ckpt_path is required: give ckpt_path=<file.ckpt>, or model_zoo=<name> for a "
        "reference model (python -m fcn_lightning.zoo lists them)"
    ]
    assert "Traceback" not in err
    assert not (tmp_path / "eval").exists()


def test_a_refused_predict_removes_the_run_dir_it_made(earlier, tmp_path, monkeypatch, capfd):
    """predict makes its out_dir first; a refusal before any mask leaves nothing."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "x.jpg").write_text("not an image")
    run = tmp_path / "predict_run"
    monkeypatch.chdir(tmp_path)
    status = run_entry("predict", [f"ckpt_path={earlier.ckpt}", f"inputs={photos}",
                                   "device=cpu", f"hydra.run.dir={run}"], monkeypatch)  # fmt: skip
    assert status == 2
    assert len([ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("error: ")]) == 1
    assert not run.exists()


# -- the property: every invalid value of every typed key ------------------------------------

WORDS = st.text(string.ascii_lowercase, min_size=2, max_size=7).filter(
    lambda w: w not in {"true", "false", "null", "nan", "inf", "none", "auto", "cpu", "gpu"}
)
SKIP = {  # free text, interpolated from elsewhere, or tables with their own tests
    "paths.output_dir", "trainer.default_root_dir", "recipe.lr", "recipe.steps",
    "data.expected_counts", "logger", "callbacks", "data.download_mirrors", "tags", "group",
    "resume.allow_changes", "model.name", "data.name", "optim.name", "recipe.name",
    "recipe.name_suffix", "run_name", "task_name", "data.classes", "data.train_split",
    "data.val_split", "data.test_split", "ckpt_path", "model.weights_path",
    "model.weights_url", "model.init_from", "model.init_stages", "data.data_dir",
    "paths.data_dir", "paths.log_dir", "trainer.strategy", "trainer.profiler",
    "data.synthetic", "trainer.devices", "model.num_classes", "data.num_classes",
    "trainer.accumulate_grad_batches", "optim.accumulate_grad_batches", "claim_gpu",
    "recipe.paper_lr", "recipe.paper_steps", "recipe.staged", "recipe.fixed",
    "model.frozen_backbone", "trainer.max_epochs", "trainer.check_val_every_n_epoch",
    "data.prefetch_factor", "trainer.limit_train_batches", "trainer.limit_val_batches",
    "trainer.limit_test_batches", "trainer.overfit_batches", "trainer.sync_batchnorm",
    "trainer.num_nodes", "data._target_", "trainer._target_", "trainer.deterministic",
}  # fmt: skip


def typed_leaves(cls: type, prefix: str = "") -> list[tuple[str, typing.Any, dict]]:
    hints = typing.get_type_hints(cls, vars(schema))
    leaves = []
    for f in dataclasses.fields(cls):
        key, hint = f"{prefix}{f.name}", hints[f.name]
        if key in SKIP:
            continue
        if dataclasses.is_dataclass(hint):
            leaves += typed_leaves(hint, f"{key}.")
        else:
            leaves.append((key, hint, dict(f.metadata)))
    return leaves


LEAVES = typed_leaves(TrainConfig)


def invalid(hint: typing.Any, bounds: dict) -> st.SearchStrategy[str]:
    """Override values (as typed on the command line) that ``hint`` + ``bounds`` refuse."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args and typing.get_origin(hint) in (typing.Union, type(int | None)) else hint
    if typing.get_origin(base) is list:
        return st.sampled_from(["5", "abc"])  # a scalar where a list goes
    if base is bool:
        return st.one_of(st.integers(2, 99).map(str), WORDS)
    if base in (int, float):
        wrong = [WORDS]
        if base is int:
            wrong.append(st.floats(0.1, 99.9).filter(lambda x: not x.is_integer()).map(repr))
        if bounds.get("ge") is not None:
            wrong.append(st.integers(-(10**6), math.ceil(bounds["ge"]) - 1).map(str))
        if bounds.get("gt") is not None:
            wrong.append(st.integers(-(10**6), math.floor(bounds["gt"])).map(str))
        if bounds.get("lt") is not None:
            low = math.ceil(bounds["lt"])
            wrong.append(st.integers(low, low + 10**6).map(str))
        if bounds.get("le") is not None:
            low = math.floor(bounds["le"]) + 1
            wrong.append(st.integers(low, low + 10**6).map(str))
        return st.one_of(*wrong)
    if bounds.get("choices"):
        return WORDS.filter(lambda w: w not in bounds["choices"])
    return st.just("")  # a string that must not be empty


@st.composite
def wrong_value(draw) -> tuple[str, str]:
    key, hint, bounds = draw(st.sampled_from(LEAVES))
    return key, draw(invalid(hint, bounds))


def test_the_property_covers_the_typed_keys():
    keys = {key for key, _, _ in LEAVES}
    assert len(keys) >= 40, sorted(keys)
    assert {"optim.lr", "seed", "trainer.max_steps", "loss.normalize", "data.crop_size"} <= keys


# Derandomized: the suite draws the same 15 values each run (CI stays reproducible); run
# with --hypothesis-seed=<n> and a larger max_examples to explore further.
@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(wrong=wrong_value())
def test_any_invalid_value_of_a_typed_key_is_named_and_nothing_is_written(
    wrong, earlier, monkeypatch, capfd
):
    key, value = wrong
    place = Place(earlier.root)  # shared: nothing may change it
    monkeypatch.chdir(place.root)
    monkeypatch.setenv("WANDB_MODE", "offline")
    before = snapshot(place.root / "outputs")
    case = Case("property", "config", "train", lambda p: [f"{key}={value}"], [])
    status = run_entry("train", entry_args(case, place), monkeypatch)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert status == 2, (key, value, err[-2000:])
    assert len(lines) == 1 and key in lines[0], (key, value, lines)
    assert "Traceback" not in err
    after = snapshot(place.root / "outputs")
    assert sorted(after) == sorted(before)  # no new file
    for name, data in before.items():
        assert after[name].startswith(data) if name.endswith(".log") else after[name] == data
