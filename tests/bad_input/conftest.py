"""The earlier outputs every bad-input case runs beside (made once per test process)."""

from __future__ import annotations

import pytest

from tests.bad_input.harness import Place, make_earlier


@pytest.fixture(scope="session")
def earlier(tmp_path_factory) -> Place:
    return make_earlier(tmp_path_factory.mktemp("earlier"))
