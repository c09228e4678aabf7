"""OmegaConf resolvers the configs use; imported by every entry point before Hydra runs."""

from __future__ import annotations

import os
import secrets

from omegaconf import MissingMandatoryValue, OmegaConf

from fcn_lightning.run import slurm  # noqa: F401  (registers ${slurm_tasks:} for the SLURM presets)


def register_resolvers() -> None:
    if OmegaConf.has_resolver("uid"):
        return
    # Cached: one value per process, so every use within a run agrees.
    OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True)
    OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))
    OmegaConf.register_new_resolver("div_ceil", lambda a, b: -(-int(a) // int(b)))
    # A fixed fraction of a recipe's length, e.g. the CPU mini-paper's 1.5% of the paper's.
    OmegaConf.register_new_resolver("scale_steps", lambda n, f: max(1, round(int(n) * float(f))))
    OmegaConf.register_new_resolver("gpu_count", _gpu_count)
    OmegaConf.register_new_resolver("backbone_default", _backbone_default)
    OmegaConf.register_new_resolver("recipe_entry", recipe_entry)
    OmegaConf.register_new_resolver("stages_before", stages_before)
    OmegaConf.register_new_resolver("class_count", _class_count)
    OmegaConf.register_new_resolver("root_file", root_file)
    OmegaConf.register_new_resolver("dataset_norm", _dataset_norm)


# The staged chain of the paper: each net starts from the one before it.
STAGED_CHAIN = ("fcn32s", "fcn16s", "fcn8s")


def recipe_entry(table, backbone: str, variant: str, dataset: str = ""):
    """A recipe table's value for this model on this dataset (recipe.paper_lr,
    recipe.paper_steps): the first of ``<dataset>/<variant>``, ``<backbone>/<variant>``,
    ``<variant>``, ``<dataset>/default`` and ``default`` that the table has (the other
    benchmarks' solvers differ from VOC's: docs/paper.md section 3); None for a variant the
    table does not know, which the model builder then refuses by name."""
    keys = (f"{dataset}/{variant}", f"{backbone}/{variant}", variant, f"{dataset}/default")
    for key in (*keys, "default"):
        if key in table:
            return table[key]
    return None


def stages_before(variant: str, staged: bool) -> list[str] | None:
    """model.init_stages under recipe=staged: the coarser nets of the chain, in order."""
    if not staged or variant not in STAGED_CHAIN:
        return None
    return list(STAGED_CHAIN[: STAGED_CHAIN.index(variant)]) or None


def _backbone_default(backbone: str, key: str) -> str:
    """model.geometry / model.weights when the config leaves them to the backbone."""
    from fcn_lightning.models.build import backbone_default

    return backbone_default(backbone, key)


def root_file(name: str, *, _parent_) -> str:
    """data=folder's ``<data.root>/<name>``; just ``name`` while data.root is unset, so the
    config check says "data.root is required" once, not once per key built from it."""
    try:
        root = _parent_.root
    except MissingMandatoryValue:
        return name
    # Absolute: eval and predict read the checkpoint's copy from wherever they are run.
    return name if root is None else os.path.join(os.path.abspath(os.path.expanduser(root)), name)


def _class_count(classes) -> int:
    """data.num_classes of data=folder: the lines of its classes.txt."""
    from fcn_lightning.data.class_list import class_count

    return class_count(classes)


def _dataset_norm(weights: str, dataset: str) -> str:
    """A dataset preset's data.normalization (fcn_lightning.normalization.dataset_norm)."""
    from fcn_lightning.normalization import dataset_norm

    return dataset_norm(weights, dataset)


def _gpu_count() -> int:
    """Visible GPUs, at least 1 (so a launcher sized by it still runs one job on a CPU)."""
    from fcn_lightning.run.gpus import visible_gpus

    return max(1, len(visible_gpus()))


register_resolvers()
