from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.conftest import run_sync
from tests.toolkit.support import build_downstream

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.fixture
def downstream_url(new_database: Callable[[], str]) -> str:
    """A downstream service database (see downstream.sql) that still has its FKs."""
    url = new_database()
    run_sync(build_downstream(url))
    return url
