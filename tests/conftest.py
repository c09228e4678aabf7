"""Fixtures every test folder shares."""

from __future__ import annotations

import os

# One torch thread per process (unless OMP_NUM_THREADS says otherwise): `make test` runs
# two workers on two cores, with training subprocesses and DDP ranks beside them, and
# torch's default of a thread per core in every process oversubscribes the cores, its
# OpenMP threads spinning while they wait for each other (over twice the CPU time for the
# same tests). Set before torch is imported, so the entry points' subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from tests.train_helpers import tiny_dataset

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # if torch was imported first

# The `slurm_cluster` fixture: one real single-node SLURM per test session.
pytest_plugins = ["tests.slurm_cluster"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The tiny synthetic dataset (generated once per test module)."""
    return tiny_dataset(tmp_path_factory.mktemp("data"))
