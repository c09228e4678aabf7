"""Several output heads on one net (SIFT Flow's semantic and geometric labels): how the
one score tensor and the one label tensor of a batch split into one part per head.

The contract (docs/training.md): the model's output is ``B x sum(num_classes) x H x W``,
the heads' scores concatenated in head order; with one head a batch's labels are
``B x H x W``, with K >= 2 heads ``B x K x H x W`` (heads in order, 255 = ignore in every
head). A model names its heads as a tuple of ``(name, num_classes)``; one head is
``(("", num_classes),)``. The first head is the one every single-head name keeps
(``val/mean_iu``, the checkpoint monitor, ``class_names``); a further head ``geo`` logs as
``val/geo/<score>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor

from fcn_lightning.errors import ConfigError
from fcn_lightning.models.fcn import split_heads

Heads = tuple[tuple[str, int], ...]


def head_spec(heads: Iterable[Mapping[str, Any]] | None, num_classes: int) -> Heads:
    """``model.heads`` / ``data.heads`` (None: one head of ``num_classes``) as a `Heads`."""
    if heads is None:
        return (("", int(num_classes)),)
    spec = tuple((str(head["name"]), int(head["num_classes"])) for head in heads)
    if not spec:
        raise ConfigError("heads=[]: name at least one head, or set it to null for one head")
    return spec


def model_heads(model: Any) -> Heads:
    """The heads a model declares (``model.heads``); one head of ``model.num_classes`` for a
    model that declares none."""
    heads = getattr(model, "heads", None)
    return tuple(heads) if heads else (("", int(model.num_classes)),)


def split_scores(scores: Tensor, heads: Heads) -> list[Tensor]:
    """``B x sum(C_k) x H x W`` -> one ``B x C_k x H x W`` view per head (the model's own
    split, `models.fcn.split_heads`)."""
    return list(split_heads(scores, heads))


def split_labels(labels: Tensor, heads: Heads) -> list[Tensor]:
    """One head: ``[labels]`` (``B x H x W``); K heads: the K planes of ``B x K x H x W``."""
    if len(heads) == 1:
        return [labels]
    if labels.dim() != 4 or labels.shape[1] != len(heads):
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} for the {len(heads)} heads "
            f"{[name for name, _ in heads]}: expected B x {len(heads)} x H x W"
        )
    return list(labels.unbind(1))


def first_head(scores: Tensor, labels: Tensor, heads: Heads) -> tuple[Tensor, Tensor]:
    """The first head's scores and labels: what every single-head output shows."""
    return split_scores(scores, heads)[0], split_labels(labels, heads)[0]


def log_prefix(heads: Heads, index: int) -> str:
    """The part of a logged name that says the head: "" for the first, ``<name>/`` else."""
    return "" if index == 0 else f"{heads[index][0]}/"


def same_heads(a: Sequence[tuple[str, int]], b: Sequence[tuple[str, int]]) -> bool:
    return [tuple(h) for h in a] == [tuple(h) for h in b]


def describe(heads: Heads) -> str:
    """``sem (33), geo (3)``; one head: ``one head (21)``."""
    if len(heads) == 1:
        return f"one head ({heads[0][1]} classes)"
    return ", ".join(f"{name} ({classes})" for name, classes in heads)
