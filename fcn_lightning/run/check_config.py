"""Check a composed config against its typed schema (`fcn_lightning.run.schema`) before
anything is written or fetched, and report every problem at once in one line.

Each problem names the dotted key, the value given and what it may be; an unknown key
(``+optim.momentun=0.5``) names the nearest valid one. Values are checked as given, not
converted: ``trainer.max_steps=1e3`` is a float where an integer is due, and is refused
with the integer to type instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from functools import cache
from typing import Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from fcn_lightning.errors import ConfigError
from fcn_lightning.run import schema
from fcn_lightning.run.schema import OPTIONAL, SCHEMAS
from fcn_lightning.run.task_rules import TASK_RULES

MISSING = object()  # a ``???`` value
BROKEN = object()  # a value whose interpolation failed (its problem is already listed)
LIMIT = 8  # problems shown; the rest are counted


def check_config(cfg: DictConfig, task: str) -> None:
    """Raise one `ConfigError` listing every problem of ``cfg`` for entry point ``task``."""
    problems: list[str] = []
    values = _resolve(cfg, "", problems)
    problems += [_explain(p, values) for p in _check_dataclass(values, SCHEMAS[task], "")]
    for group in ("logger", "callbacks"):
        if not problems and isinstance(values.get(group), dict):
            problems += _check_targets(values[group], group)
    if not problems:
        problems += [p for rule in TASK_RULES.get(task, ()) if (p := rule(values))]
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        shown = "; ".join(f"({n}) {p}" for n, p in enumerate(problems[:LIMIT], 1))
        more = f"; and {len(problems) - LIMIT} more" if len(problems) > LIMIT else ""
        raise ConfigError(f"{len(problems)} config problems: {shown}{more}")


# -- resolving ---------------------------------------------------------------------------


def _resolve(node: Any, prefix: str, problems: list[str]) -> Any:
    """``node`` as plain values, each interpolation resolved on its own so that one broken
    value is reported by its key and the others are still checked."""
    if isinstance(node, DictConfig):
        if node._is_none():
            return None
        items = [(str(key), key) for key in node]
    elif isinstance(node, ListConfig):
        if node._is_none():
            return None
        items = [(f"[{i}]", i) for i in range(len(node))]
    else:
        return node
    out: dict[str, Any] | list[Any] = {} if isinstance(node, DictConfig) else []
    for name, key in items:
        full = f"{prefix}.{name}" if prefix and not name.startswith("[") else prefix + name
        if OmegaConf.is_missing(node, key):
            value: Any = MISSING
        else:
            try:
                value = _resolve(node[key], full, problems)
            except Exception as err:  # an interpolation or resolver that failed
                reason = _reason(err)
                # A key interpolated from a broken one fails with its reason: said once.
                if not any(p.endswith(f": {reason}") for p in problems):
                    problems.append(f"{full}: {reason}")
                value = BROKEN
        if isinstance(out, dict):
            out[name] = value
        else:
            out.append(value)
    return out


def _reason(err: Exception) -> str:
    cause = err.__cause__ or err
    message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return message.removeprefix("error: ")


# -- checking ------------------------------------------------------------------------------


def _check_dataclass(values: Any, cls: type, key: str, partial: bool = False) -> list[str]:
    if not isinstance(values, dict):
        return [f"{_show(key, values)}: expected a group of keys ({_names(cls)})"]
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = []
    for name, value in values.items():
        full = f"{key}.{name}" if key else name
        if name not in fields:
            if not _open_key(cls, name):
                valid = list(dict.fromkeys([*fields, *_extra_names(cls)]))
                problems.append(_unknown(full, name, valid, list(fields)))
            continue
        problems += _check(value, hints[name], fields[name].metadata, full)
    for name, spec_field in fields.items():
        if name not in values and spec_field.default is not OPTIONAL and not partial:
            full = f"{key}.{name}" if key else name
            problems.append(f"{full} is missing: set {full}=<{_what(hints[name])}>")
    return problems


def _check(value: Any, hint: Any, bounds: dict, key: str) -> list[str]:
    if value is BROKEN:
        return []
    if value is MISSING:
        return [f"{key} is required: give {key}=<{_what(hint)}>"]
    if hint is Any:
        return []
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return []
        options = [a for a in args if a is not type(None)]
        for option in options:  # the first type the value has decides
            if _is_type(value, option):
                return _check(value, option, bounds, key)
        return [f"{_show(key, value)}: expected {_what(hint)}"]
    if value is None:
        return [f"{_show(key, value)}: must be set (expected {_what(hint)})"]
    if dataclasses.is_dataclass(hint):
        return _check_dataclass(value, hint, key, partial=bounds.get("partial", False))
    if not _is_type(value, hint):
        return [f"{_show(key, value)}: expected {_what(hint)}{_hint_fix(key, value, hint)}"]
    if origin is list:
        return _check_list(value, args[0], bounds, key)
    if origin is dict:
        return [p for k, v in value.items() for p in _check(v, args[1], bounds, f"{key}.{k}")]
    return _check_bounds(value, bounds, key)


def _check_list(value: list, item: Any, bounds: dict, key: str) -> list[str]:
    if bounds.get("length") and len(value) != bounds["length"]:
        return [f"{_show(key, value)}: expected {bounds['length']} values, got {len(value)}"]
    if bounds.get("nonempty") and not value:
        return [f"{key}=[]: give at least one value"]
    item_bounds = {k: v for k, v in bounds.items() if k not in ("length", "nonempty")}
    return [p for i, v in enumerate(value) for p in _check(v, item, item_bounds, f"{key}[{i}]")]


def _check_bounds(value: Any, bounds: dict, key: str) -> list[str]:
    choices = bounds.get("choices")
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        near = f" (did you mean {close[0]}?)" if close else ""
        return [f"{_show(key, value)}: choose one of {list(choices)}{near}"]
    if bounds.get("nonempty") and isinstance(value, str) and not value.strip():
        return [f"{key} is empty: give a value, or null where that is allowed"]
    pattern, _, words = str(bounds.get("pattern", "")).rpartition("|")
    if pattern and isinstance(value, str) and not re.fullmatch(pattern, value.replace(" ", "")):
        return [f"{_show(key, value)}: expected {words}"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{_show(key, value)}: must be a finite number"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for name, ok, words in (
            ("ge", lambda b: value >= b, "at least"),
            ("gt", lambda b: value > b, "greater than"),
            ("le", lambda b: value <= b, "at most"),
            ("lt", lambda b: value < b, "less than"),
        ):
            bound = bounds.get(name)
            if bound is not None and not ok(bound):
                return [f"{_show(key, value)}: must be {words} {_number(bound)}"]
    return []


def _is_type(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    if hint is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, origin)


# -- open groups: Lightning's Trainer, logger and callback nodes ----------------------------


def _open_key(cls: type, name: str) -> bool:
    return cls is schema.Trainer and name in _trainer_arguments()


def _extra_names(cls: type) -> list[str]:
    return sorted(_trainer_arguments()) if cls is schema.Trainer else []


@cache
def _trainer_arguments() -> frozenset[str]:
    import pytorch_lightning as pl

    return frozenset(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}


def _check_targets(nodes: dict, group: str) -> list[str]:
    """Each ``logger.<name>`` / ``callbacks.<name>``: a ``_target_`` that imports, and
    keys its constructor takes, plain-typed ones of their type."""
    from hydra._internal.utils import _locate

    problems = []
    for name, node in nodes.items():
        key = f"{group}.{name}"
        if node is None:
            continue  # switched off
        if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
            problems.append(f"{key}: give its class as {key}._target_=<module.Class>, or null")
            continue
        try:
            target = _locate(node["_target_"])
        except Exception as err:
            problems.append(
                f"{key}._target_={node['_target_']!r}: cannot be imported ({_reason(err)})"
            )
            continue
        problems += _check_arguments(node, target, key)
    return problems


def _check_arguments(node: dict, target: Any, key: str) -> list[str]:
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        names = None  # takes any keyword
    else:
        names = list(parameters)
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:
        hints = {}
    problems = []
    for arg, value in node.items():
        if arg.startswith("_") and arg.endswith("_"):
            continue  # _target_, _partial_, ...
        if names is not None and arg not in names:
            problems.append(_unknown(f"{key}.{arg}", arg, names, names))
            continue
        hint = _plain(hints.get(arg))
        if hint is not None and not (value is None and _optional(hints[arg])):
            problems += _check(value, hint, {}, f"{key}.{arg}")
    return problems


def _plain(hint: Any) -> Any:
    """``hint`` if it is bool, int, float or str (or Optional of one), else None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    return hint if hint in (bool, int, float, str) else None


def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


# -- words ---------------------------------------------------------------------------------


def _unknown(full: str, name: str, valid: list[str], own: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    parent = full.rpartition(".")[0]
    if close:
        nearest = f"{parent}.{close[0]}" if parent else close[0]
        return f"unknown key {full}: did you mean {nearest}?"
    where = f"under {parent}" if parent else "at the top level"
    others = " (or any pytorch_lightning.Trainer argument)" if len(valid) > len(own) else ""
    return f"unknown key {full}: the keys {where} are {sorted(own)}{others}"


def _explain(problem: str, values: dict) -> str:
    """A problem whose cause is elsewhere, said with its cause."""
    recipe, model = values.get("recipe"), values.get("model")
    if (
        problem.startswith("optim.lr=null")
        and isinstance(recipe, dict)
        and model
        and recipe.get("paper_lr") is None
    ):
        return (
            f"optim.lr: the recipe has no learning rate for model.backbone="
            f"{model.get('backbone')} model.variant={model.get('variant')}: set "
            f"optim.lr=<number> or add recipe.lr.{model.get('variant')}"
        )
    return problem


def _show(key: str, value: Any) -> str:
    """``key=value`` as the user would type it (null, true, 'text')."""
    if value is None or isinstance(value, bool):
        return f"{key}={'null' if value is None else str(value).lower()}"
    return f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"


def _number(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def _what(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        words = [_what(a) for a in args if a is not type(None)]
        return " or ".join(words) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"a list of {_what(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping"
    if origin is Literal:
        return f"one of {list(args)}"
    if dataclasses.is_dataclass(hint):
        return f"a group of keys ({_names(hint)})"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            Any: "a value"}.get(hint, str(hint))  # fmt: skip


def _hint_fix(key: str, value: Any, hint: Any) -> str:
    """How to type what the user probably meant."""
    if hint is int and isinstance(value, float) and value.is_integer():
        return f", e.g. {key}={int(value)}"
    if hint is bool and str(value).lower() in ("yes", "no", "on", "off", "1", "0", "y", "n"):
        truthy = str(value).lower() in ("yes", "on", "1", "y")
        return f", e.g. {key}={'true' if truthy else 'false'}"
    return ""


def _names(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(schema))
