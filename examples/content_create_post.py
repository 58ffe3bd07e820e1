"""Content service: create a post that mentions other users, validating the
author and every mentioned user with auth-service instead of foreign keys into
the auth database.

Before: `posts.author_id` and `post_mentions.user_id` were `REFERENCES users(id)`,
so every insert took a lock in the auth database. Now one `require_users` call
checks all of them (cached, coalesced, batched) and the insert goes to the
content service's own database, whose schema is `content_schema.sql`.

Run it against `auth-service dev` (from the repository root):

    # terminal 1: embedded PostgreSQL + auth-service on 127.0.0.1:50051; it prints
    # the demo users' ids and logs "embedded PostgreSQL on 127.0.0.1:<PGPORT>"
    .venv/bin/auth-service dev

    # terminal 2: the example keeps its tables in its own database "content" on
    # that PostgreSQL (created if missing)
    .venv/bin/python examples/content_create_post.py \
        --target 127.0.0.1:50051 \
        --database-url postgresql://postgres@127.0.0.1:<PGPORT>/content \
        --author <alice's id> --mention <bob's id> "hello @bob"

Exit status: 0 created (prints JSON), 1 an author or mentioned user does not
exist (the message names them), 2 malformed id, 3 auth-service unavailable, 4 the
database cannot be reached (bad --database-url or server down); 1 to 4 insert
nothing and print one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

from service_db import EXIT_DATABASE_UNAVAILABLE, DatabaseUnavailableError, connect_creating

from auth_client import (
    AuthClient,
    InvalidRequestError,
    ServiceUnavailableError,
    UserNotFoundError,
)

SCHEMA = Path(__file__).with_name("content_schema.sql")


async def create_post(args: argparse.Namespace) -> dict[str, object]:
    db = await connect_creating(args.database_url)
    try:
        await db.execute(SCHEMA.read_text())
        async with AuthClient(args.target, token=args.token, timeout=args.timeout) as auth:
            # One call validates the author and every mention; UserNotFoundError
            # names each id that does not exist (or is deleted).
            await auth.require_users([args.author, *args.mention])
        post_id = uuid.uuid4()
        mentions = sorted({str(uuid.UUID(m)) for m in args.mention})
        async with db.transaction():
            await db.execute(
                "INSERT INTO posts (id, author_id, body) VALUES ($1, $2, $3)",
                post_id,
                uuid.UUID(args.author),
                args.body,
            )
            await db.executemany(
                "INSERT INTO post_mentions (post_id, user_id) VALUES ($1, $2)",
                [(post_id, uuid.UUID(m)) for m in mentions],
            )
        return {
            "post_id": str(post_id),
            "author_id": str(uuid.UUID(args.author)),
            "mentions": mentions,
        }
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create a post.")
    parser.add_argument("--target", default="127.0.0.1:50051", help="auth-service host:port")
    parser.add_argument("--token", help="bearer token with the users:read scope")
    parser.add_argument("--database-url", required=True, help="the content service's database")
    parser.add_argument("--author", required=True, help="id of the author")
    parser.add_argument("--mention", action="append", default=[], help="id of a mentioned user")
    parser.add_argument("--timeout", type=float, default=2.0, help="auth-service deadline (s)")
    parser.add_argument("body", help="text of the post")
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(create_post(args))
    except UserNotFoundError as exc:
        print(f"not posted: {exc}", file=sys.stderr)
        return 1
    except InvalidRequestError as exc:
        print(f"not posted: {exc}", file=sys.stderr)
        return 2
    except ServiceUnavailableError as exc:
        print(f"not posted, try again later: {exc}", file=sys.stderr)
        return 3
    except DatabaseUnavailableError as exc:
        print(f"not posted: {exc}", file=sys.stderr)
        return EXIT_DATABASE_UNAVAILABLE
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
