"""Messaging service: add a user to a group chat, validating the user with
auth-service instead of a foreign key into the auth database.

Before, the messaging service read the auth database and relied on an FK:

    SELECT EXISTS(SELECT 1 FROM users WHERE id = $1)        -- is the user real?
    SELECT username FROM users WHERE id = $1                -- for "alice joined"
    INSERT INTO group_members (group_id, user_id) ...       -- user_id REFERENCES users(id)

Now it asks auth-service (`require_user`, `get_user`) and inserts into its own
database, whose schema is `messaging_schema.sql` (no reference to `users`).

Run it against `auth-service dev` (from the repository root):

    # terminal 1: embedded PostgreSQL + auth-service on 127.0.0.1:50051; it prints
    # the demo users' ids and logs "embedded PostgreSQL on 127.0.0.1:<PGPORT>"
    .venv/bin/auth-service dev

    # terminal 2: the example keeps its tables in its own database "messaging" on
    # that PostgreSQL (created if missing)
    .venv/bin/python examples/messaging_add_member.py \
        --target 127.0.0.1:50051 \
        --database-url postgresql://postgres@127.0.0.1:<PGPORT>/messaging \
        --group general <alice's id>

With OTEL_EXPORTER_OTLP_ENDPOINT set it traces: "add group member" with
auth_client's lookup spans and the insert beneath it (otel_setup.py, docs/tracing.md).

Exit status: 0 added (or already a member; prints JSON), 1 no such user,
2 malformed id, 3 auth-service unavailable, 4 the database cannot be reached (bad
--database-url or server down); 1 to 4 insert nothing and print one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from otel_setup import span, start_tracing
from service_db import EXIT_DATABASE_UNAVAILABLE, DatabaseUnavailableError, connect_creating

from auth_client import (
    AuthClient,
    InvalidRequestError,
    ServiceUnavailableError,
    UserNotFoundError,
)

SCHEMA = Path(__file__).with_name("messaging_schema.sql")

ADD_MEMBER = """
WITH chat AS (
    INSERT INTO chat_groups (name) VALUES ($1)
    ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
    RETURNING id
)
INSERT INTO group_members (group_id, user_id)
SELECT id, $2 FROM chat
ON CONFLICT DO NOTHING
RETURNING group_id
"""


async def add_member(args: argparse.Namespace) -> dict[str, object]:
    with span("add group member"):
        return await _add_member(args)


async def _add_member(args: argparse.Namespace) -> dict[str, object]:
    db = await connect_creating(args.database_url)
    try:
        await db.execute(SCHEMA.read_text())
        async with AuthClient(args.target, token=args.token, timeout=args.timeout) as auth:
            # Validate first: raises UserNotFoundError for unknown or deleted
            # users, ServiceUnavailableError when auth-service cannot answer.
            await auth.require_user(args.user_id)
            user = await auth.get_user(args.user_id)  # the profile, for the message
            if user is None:  # deleted in between
                raise UserNotFoundError([args.user_id])
        with span("INSERT group_members"):  # the service's own database
            async with db.transaction():
                group_id = await db.fetchval(ADD_MEMBER, args.group, user.id)
                added = group_id is not None
                if added:
                    await db.execute(
                        "INSERT INTO group_messages (group_id, body) VALUES ($1, $2)",
                        group_id,
                        f"{user.display_name} (@{user.username}) joined",
                    )
        return {
            "group": args.group,
            "user_id": str(user.id),
            "username": user.username,
            "added": added,
        }
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Add a user to a group chat.")
    parser.add_argument("--target", default="127.0.0.1:50051", help="auth-service host:port")
    parser.add_argument("--token", help="bearer token with the users:read scope")
    parser.add_argument("--database-url", required=True, help="the messaging service's database")
    parser.add_argument("--group", default="general", help="group name (created if missing)")
    parser.add_argument("--timeout", type=float, default=2.0, help="auth-service deadline (s)")
    parser.add_argument("user_id", help="id of the user to add")
    args = parser.parse_args(argv)
    stop_tracing = start_tracing("messaging")
    try:
        result = asyncio.run(add_member(args))
    except UserNotFoundError as exc:
        print(f"not added: {exc}", file=sys.stderr)
        return 1
    except InvalidRequestError as exc:
        print(f"not added: {exc}", file=sys.stderr)
        return 2
    except ServiceUnavailableError as exc:
        print(f"not added, try again later: {exc}", file=sys.stderr)
        return 3
    except DatabaseUnavailableError as exc:
        print(f"not added: {exc}", file=sys.stderr)
        return EXIT_DATABASE_UNAVAILABLE
    finally:
        stop_tracing()  # export the spans before the process exits
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
