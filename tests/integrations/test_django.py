"""The Django integration against a real auth-service and a real PostgreSQL (Django's
postgresql backend, psycopg 3): a save that adds or changes a reference to a user
that does not exist (or is deleted) fails naming the column and id, in one lookup per
save; and the system check flags foreign keys to the users model.

Django is configured once for this module (settings.configure), with a database of
its own; the ORM runs in worker threads while the test's loop serves auth-service."""

from __future__ import annotations

import asyncio
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import django
import pytest
from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections
from django.test.utils import override_settings

from auth_client import (
    FallbackPolicy,
    ServiceUnavailableError,
    SyncAuthClient,
    UserReferenceError,
)
from auth_client.integrations.django import (
    check_user_references,
    configure,
    current_client,
)
from auth_service.api.server import AuthServer
from auth_service.local.embedded import free_port
from tests.client.conftest import seed_users
from tests.client.test_sync_client import SyncCounter
from tests.conftest import _admin, _with_database, run_sync

T = TypeVar("T")


@pytest.fixture(scope="module")
def django_db(pg_admin_url: str) -> Iterator[None]:
    name = f"t_django_{uuid.uuid4().hex[:12]}"
    run_sync(_admin(pg_admin_url, f"CREATE DATABASE {name}"))
    url = urllib.parse.urlsplit(_with_database(pg_admin_url, name))
    if not django_settings.configured:
        django_settings.configure(
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "auth_client.integrations.django",
                "tests.integrations.djangoapp",
            ],
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": name,
                    "USER": url.username or "postgres",
                    "PASSWORD": url.password or "",
                    "HOST": url.hostname,
                    "PORT": str(url.port),
                }
            },
            USE_TZ=True,
        )
        django.setup()
    else:
        connections["default"].settings_dict["NAME"] = name

    def create_tables() -> None:
        from tests.integrations.djangoapp.models import Member, Post  # noqa: PLC0415

        with connection.schema_editor() as editor:
            editor.create_model(Member)
            editor.create_model(Post)
        connections.close_all()

    run_sync(asyncio.to_thread(create_tables))
    yield
    run_sync(_admin(pg_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def orm(fn: Callable[[], T]) -> T:
    """Run Django ORM code in a worker thread (its own connection, closed after)."""

    def run() -> T:
        try:
            return fn()
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


@pytest.fixture
def counter() -> SyncCounter:
    return SyncCounter()


@pytest.fixture
def configured(django_db: None, server: AuthServer, counter: SyncCounter) -> Iterator[None]:
    """The integration configured with a factory, as a pre-fork app does."""
    made: list[SyncAuthClient] = []

    def factory() -> SyncAuthClient:
        made.append(SyncAuthClient(server.address, timeout=5, interceptors=[counter]))
        return made[-1]

    configure(factory)
    yield
    for client in made:
        client.close()
    configure(None)


def models() -> Any:
    from tests.integrations.djangoapp import models as found  # noqa: PLC0415

    return found


async def test_a_save_referencing_an_unknown_or_deleted_user_fails_naming_column_and_id(
    configured: None, settings, counter: SyncCounter
) -> None:
    (alice, bob), (gone,) = await seed_users(settings.database_url, 2, 1)
    unknown = uuid.uuid4()
    m = models()

    def run() -> None:
        m.Member.objects.create(group="general", user_id=alice)
        assert counter.calls == {"UserExists": 1}
        with pytest.raises(UserReferenceError) as info:
            m.Member.objects.create(group="general", user_id=unknown)
        assert info.value.references == (("djangoapp_member.user_id", unknown),)
        assert f"djangoapp_member.user_id = {unknown}" in str(info.value)
        with pytest.raises(UserReferenceError):
            m.Member(group="general", user_id=str(gone)).save()
        assert list(m.Member.objects.values_list("user_id", flat=True)) == [alice]

        before = counter.total
        with pytest.raises(UserReferenceError) as info:
            m.Post.objects.create(title="t", author_id=bob, editor_id=unknown)
        assert counter.total == before + 1  # both references in one lookup
        assert info.value.references == (("djangoapp_post.editor_id", unknown),)
        m.Post.objects.create(title="no editor", author_id=bob, editor_id=None)
        assert m.Post.objects.count() == 1

    await orm(run)


async def test_only_new_or_changed_references_are_checked(
    configured: None, settings, counter: SyncCounter
) -> None:
    (alice, bob), _ = await seed_users(settings.database_url, 2)
    m = models()

    def run() -> None:
        post = m.Post.objects.create(title="t", author_id=alice)
        client = current_client()
        client.mark_deleted(alice)  # deleted since: an unchanged reference is not re-checked
        loaded = m.Post.objects.get(pk=post.pk)
        loaded.title = "edited"
        sent = counter.total
        loaded.save()
        post.title = "edited again"
        post.save()
        assert counter.total == sent
        loaded.editor_id = uuid.uuid4()
        loaded.save(update_fields=["title"])  # the editor is not being saved
        with pytest.raises(UserReferenceError, match=r"djangoapp_post\.editor_id"):
            loaded.save()
        loaded.editor_id = bob
        loaded.save()
        assert m.Post.objects.get(pk=post.pk).editor_id == bob
        loaded.author_id = bob
        loaded.save()
        loaded.author_id = alice  # changed back to a now deleted user
        with pytest.raises(UserReferenceError, match=r"djangoapp_post\.author_id"):
            loaded.save()

    await orm(run)


async def test_bulk_create_is_checked_in_one_lookup_when_asked(
    configured: None, settings, counter: SyncCounter
) -> None:
    users, _ = await seed_users(settings.database_url, 30)
    m = models()

    def run() -> None:
        members = [m.Member(group="bulk", user_id=uid) for uid in users]
        check_user_references(members)
        assert counter.calls == {"BatchUserExists": 1}
        m.Member.objects.bulk_create(members)
        assert counter.total == 1  # checked just before: not asked again
        assert m.Member.objects.filter(group="bulk").count() == 30
        strangers = [m.Member(group="bulk2", user_id=uuid.uuid4()) for _ in range(3)]
        with pytest.raises(UserReferenceError) as info:
            check_user_references(strangers)
        assert len(info.value.references) == 3
        with pytest.raises(UserReferenceError):  # unchecked: each field checks itself
            m.Member.objects.bulk_create(strangers)
        assert m.Member.objects.filter(group="bulk2").count() == 0

    await orm(run)


async def test_an_unreachable_auth_service_follows_the_fallback_policy(django_db: None) -> None:
    down = f"127.0.0.1:{free_port()}"
    m = models()
    client = SyncAuthClient(down, timeout=0.3)

    def run() -> None:
        configure(client)
        with pytest.raises(ServiceUnavailableError):
            m.Member.objects.create(group="down", user_id=uuid.uuid4())
        configure(client, fallback=FallbackPolicy.FAIL_OPEN)
        m.Member.objects.create(group="down", user_id=uuid.uuid4())
        assert m.Member.objects.filter(group="down").count() == 1

    try:
        await orm(run)
    finally:
        client.close()
        configure(None)


def test_saving_before_configure_says_what_to_do(django_db: None) -> None:
    configure(None)
    m = models()
    with pytest.raises(ImproperlyConfigured, match=r"configure\(client\)"):
        m.Member(group="x", user_id=uuid.uuid4()).save()
    with pytest.raises(ImproperlyConfigured):
        current_client()
    with pytest.raises(TypeError):
        configure("not a client")  # type: ignore[arg-type]


def test_the_system_check_flags_foreign_keys_to_the_users_model(django_db: None) -> None:
    found = [c for c in checks.run_checks(tags=[checks.Tags.models]) if c.id == "auth_client.W001"]
    tail = " is a ForeignKey to auth.User, whose users now live in auth-service"
    assert sorted(c.msg for c in found) == [
        f"djangoapp.LegacyMembership.approver{tail}",
        f"djangoapp.LegacyMembership.reviewer{tail}",
        f"djangoapp.LegacyMembership.user{tail}",
    ]
    hints = {c.msg.split(" ", 1)[0].rsplit(".", 1)[1]: c.hint or "" for c in found}
    assert "`reviewer_id = UserReferenceField(null=True)`" in hints["reviewer"]
    assert "`user_id = UserReferenceField()`" in hints["user"]
    # The replacement keeps the constraint's column, whatever it is named.
    assert (
        "`approver_id = UserReferenceField(null=True, db_column='approved_by')`"
        in hints["approver"]
    )
    assert "the same column 'approved_by'" in hints["approver"]
    assert all(c.level == checks.WARNING for c in found)
    with override_settings(AUTH_CLIENT_USER_MODELS=["djangoapp.Member"]):
        assert not [
            c for c in checks.run_checks(tags=[checks.Tags.models]) if c.id == "auth_client.W001"
        ]
