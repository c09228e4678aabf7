"""fcn-lightning's SLURM launcher (``hydra/launcher=slurm``) as a Hydra plugin: Hydra builds
launchers only from classes defined under the ``hydra_plugins`` namespace, so the class is
declared here (`fcn_lightning_slurm.SlurmLauncher`); what it does is in
fcn_lightning/run/slurm.py."""
