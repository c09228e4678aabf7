"""The command line's overrides checked before Hydra composes the config.

Hydra refuses an unknown preset (``model=fcn9s``), a key that is not there
(``model.widht=0.5``) or an override it cannot parse in a multi-line message with exit
status 1, which this project's exit statuses reserve for bugs. `fcn_main` composes the
config once with the same overrides first; when that fails, the problem is said in one
``error:`` line that names the override, the nearest valid choice and the fix, and the
command exits 2 before Hydra creates a run directory. When the trial composition passes,
Hydra runs as it always does. A sweep (``model=fcn8s,fcn16s``) is checked value by value.
"""

from __future__ import annotations

import difflib
import functools
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fcn_lightning.run.boundary import USER_ERROR_STATUS, one_line
from fcn_lightning.run.config import CONF_DIR

PREFIX = {"ADD": "+", "FORCE_ADD": "++", "DEL": "~", "CHANGE": ""}
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def fcn_main(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[..., Any]]:
    """``@hydra.main`` for ``conf/<config_name>.yaml``, with the overrides checked first."""
    import hydra

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[..., Any]:
        hydra_main = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)
        run = hydra_main(task)

        @functools.wraps(task)
        def main(cfg_passthrough: DictConfig | None = None) -> Any:
            if cfg_passthrough is None:
                problem = override_problem(sys.argv[1:], config_name)
                if problem is not None:
                    print(f"error: {problem}", file=sys.stderr)
                    sys.exit(USER_ERROR_STATUS)
            return run(cfg_passthrough)

        return main

    return decorate


def override_problem(argv: list[str], config_name: str) -> str | None:
    """One line on why Hydra would refuse ``argv``'s overrides, or None (also when the
    command is one this check does not model: another config dir, --help, --info)."""
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return None  # argparse's own usage message stands
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return None
    if args.config_path or args.config_dir or args.config_name or args.experimental_rerun:
        return None
    parsed = []
    for text in args.overrides:
        override, problem = _parse(text)
        if problem is not None:
            return problem
        parsed.append(override)
    for overrides in _trials(parsed):
        problem = _composition_problem(overrides, config_name)
        if problem is not None:
            return problem
    return None


def _parse(text: str) -> tuple[Any, str | None]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_override(text), None
    except HydraException as error:
        why = one_line(str(error).split("See https://")[0])
        return None, (
            f"{text}: Hydra cannot read this override ({why}); write key=value, quote a "
            f"value with special characters (key='a b'), see {GRAMMAR}"
        )


def _trials(parsed: list[Any]) -> Iterator[list[str]]:
    """The override lists to compose: every sweep at its first value, then each other
    value of each sweep of a config group in turn (a sweep Hydra cannot list, e.g.
    Optuna's interval(), is left to its sweeper). A key's sweep (``seed=range(0,200)``)
    is composed at its first value only: whether the key exists does not depend on the
    value, and each composition costs about half a second before the run starts."""
    base: list[str] = []
    sweeps: list[tuple[int, list[str]]] = []
    for override in parsed:
        if not override.is_sweep_override():
            base.append(override.input_line)
            continue
        try:
            values = list(override.sweep_string_iterator())
        except Exception:
            continue
        if not values:
            continue
        key = f"{PREFIX[override.type.name]}{override.get_key_element()}="
        base.append(key + values[0])
        if _is_group(override.get_key_element()):
            sweeps.append((len(base) - 1, [key + value for value in values]))
    yield base
    for index, options in sweeps:
        for option in options[1:]:
            yield [*base[:index], option, *base[index + 1 :]]


def _is_group(key: str) -> bool:
    """Whether ``key`` names a config group (``model``, ``hydra/launcher``), whose every
    value is a preset file to find, rather than a config key."""
    group = key.split("@", 1)[0]
    return "/" in group or (Path(CONF_DIR) / group).is_dir()


def _composition_problem(overrides: list[str], config_name: str) -> str | None:
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            compose(config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as error:
        return _missing_preset(error, overrides)
    except ConfigCompositionException as error:
        cause = error.__cause__  # "Key 'widht' is not in struct" is said by OmegaConf
        return _bad_override(f"{error} {cause or ''}", overrides, config_name)
    except Exception:
        return None
    return None


def _missing_preset(error: Any, overrides: list[str]) -> str:
    """``model=fcn9s`` -> its group's presets, the nearest first."""
    missing = str(error.missing_cfg_file or "")
    group, _, name = missing.rpartition("/")
    options = sorted(str(o) for o in (error.options or ()))
    # The override that named it (a later data=... overrides an earlier one).
    given = next((o for o in overrides if o.lstrip("+~") == f"{group}={name}"), None)
    what = (given or f"{group}={name}") if group else missing
    if not options:
        first = one_line(str(error)).split(" Config search path")[0]
        return f"{what}: {first}"
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    nearest = f" (nearest: {group}={close[0]})" if close else ""
    return f"{what}: no such {group} preset{nearest}; choose one of {', '.join(options)}"


def _bad_override(message: str, overrides: list[str], config_name: str) -> str:
    """A key that is not there (to change or delete), or a + on a group already chosen."""
    text = one_line(message)
    key = _quoted_key(message)
    given = next((o for o in overrides if o.lstrip("+~").split("=")[0] == key), None)
    if key and text.startswith(("Could not override", "Could not delete")):
        rest = [o for o in overrides if o != given]
        nearest = _nearest_key(key, given, rest, config_name)
        sweeper = "hydra.sweeper.params."
        if nearest == key and key.startswith(sweeper) and given and "=" in given:
            # The sweeper's params are keyed by whole dotted names ("optim.lr"), which a
            # dotted override path cannot reach; Optuna takes the same from the command line.
            param, value = key[len(sweeper) :], given.split("=", 1)[1]
            if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]  # quoted, it was a string; unquoted, it is the sweep
            return (
                f"{given}: the sweeper's params hold {param} as one key, which an override "
                f"cannot reach; give the search space on the command line: "
                f"{shlex.quote(f'{param}={value}')}"
            )
        near = f" (nearest: {nearest})" if nearest and nearest != key else ""
        if text.startswith("Could not delete"):
            return f"{given or '~' + key}: there is no key {key} to delete{near}"
        return (
            f"{given or key}: no such key {key}{near}; to add a new key on purpose, write "
            f"+{given or key}"
        )
    if text.startswith("Multiple values for"):
        group = text.split("Multiple values for ", 1)[1].split(".")[0]
        given = next((o for o in overrides if o.startswith(f"+{group}=")), f"+{group}=...")
        return (
            f"{given}: {group} already has a preset (a + adds what is not there); "
            f"choose another with {given[1:]}"
        )
    return f"the command line's overrides cannot be applied: {text}"


def _quoted_key(message: str) -> str | None:
    """The key a Hydra composition message names between its first pair of quotes."""
    parts = message.split("'")
    return parts[1] if len(parts) > 2 else None


def _nearest_key(key: str, given: str | None, others: list[str], config_name: str) -> str | None:
    """The valid key (or config group) nearest to ``key``, composed without ``given``."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name, overrides=others, return_hydra_config=True)
    except Exception:
        return None
    keys = list(_leaf_keys(OmegaConf.to_container(cfg, resolve=False)))
    groups = [p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name not in keys]
    close = difflib.get_close_matches(key, [*keys, *groups], n=1, cutoff=0.6)
    if not close:
        return None
    if close[0] in groups:  # a group this config leaves out (eval's data: null)
        value = given.split("=", 1)[1] if given and "=" in given else ""
        return f"{close[0]}={value or '<preset>'}"
    return close[0]


def _leaf_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            path = f"{prefix}{name}"
            yield path
            yield from _leaf_keys(value, path + ".")
