"""`auth-toolkit fk-audit` against a real downstream database (tests/toolkit/downstream.sql)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from auth_client.toolkit.audit import AuditError, Scope, audit
from auth_client.toolkit.report import render_json, render_table
from tests.toolkit.support import fetch, run_cli

REPO = Path(__file__).resolve().parents[2]

# (schema, table, constraint): every constraint referencing public.users, and only those.
CANONICAL = {
    ("public", "api_keys", "api_keys_owner_id_fkey"),
    ("messaging", "conversations", "conversations_created_by_fkey"),
    ("messaging", "conversation_participants", "conversation_participants_user_id_fkey"),
    ("messaging", "messages", "messages_sender_fk"),
    ("content", "posts", "posts_author_id_fkey"),
    ("content", "stories", "stories_author_id_fkey"),
    ("content", "story_views", "story_views_viewer_id_fkey"),
    ("content", "story_close_friends", "story_close_friends_owner_id_fkey"),
    ("content", "story_close_friends", "story_close_friends_friend_id_fkey"),
    ("content", "post_shares", "post_shares_sharer_fkey"),
    ("content", "bookmark_collections", "bookmark_collections_owner_id_fkey"),
    ("content", "bookmarks", "bookmarks_user_id_fkey"),
    ("streaming", "streams", "streams_broadcaster_id_fkey"),
    ("streaming", "viewer_sessions", "viewer_sessions_viewer_id_fkey"),
    ("experiments", "experiments", "experiments_created_by_fkey"),
    ("experiments", "experiment_assignments", "experiment_assignments_user_id_fkey"),
    ("experiments", "experiment_events", "experiment_events_user_fkey"),
    ("content", "comments", "comments_author_id_fkey"),
    ("messaging_eu", "conversations", "conversations_created_by_fkey"),
    ("messaging_eu", "messages", "messages_sender_id_fkey"),
    ("Audit Log", "Sign-ins", 'Sign-in "user" fk'),
}
# Referencing columns without a valid, non-partial index leading with them.
UNINDEXED = {
    ("messaging", "conversations", "conversations_created_by_fkey"),
    ("messaging", "messages", "messages_sender_fk"),  # only a partial index
    ("content", "story_views", "story_views_viewer_id_fkey"),  # not the leading column
    ("content", "story_close_friends", "story_close_friends_friend_id_fkey"),
    ("content", "bookmarks", "bookmarks_user_id_fkey"),
    ("streaming", "streams", "streams_broadcaster_id_fkey"),  # only an INVALID index
    ("experiments", "experiments", "experiments_created_by_fkey"),
    ("experiments", "experiment_assignments", "experiment_assignments_user_id_fkey"),
    ("experiments", "experiment_events", "experiment_events_user_fkey"),
    ("Audit Log", "Sign-ins", 'Sign-in "user" fk'),
}


async def canonical_expected(url: str) -> set[tuple[str, str, str]]:
    rows = await fetch(url, "SELECT current_setting('server_version_num')::int AS v")
    extra = {("content", "posts", "posts_editor_id_fkey")} if rows[0]["v"] >= 180000 else set()
    return CANONICAL | extra


async def test_audit_finds_exactly_the_constraints_referencing_public_users(downstream_url) -> None:
    result = await audit(downstream_url)

    found = {(fk.schema, fk.table, fk.constraint) for fk in result.foreign_keys}
    assert found == await canonical_expected(downstream_url)
    assert (result.referenced_schema, result.referenced_table) == ("public", "users")
    # The FKs into experiments.users, and FKs between other tables, are not listed.
    assert not {
        fk for fk in result.foreign_keys if "owner_id" in fk.columns and fk.schema == "experiments"
    }
    # Partition copies of the partitioned table's constraint are not listed separately.
    assert sum(fk.table.startswith("experiment_events") for fk in result.foreign_keys) == 1
    missing = {(fk.schema, fk.table, fk.constraint) for fk in result.missing_indexes}
    assert missing == UNINDEXED


async def test_audit_reports_columns_actions_deferrability_and_estimates(downstream_url) -> None:
    result = await audit(downstream_url)
    # (messaging_eu repeats messaging's constraint names: a per-service copy)
    by_name = {fk.constraint: fk for fk in result.foreign_keys if fk.schema != "messaging_eu"}

    shares = by_name["post_shares_sharer_fkey"]
    assert shares.columns == ("shared_by_region", "shared_by")  # constraint order
    assert shares.referenced_columns == ("region", "id")
    assert shares.on_delete == "SET NULL"
    assert shares.on_delete_columns == ("shared_by",)
    assert shares.on_delete_text == "SET NULL (shared_by)"
    assert shares.index == "post_shares_sharer_idx"  # leading columns in another order

    events = by_name["experiment_events_user_fkey"]
    assert events.columns == ("user_id", "user_region")
    assert events.match == "FULL"
    assert events.partitioned

    messages = by_name["messages_sender_fk"]
    assert (messages.on_delete, messages.on_update) == ("RESTRICT", "CASCADE")
    assert by_name["conversations_created_by_fkey"].on_delete == "SET NULL"
    assert by_name["posts_author_id_fkey"].on_delete == "CASCADE"
    assert by_name["story_views_viewer_id_fkey"].on_delete == "NO ACTION"
    assert by_name["bookmarks_user_id_fkey"].on_delete == "SET DEFAULT"
    sessions = by_name["viewer_sessions_viewer_id_fkey"]
    assert (sessions.on_delete, sessions.on_update) == ("SET DEFAULT", "RESTRICT")

    stories = by_name["stories_author_id_fkey"]
    assert (stories.deferrable, stories.initially_deferred) == (True, True)
    views = by_name["story_views_viewer_id_fkey"]
    assert (views.deferrable, views.initially_deferred) == (True, False)
    assert by_name["posts_author_id_fkey"].deferrable is False

    assert by_name["api_keys_owner_id_fkey"].validated is False
    assert by_name["conversation_participants_user_id_fkey"].index == (
        "conversation_participants_pkey"
    )
    assert by_name["posts_author_id_fkey"].index == "posts_author_id_id_idx"

    # content.posts was analyzed (40 rows); streaming.streams never was.
    assert by_name["posts_author_id_fkey"].row_estimate == 40
    assert by_name["streams_broadcaster_id_fkey"].row_estimate is None

    weird = by_name['Sign-in "user" fk']
    assert weird.sql_table == '"Audit Log"."Sign-ins"'
    assert weird.sql_constraint == '"Sign-in ""user"" fk"'
    assert weird.sql_columns == ('"User ID"',)
    # Definitions are printed with schema-qualified names, whatever the search path.
    assert "REFERENCES public.users(id)" in weird.definition


async def test_a_table_merely_named_users_is_only_audited_when_asked(downstream_url) -> None:
    result = await audit(downstream_url, "experiments.users")

    found = {(fk.schema, fk.table, tuple(fk.columns)) for fk in result.foreign_keys}
    assert found == {
        ("experiments", "experiments", ("owner_id",)),
        ("experiments", "experiment_assignments", ("subject_id",)),
    }
    # Unqualified means schema public, even when search_path would find another table.
    conn = await asyncpg.connect(downstream_url, server_settings={"search_path": "experiments"})
    try:
        from auth_client.toolkit.audit import audit_connection  # noqa: PLC0415

        result = await audit_connection(conn, "users")
    finally:
        await conn.close()
    assert (result.referenced_schema, result.referenced_table) == ("public", "users")
    found_names = {(fk.schema, fk.table, fk.constraint) for fk in result.foreign_keys}
    assert found_names == await canonical_expected(downstream_url)


async def test_unknown_or_invalid_referenced_table_is_a_clear_error(downstream_url) -> None:
    with pytest.raises(AuditError, match=r"table public\.members does not exist"):
        await audit(downstream_url, "members")
    with pytest.raises(AuditError, match="not a valid table name"):
        await audit(downstream_url, 'bad"name')
    with pytest.raises(AuditError, match=r"expected TABLE or SCHEMA\.TABLE"):
        await audit(downstream_url, "a.b.c")


async def test_readable_table_and_json_reports(downstream_url) -> None:
    result = await audit(downstream_url)
    text = render_table(result)
    expected = len(await canonical_expected(downstream_url))
    assert text.splitlines()[0].startswith(f"{expected} foreign key(s) reference public.users")
    line = next(line for line in text.splitlines() if line.startswith("streaming.streams "))
    assert "MISSING" in line
    assert "unknown" in line
    assert "CASCADE" in line

    data = json.loads(render_json(result))
    assert data["referenced_table"] == "public.users"
    assert data["count"] == expected
    assert data["missing_indexes"] == len(UNINDEXED)
    shares = next(
        fk for fk in data["foreign_keys"] if fk["constraint"] == "post_shares_sharer_fkey"
    )
    assert shares["columns"] == ["shared_by_region", "shared_by"]
    assert shares["on_delete_columns"] == ["shared_by"]
    assert shares["row_estimate"] is None or shares["row_estimate"] >= 0


async def test_cli_fk_audit_json(downstream_url) -> None:
    code, out, err = await run_cli("fk-audit", "--database-url", downstream_url, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    found = {(fk["schema"], fk["table"], fk["constraint"]) for fk in data["foreign_keys"]}
    assert found == await canonical_expected(downstream_url)

    code, out, err = await run_cli(
        "fk-audit", "--database-url", downstream_url, "--referenced-table", "nope.users"
    )
    assert code == 1
    assert "nope.users does not exist" in err
    assert downstream_url not in err


async def test_auth_service_fk_audit_is_an_alias_with_a_notice(downstream_url) -> None:
    """Kept for the 0.2 releases: the same report, and stderr says where it moved."""
    auth_service = str(Path(sys.executable).parent / "auth-service")
    args = ("fk-audit", "--database-url", downstream_url, "--format", "json")
    code, out, err = await run_cli(*args, command=auth_service)
    assert code == 0, err
    assert "alias of `auth-toolkit fk-audit`" in err
    _, toolkit_out, _ = await run_cli(*args)
    assert json.loads(out)["foreign_keys"] == json.loads(toolkit_out)["foreign_keys"]


async def test_no_foreign_keys_is_a_clean_report(new_database) -> None:
    url = new_database()  # the auth database itself: nothing references its users table
    result = await audit(url)
    assert result.foreign_keys == ()
    assert render_table(result).startswith("0 foreign key(s) reference public.users")


# -- --show-model-changes (#29 item 2): the ORM change that replaces each foreign key --

DJANGO_MODELS = """
import json, sys
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "auth_client.integrations.django"],
    USE_TZ=True,
)
django.setup()
from django.db import models
from auth_client.integrations.django import UserReferenceField

out = []
for index, line in enumerate(json.loads(sys.stdin.read())):
    body = {"__module__": "models", "Meta": type("Meta", (), {"app_label": "auth_client"})}
    exec(line, {"UserReferenceField": UserReferenceField}, body)
    (field,) = [v for v in body.values() if isinstance(v, UserReferenceField)]
    model = type(f"M{index}", (models.Model,), body)
    field = model._meta.get_field(field.name)
    out.append([field.column, field.null])
print(json.dumps(out))
"""


async def test_show_model_changes_prints_each_foreign_keys_replacement(downstream_url) -> None:
    code, out, err = await run_cli(
        "fk-audit", "--database-url", downstream_url, "--schema", "content",
        "--schema", "Audit Log", "--show-model-changes",
    )  # fmt: skip
    assert code == 0, err
    table, changes = out.split("\n\nModel changes (auth_client.integrations", 1)
    assert "foreign key(s) reference public.users" in table
    sections = {s.splitlines()[0]: s for s in changes.split("\n\n")[1:]}

    bookmarks = sections["content.bookmarks.user_id  (bookmarks_user_id_fkey)"]  # nullable
    assert bookmarks.splitlines()[1:5] == [
        "  SQLAlchemy  user_id: Mapped[uuid.UUID | None] = mapped_column(info=user_reference())",
        '    was       user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), ...)',
        "  Django      user_id = UserReferenceField(null=True)",
        "    was       user = models.ForeignKey(User, ...)",
    ]
    posts = sections["content.posts.author_id  (posts_author_id_fkey)"]  # NOT NULL, CASCADE
    assert (
        "  SQLAlchemy  author_id: Mapped[uuid.UUID] = mapped_column(info=user_reference())" in posts
    )
    assert "  Django      author_id = UserReferenceField()\n" in posts
    assert "ON DELETE CASCADE deletes the rows: your user_deleted handler does that now" in posts

    shares = sections["content.post_shares.shared_by  (post_shares_sharer_fkey)"]
    assert "shared_by = UserReferenceField(null=True)" in shares
    assert (
        'ForeignKeyConstraint(["shared_by_region", "shared_by"], ["users.region", "users.id"])'
        in shares
    )
    assert (
        "a key of several columns: shared_by (-> id) is checked, shared_by_region no longer"
        in shares
    )

    sign_ins = sections['"Audit Log"."Sign-ins"."User ID"  (Sign-in "user" fk)']
    assert (
        'user_id: Mapped[uuid.UUID | None] = mapped_column("User ID", info=user_reference())'
        in sign_ins
    )
    assert 'user_id = UserReferenceField(db_column="User ID", null=True)' in sign_ins

    once = changes.split("\n\nOnce per service:\n", 1)[1]
    assert "  SQLAlchemy  from auth_client.integrations.sqlalchemy import" in once
    assert "check_user_references(Session, auth)" in once
    assert '  Django      INSTALLED_APPS = [..., "auth_client.integrations.django"]' in once
    assert "SeparateDatabaseAndState" in once

    code, out, _ = await run_cli(
        "fk-audit", "--database-url", downstream_url, "--schema", "content"
    )
    assert code == 0
    assert "Model changes" not in out  # only when asked


async def test_show_model_changes_in_json(downstream_url) -> None:
    args = ("fk-audit", "--database-url", downstream_url, "--format", "json")
    code, out, err = await run_cli(*args, "--show-model-changes")
    assert code == 0, err
    data = json.loads(out)
    assert set(data["model_setup"]) == {"sqlalchemy", "django", "migrations"}
    by_name = {fk["constraint"]: fk for fk in data["foreign_keys"] if fk["schema"] == "content"}
    assert by_name["comments_author_id_fkey"]["model_change"] == {
        "column": "author_id",
        "sqlalchemy": {
            "declare": "author_id: Mapped[uuid.UUID] = mapped_column(info=user_reference())",
            "in_place_of": (
                'author_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), ...)'
            ),
        },
        "django": {
            "declare": "author_id = UserReferenceField()",
            "in_place_of": "author = models.ForeignKey(User, ...)",
        },
        "notes": [],
    }
    assert by_name["comments_author_id_fkey"]["column_types"] == ["uuid"]
    _, plain, _ = await run_cli(*args)
    assert "model_change" not in plain
    assert "model_setup" not in plain


async def test_the_model_changes_declare_the_same_columns(downstream_url) -> None:
    """Each printed declaration, put in a model as printed, maps the audited column
    (name, NULL or NOT NULL) and marks it: SQLAlchemy here, Django in a process of its
    own (settings.configure is once per process)."""
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column  # noqa: PLC0415

    from auth_client.integrations.sqlalchemy import USER_REFERENCE, user_reference  # noqa: PLC0415
    from auth_client.toolkit.audit_models import model_changes  # noqa: PLC0415

    class Base(DeclarativeBase):
        pass

    result = await audit(downstream_url)
    changes = [(fk, c) for fk, c in model_changes(result) if c.sqlalchemy and c.django]
    assert len(changes) == len(result.foreign_keys)  # every downstream key has one
    for index, (fk, change) in enumerate(changes):
        namespace = {
            "Base": Base, "Mapped": Mapped, "mapped_column": mapped_column,
            "user_reference": user_reference, "uuid": uuid,
        }  # fmt: skip
        source = (
            f"class M{index}(Base):\n    __tablename__ = 't{index}'\n"
            f"    pk: Mapped[int] = mapped_column(primary_key=True)\n    {change.sqlalchemy}\n"
        )
        # the toolkit's own output, compiled without this module's lazy annotations
        exec(compile(source, f"<model {index}>", "exec", dont_inherit=True), namespace)
        column = namespace[f"M{index}"].__table__.c[change.column]  # type: ignore[attr-defined]
        assert column.info == {USER_REFERENCE: True}, change.sqlalchemy
        assert column.nullable is (change.column not in fk.not_null_columns), change.sqlalchemy

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DJANGO_MODELS,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate(json.dumps([c.django for _, c in changes]).encode())
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == [
        [change.column, change.column not in fk.not_null_columns] for fk, change in changes
    ]


async def test_model_changes_follow_the_column_type_and_key(downstream_url) -> None:
    from auth_client.toolkit.audit_models import model_change  # noqa: PLC0415

    result = await audit(downstream_url, scope=Scope(("content",)))
    comments = next(fk for fk in result.foreign_keys if fk.constraint == "comments_author_id_fkey")
    text = model_change(
        replace(comments, column_types=("character varying(36)",)), "public", "users"
    )
    assert text.sqlalchemy == "author_id: Mapped[str] = mapped_column(info=user_reference())"
    assert text.django == "author_id = UserReferenceField()"
    assert any("Django compares it as uuid: convert the column first" in n for n in text.notes)

    number = model_change(replace(comments, column_types=("bigint",)), "public", "users")
    assert (number.sqlalchemy, number.django) == (None, None)
    assert number.notes == (
        (
            "column type bigint: auth-service user ids are uuids, and the integrations check"
            " uuid or text columns: no change"
        ),
    )

    shares = next(fk for fk in result.foreign_keys if fk.constraint == "post_shares_sharer_fkey")
    no_id = model_change(replace(shares, referenced_columns=("region", "code")), "public", "users")
    assert (no_id.column, no_id.sqlalchemy) == (None, None)
    assert "none references id" in no_id.notes[0]

    legacy = model_change(comments, "legacy", "users")
    assert legacy.sqlalchemy_was is not None
    assert 'ForeignKey("legacy.users.id")' in legacy.sqlalchemy_was


def test_the_playbook_and_readme_show_the_model_changes() -> None:
    playbook = (REPO / "docs" / "fk-removal-playbook.md").read_text()
    readme = (REPO / "README.md").read_text()
    assert "--show-model-changes" in playbook
    assert "--show-model-changes" in readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    for needle in ("user_reference()", "UserReferenceField", "SeparateDatabaseAndState"):
        assert needle in playbook, needle


async def test_the_playbooks_model_changes_sample_is_real_output(downstream_url) -> None:
    """The sample under "With an ORM" is `--schema messaging` on the downstream
    database, shortened: every line it shows is a line of the real output."""
    playbook = (REPO / "docs" / "fk-removal-playbook.md").read_text()
    section = playbook.split("### With an ORM", 1)[1].split("\n## ", 1)[0]
    sample = re.findall(r"```\n(Model changes.*?)```", section, re.DOTALL)[0]
    code, out, err = await run_cli(
        "fk-audit", "--database-url", downstream_url, "--schema", "messaging",
        "--show-model-changes",
    )  # fmt: skip
    assert code == 0, err
    real = out.splitlines()
    shown = [line for line in sample.splitlines() if line and line.strip() != "..."]
    assert [line for line in shown if line not in real] == []
