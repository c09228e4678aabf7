"""Fixtures every test folder shares."""

from __future__ import annotations

import pytest

from tests.train_helpers import tiny_dataset

# The `slurm_cluster` fixture: one real single-node SLURM per test session.
pytest_plugins = ["tests.slurm_cluster"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The tiny synthetic dataset (generated once per test module)."""
    return tiny_dataset(tmp_path_factory.mktemp("data"))
