"""The host side of scripts/check_image.sh: what runs outside the container under test.

    python scripts/image_smoke.py services STATE_FILE
    python scripts/image_smoke.py call TARGET ADMIN_TOKEN METRICS_URL
    python scripts/image_smoke.py consume BOOTSTRAP TOPIC USER_ID

- `services`: an embedded PostgreSQL and an embedded Kafka-compatible broker on free
  loopback ports, plus a topic with a fresh name; writes their addresses to
  STATE_FILE (JSON) once both answer, and runs until SIGTERM/SIGINT, then stops both.
- `call`: one real round trip through the containerised `serve`: CreateUser,
  UserExists (true), DeleteUser, UserExists (false), with the admin token; then the
  server's /metrics must count the calls. Prints the deleted user's id last.
- `consume`: reads TOPIC from the beginning (no consumer group) until the
  `user_deleted` event of USER_ID arrives, which proves the containerised relay
  published it; exits 1 if it does not arrive in time.

Only the project's own client contract and embedded servers are used: this is the
same code a service team or `auth-service dev` uses, not a mock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import urllib.request
import uuid
from pathlib import Path

import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from auth_client.contract import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    bearer_metadata,
    decode_user_deleted,
)
from auth_service.local.broker import EmbeddedKafka
from auth_service.local.embedded import EmbeddedPostgres

CALL_TIMEOUT_S = 10.0


def services(state_file: Path) -> int:
    # SIGTERM unwinds like Ctrl-C, at any point: each server is closed by the exit
    # stack even when the signal arrives while it starts.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    topic = f"image-check-{uuid.uuid4().hex[:12]}"
    try:
        with contextlib.ExitStack() as stack:
            postgres = EmbeddedPostgres()
            stack.callback(postgres.close)
            kafka = EmbeddedKafka()
            stack.callback(kafka.close)
            postgres.start()
            kafka.start()
            asyncio.run(_create_topic(kafka.bootstrap_servers, topic))
            state = {
                "database_url": postgres.url,
                "bootstrap_servers": kafka.bootstrap_servers,
                "topic": topic,
            }
            partial = state_file.with_suffix(".partial")
            partial.write_text(json.dumps(state))
            partial.replace(state_file)  # the shell waits for the complete file
            print(f"image_smoke: PostgreSQL at {postgres.url}, broker at {kafka.bootstrap_servers}")
            while True:
                signal.pause()
    except KeyboardInterrupt:
        print("image_smoke: stopped PostgreSQL and the broker")
    return 0


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def call(target: str, token: str, metrics_url: str) -> int:
    metadata = bearer_metadata(token)
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.UserAdminServiceStub(channel)
        api = auth_pb2_grpc.AuthServiceStub(channel)
        created = await admin.CreateUser(
            admin_pb2.CreateUserRequest(username=f"image-check-{uuid.uuid4().hex[:8]}"),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
        user_id = created.user.id
        before = await api.UserExists(
            auth_pb2.UserExistsRequest(user_id=user_id), metadata=metadata, timeout=CALL_TIMEOUT_S
        )
        await admin.DeleteUser(
            admin_pb2.DeleteUserRequest(user_id=user_id), metadata=metadata, timeout=CALL_TIMEOUT_S
        )
        after = await api.UserExists(
            auth_pb2.UserExistsRequest(user_id=user_id), metadata=metadata, timeout=CALL_TIMEOUT_S
        )
    if not before.exists or after.exists:
        print(f"image_smoke: UserExists said {before.exists} before and {after.exists} after")
        return 1
    text = await asyncio.to_thread(_get, metrics_url)
    counted = [
        line
        for line in text.splitlines()
        if line.startswith("grpc_server_handled_total{")
        and 'grpc_code="OK"' in line
        and 'grpc_method="UserExists"' in line
    ]
    if not counted:
        print(f"image_smoke: {metrics_url} counts no UserExists call")
        return 1
    print(f"image_smoke: CreateUser, UserExists, DeleteUser, UserExists answered; {counted[0]}")
    print(user_id)
    return 0


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=CALL_TIMEOUT_S) as reply:
        return str(reply.read().decode())


async def consume(bootstrap: str, topic: str, user_id: str, timeout: float) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    event = decode_user_deleted(record.value)
                    if event.user_id == user_id:
                        print(
                            f"image_smoke: {topic}[{record.partition}]@{record.offset}: "
                            f"user_deleted event {event.event_id} for user {user_id}"
                        )
                        return 0
    finally:
        await consumer.stop()
    print(f"image_smoke: no user_deleted event for {user_id} on {topic} within {timeout:g}s")
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("services")
    p.add_argument("state_file", type=Path)
    p = commands.add_parser("call")
    p.add_argument("target")
    p.add_argument("token")
    p.add_argument("metrics_url")
    p = commands.add_parser("consume")
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("user_id")
    p.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    if args.command == "services":
        return services(args.state_file)
    if args.command == "call":
        return asyncio.run(call(args.target, args.token, args.metrics_url))
    return asyncio.run(consume(args.bootstrap, args.topic, args.user_id, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
