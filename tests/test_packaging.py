"""The installable package: the wheel carries the config tree (and not the recorded results),
its console commands run a quick start from any folder, a user's config folders join the
search path (``hydra.searchpath`` and ``FCN_CONFIG_PATH``), and tab completion completes."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from fcn_lightning.run.config import CONF_DIR
from tests.train_helpers import CONF, ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ENV = "FCN_CONFIG_PATH"
EXPERIMENTS = ROOT / "experiments"
# Top-level entries of the checkout that a wheel is never built from.
NOT_SOURCES = {".git", ".venv", "data", "logs", "outputs", "multirun", "wandb", "build", "dist"}
# A user's preset in their own folder: the shipped quick start, smaller.
USER_EXPERIMENT = """\
# @package _global_
defaults:
  - quickstart
run_name: my_exp
model:
  width: 0.0625
data:
  synthetic:
    image_size: 48
"""


def user_config_folder(root: Path) -> Path:
    folder = root / "my_configs"
    (folder / "experiment").mkdir(parents=True, exist_ok=True)
    (folder / "experiment" / "my_exp.yaml").write_text(USER_EXPERIMENT)
    return folder


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


# --- the checkout: config location, package list, search path --------------------------------


def test_checkout_reads_the_repos_config_tree():
    assert Path(CONF_DIR) == ROOT / "conf"


def test_pyproject_lists_every_package_and_config_group():
    """Packages are listed by hand (the config tree is mapped into the wheel); a new one
    that is not listed would be missing from the wheel."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    code = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for top in ("fcn_lightning", "hydra_plugins")
        for path in (ROOT / top).rglob("*.py")
    } - {"hydra_plugins"}  # a namespace shared with other plugins: only our subpackage
    groups = {
        ".".join(("fcn_lightning.conf", *path.parent.relative_to(CONF).parts))
        for path in CONF.rglob("*.yaml")  # rglob does not follow conf/experiment (a symlink)
    }
    missing = sorted((code | groups | {"fcn_lightning.conf.experiment"}) - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert setuptools["package-dir"] == {
        "fcn_lightning.conf": "conf",
        "fcn_lightning.conf.experiment": "experiments",
    }


def test_hydra_searchpath_adds_a_users_experiment(tmp_path):
    folder = user_config_folder(tmp_path)
    cfg = compose_train(f"hydra.searchpath=[file://{folder}]", "experiment=my_exp")
    assert cfg.run_name == "my_exp"
    assert cfg.model.width == 0.0625
    assert cfg.data.name == "synthetic"  # from the shipped quickstart it builds on


def test_fcn_config_path_adds_a_users_experiment(tmp_path, monkeypatch):
    folder = user_config_folder(tmp_path)
    other = tmp_path / "team"
    other.mkdir()
    # Several folders, an empty entry (a trailing colon) skipped.
    monkeypatch.setenv(ENV, os.pathsep.join([str(other), str(folder), ""]))
    cfg = compose_train("experiment=my_exp")
    assert cfg.run_name == "my_exp"
    assert cfg.model.width == 0.0625


def test_fcn_config_path_folder_options_are_completed(tmp_path, monkeypatch):
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.bash_completion import BashCompletion
    from hydra._internal.utils import create_config_search_path

    monkeypatch.setenv(ENV, str(user_config_folder(tmp_path)))
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(CONF_DIR))
    options = BashCompletion(loader)._query(config_name="train", line="experiment=")
    assert {"experiment=my_exp", "experiment=quickstart"} <= set(options)


@pytest.mark.parametrize("problem", ["does not exist", "is not a folder"])
def test_fcn_config_path_that_is_no_folder_ends_in_one_error_line(
    problem, tmp_path, monkeypatch, capsys
):
    from fcn_lightning.train import main

    bad = tmp_path.resolve() / "missing"
    if problem == "is not a folder":
        bad.write_text("")
    monkeypatch.setenv(ENV, f"{tmp_path}{os.pathsep}{bad}")
    monkeypatch.setattr(sys, "argv", ["fcn-train", "--cfg", "job"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"error: {ENV}: {bad} {problem} (the variable lists config folders, "
        f"separated by '{os.pathsep}')"
    ]
    assert captured.out == ""


def test_fcn_config_path_leaves_other_hydra_apps_alone(tmp_path, monkeypatch):
    """Hydra loads the plugin for every app in the environment; only ours use the folders."""
    app = tmp_path / "other_app"
    app.mkdir()
    (app / "config.yaml").write_text("x: 1\n")
    monkeypatch.setenv(ENV, str(tmp_path / "missing"))
    with initialize_config_dir(config_dir=str(app), version_base="1.3"):
        assert compose("config").x == 1


# --- the wheel, installed in a fresh environment ----------------------------------------------


def _copy_sources(dest: Path) -> Path:
    """The checkout without its environment, data, runs and build leftovers: the wheel is
    built from a copy, so nothing (build/, *.egg-info) is written into the shared checkout
    and two test runs never build in the same folder."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == ROOT
        return {
            name
            for name in names
            if (top and name in NOT_SOURCES)
            or name in {"__pycache__", ".pytest_cache", ".ruff_cache"}
            or name.endswith(".egg-info")
        }

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(command)}:\n{result.stdout[-3000:]}\n" + (result.stderr[-3000:])
    )
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline from a copy of the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = _copy_sources(root / "source")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(root / "dist"), str(source)],
        env=env,
    )  # fmt: skip
    (path,) = (root / "dist").glob("fcn_lightning-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict[str, str]:
    """A fresh venv holding the wheel, its dependencies borrowed from this environment;
    returns the environment variables a user's shell would have (its bin/ first on PATH)."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    # A directory named in a .pth joins sys.path, but .pth files inside it are not read: this
    # environment's editable install (its __editable__ finder) cannot shadow the wheel.
    (Path(purelib.stdout.strip()) / "fcn_dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "VIRTUAL_ENV", ENV, "FCN_DATA_DIR"}
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONNOUSERSITE="1",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
    )
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
          "--ignore-installed", str(wheel)], env=env)  # fmt: skip
    where = _run(
        [str(python), "-c", "import fcn_lightning, hydra_plugins.fcn_lightning_searchpath as p; "
         "from fcn_lightning.run.config import CONF_DIR; "
         "print(fcn_lightning.__file__, p.__file__, CONF_DIR, sep='\\n')"],
        env=env, cwd=venv,
    )  # fmt: skip
    for path in where.stdout.split():
        assert Path(path).resolve().is_relative_to(venv.resolve()), where.stdout
    return env


@pytest.mark.slow
def test_wheel_holds_the_config_tree_and_not_the_results(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"fcn_lightning/conf/{path.relative_to(CONF).as_posix()}" for path in CONF.rglob("*.yaml")
    } | {f"fcn_lightning/conf/experiment/{path.name}" for path in EXPERIMENTS.glob("*.yaml")}
    assert "fcn_lightning/conf/train.yaml" in expected
    assert "fcn_lightning/conf/experiment/quickstart.yaml" in expected
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    conf = {name for name in names if name.startswith("fcn_lightning/conf/")}
    assert conf == expected, f"not configs: {sorted(conf - expected)}"  # no results, no README
    code = {
        path.relative_to(ROOT).as_posix()
        for top in ("fcn_lightning", "hydra_plugins")
        for path in (ROOT / top).rglob("*.py")
    }
    assert not code - names, f"missing from the wheel: {sorted(code - names)}"
    assert "fcn_lightning/resources/pascal/classes.txt" in names
    scripts = zipfile.ZipFile(wheel).read(
        next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    )
    for command in (
        "train",
        "eval",
        "predict",
        "export",
        "report",
        "verify-data",
        "convert-caffe",
        "zoo",
        "hha",
    ):
        assert f"fcn-{command} = ".encode() in scripts


@pytest.mark.slow
def test_installed_commands_run_a_quick_start_from_another_folder(installed, tmp_path):
    """fcn-train (a user's experiment from FCN_CONFIG_PATH, built on the shipped quick start),
    then fcn-eval, fcn-predict and fcn-export on its checkpoint, all run outside the repo."""
    env = {**installed, ENV: str(user_config_folder(tmp_path))}
    data, run = tmp_path / "data", tmp_path / "run"
    _run(
        ["fcn-train", "experiment=my_exp", "trainer.max_steps=4", "trainer.val_check_interval=2",
         "data.synthetic.num_train=8", "data.synthetic.num_val=4", "data.num_workers=0",
         "logger=csv", f"paths.data_dir={data}", f"hydra.run.dir={run}"],
        env=env, cwd=tmp_path,
    )  # fmt: skip
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    assert "run_name: my_exp\n" in (run / "config_resolved.yaml").read_text()

    _run(["fcn-eval", f"ckpt_path={checkpoint}", "num_workers=0",
          f"hydra.run.dir={tmp_path / 'eval'}"], env=env, cwd=tmp_path)  # fmt: skip
    assert (tmp_path / "eval" / "metrics.json").is_file()

    image = min((data / "synthetic" / "JPEGImages").iterdir())
    _run(["fcn-predict", f"ckpt_path={checkpoint}", f"inputs={image}",
          f"hydra.run.dir={tmp_path / 'predict'}"], env=env, cwd=tmp_path)  # fmt: skip
    assert (tmp_path / "predict" / "predictions" / f"{image.stem}.png").is_file()

    exported = tmp_path / "model.pt"
    _run(["fcn-export", f"ckpt_path={checkpoint}", "format=torchscript", f"out={exported}",
          "example_size=[48,48]", f"hydra.run.dir={tmp_path / 'export'}"],
         env=env, cwd=tmp_path)  # fmt: skip
    assert exported.is_file()
    assert exported.with_name("model.pt.json").is_file()


@pytest.mark.slow
def test_installed_command_tab_completes_config_options(installed, tmp_path):
    """The line Hydra prints for `fcn-train -sc install=bash`, run as bash runs it on <Tab>."""
    script = """
        eval "$(fcn-train -sc install=bash)"
        complete -p fcn-train
        COMP_LINE="fcn-train model=fcn"
        COMP_POINT=${#COMP_LINE}
        COMP_CWORD=1
        hydra_bash_completion
        printf '%s\\n' "${COMPREPLY[@]}"
    """
    result = _run(["bash", "-c", script], env=installed, cwd=tmp_path)
    rule, *options = result.stdout.splitlines()
    assert "-F hydra_bash_completion" in rule and rule.endswith(" fcn-train")
    assert {"model=fcn32s", "model=fcn16s", "model=fcn8s"} <= set(options)
    assert all(option.startswith("model=fcn") for option in options)
