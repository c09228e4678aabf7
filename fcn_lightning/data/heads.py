"""`data.heads`: the labellings a dataset scores, each one output head of the model.

`null` (the default) is one head of `data.num_classes` named by `data.classes`. A list of
`{name, num_classes[, classes]}` (SIFT Flow: `sem` 33 `siftflow`, `geo` 3 `siftflow_geo`)
makes each item's label K x H x W in list order; its first head is the one `data.num_classes`
and `data.classes` describe, so they must agree. A head's name becomes a suffix of its
layers' names (`score_fr_sem`), so it is a lower-case identifier.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from fcn_lightning.errors import ConfigError

NAME = re.compile(r"[a-z][a-z0-9]*\Z")


def check_heads(
    heads: Sequence[Mapping[str, Any]] | None, num_classes: int, classes: str, ignore_index: int
) -> list[dict[str, Any]] | None:
    """`heads` as plain dicts {name, num_classes, classes} (classes None: not named), checked."""
    if heads is None:
        return None
    if isinstance(heads, (str, Mapping)) or not isinstance(heads, Sequence) or not heads:
        raise ConfigError(
            f"data.heads={heads!r}: give null (one head) or a list of {{name, num_classes"
            "[, classes]}}, e.g. [{name: sem, num_classes: 33}, {name: geo, num_classes: 3}]"
        )
    checked: list[dict[str, Any]] = []
    for k, head in enumerate(heads):
        key = f"data.heads[{k}]"
        if not isinstance(head, Mapping) or {"name", "num_classes"} - set(head):
            raise ConfigError(f"{key}={head!r}: give name and num_classes (and classes)")
        unknown = sorted(set(head) - {"name", "num_classes", "classes"})
        if unknown:
            raise ConfigError(f"{key}: unknown key(s) {unknown}: use name, num_classes, classes")
        name, count = head["name"], head["num_classes"]
        if not isinstance(name, str) or not NAME.match(name):
            raise ConfigError(
                f"{key}.name={name!r}: a lower-case identifier (it suffixes the head's layer "
                "names, e.g. score_fr_sem)"
            )
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count < ignore_index:
            raise ConfigError(
                f"{key}.num_classes={count!r} must be an int between 1 and data.ignore_index - 1 "
                f"({ignore_index - 1})"
            )
        if name in (h["name"] for h in checked):
            raise ConfigError(f"{key}.name={name!r}: another head has this name")
        head_classes = head.get("classes")
        checked.append({"name": name, "num_classes": count, "classes": head_classes})
    first = checked[0]
    if first["num_classes"] != num_classes:
        raise ConfigError(
            f"data.heads[0].num_classes={first['num_classes']} but data.num_classes="
            f"{num_classes}: the first head is the one data.num_classes describes"
        )
    if first["classes"] not in (None, classes):
        raise ConfigError(
            f"data.heads[0].classes={first['classes']!r} but data.classes={classes!r}: the "
            "first head is the one data.classes names"
        )
    first["classes"] = classes
    return checked
