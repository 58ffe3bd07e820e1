from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.conftest import run_sync
from tests.helpers import create_user, delete_user
from tests.toolkit.support import Platform, build_downstream, plant

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.fixture
def downstream_url(new_database: Callable[[], str]) -> str:
    """A downstream service database (see downstream.sql) that still has its FKs."""
    url = new_database()
    run_sync(build_downstream(url))
    return url


@pytest.fixture
async def platform(server, admin_stub, downstream_url: str) -> Platform:
    """The downstream database with rows of 30 active users of a real auth-service,
    2 users deleted there and 1 id never created (see support.plant)."""
    active = [(await create_user(admin_stub)).id for _ in range(30)]
    deleted = [(await create_user(admin_stub)).id for _ in range(2)]
    for user_id in deleted:
        await delete_user(admin_stub, user_id)
    return await plant(downstream_url, server.address, active, deleted)
