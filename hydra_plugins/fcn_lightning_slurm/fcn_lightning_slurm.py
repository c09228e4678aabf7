"""The launcher of ``hydra/launcher=slurm`` and ``slurm_cpu`` (see fcn_lightning/run/slurm.py).

Hydra imports this module (every module under the ``hydra_plugins`` namespace) for every
Hydra app in the environment; without hydra-submitit-launcher the class is no plugin and
Hydra skips it.
"""

from __future__ import annotations

from fcn_lightning.run import slurm


class SlurmLauncher(slurm.SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher; a job sbatch refuses is one error line."""
