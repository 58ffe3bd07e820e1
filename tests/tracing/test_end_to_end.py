"""One trace per operation across real processes, as a real collector sees it: an
OTLP/HTTP receiver in this test decodes what `auth-service serve` (tracing on by
OTEL_* variables alone) and the example services (tracing set up in their own
process, docs/tracing.md) export.

- insert: examples/messaging_add_member.py's "add group member" -> auth_client's
  lookup -> its RPC -> the server's call -> the database query;
- deletion: DeleteUser -> its transaction (the outbox row) -> the relay's publish
  -> Kafka -> examples/cleanup_messaging.py's UserDeletedConsumer -> the handler.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_client.contract import admin_pb2
from auth_service.local.embedded import free_port
from bench.otlp_sink import CLIENT, CONSUMER, PRODUCER, SERVER, OtlpSink, ReceivedSpan
from tests.events.support import Proc, admin_stub, create_topic
from tests.helpers import ADMIN_MD, ADMIN_TOKEN, create_user
from tests.ops.support import REPO, Service, clean_env

pytestmark = pytest.mark.slow

READ_TOKEN = "messaging-read-token-0123456789"


def _one(spans: list[ReceivedSpan], name: str, kind: int | None = None) -> ReceivedSpan:
    found = [s for s in spans if s.name == name and kind in {None, s.kind}]
    assert len(found) == 1, sorted(f"{s.service}: {s.name}" for s in spans)
    return found[0]


def _child(parent: ReceivedSpan, child: ReceivedSpan) -> None:
    assert child.trace_id == parent.trace_id, (parent.name, child.name)
    assert child.parent_span_id == parent.span_id, (parent.name, child.name)


def _has(*names: str) -> Callable[[list[ReceivedSpan]], bool]:
    return lambda spans: set(names) <= {s.name for s in spans}


async def _serving(target: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def test_an_insert_and_a_deletion_are_each_one_trace_across_processes(
    new_database: Callable[[], str], kafka_bootstrap: str, topic_name: str
) -> None:
    await create_topic(kafka_bootstrap, topic_name, 1)
    target = f"127.0.0.1:{free_port()}"
    with OtlpSink() as sink:
        # What an operator sets; the SDK's batch delay shortened for the test.
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        env = clean_env(
            DATABASE_URL=new_database(),
            GRPC_LISTEN=target,
            ADMIN_TOKENS=ADMIN_TOKEN,
            AUTH_TOKENS=f"messaging users:read {READ_TOKEN}",
            KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
            KAFKA_TOPIC=topic_name,
            RELAY_POLL_INTERVAL_S="0.2",
            SHUTDOWN_GRACE_S="1",
            # The trace under test reaches UserExists' query. With the index of every
            # user, an id created while the index loads is in its snapshot and is
            # answered from memory: no query span (and the trace's only SELECT users
            # would be GetUser's).
            STATE_INDEX_MAX_USERS="0",
            **otel,
        )
        async with Service("auth-service", "serve", env=env) as serve:
            await serve.wait_until_up(lambda: _serving(target))
            async with admin_stub(target) as admin:
                alice = (await create_user(admin)).id

                # The insert: the example service validates alice, then inserts.
                example = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "examples/messaging_add_member.py",
                    *("--target", target, "--token", READ_TOKEN),
                    *("--database-url", new_database(), alice),
                    cwd=REPO,
                    env={**clean_env(), **otel, "OTEL_SERVICE_NAME": "messaging"},
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await asyncio.wait_for(example.communicate(), 60)
                assert example.returncode == 0, err.decode()
                assert '"added": true' in out.decode()
                spans = await asyncio.to_thread(
                    sink.wait_for, _has("add group member", "SELECT users")
                )
                insert = _one(spans, "add group member")
                lookup = _one(spans, "auth_client.lookup")
                rpc = _one(spans, "auth.v1.AuthService/UserExists", CLIENT)
                call = _one(spans, "auth.v1.AuthService/UserExists", SERVER)
                query = next(
                    s for s in spans if s.name == "SELECT users" and s.trace_id == call.trace_id
                )
                _child(insert, lookup)
                _child(lookup, rpc)
                _child(rpc, call)
                _child(call, query)
                assert (insert.service, call.service) == ("messaging", "auth-service")
                assert call.attributes["auth.caller"] == "messaging"
                assert lookup.attributes["auth_client.cache.hit"] is False
                assert (call.trace_id, call.span_id) in query.links
                inserted = _one(spans, "INSERT group_members")
                _child(insert, inserted)

                # The deletion: the example consumer cleans up after alice.
                consumer = Proc.script(
                    "examples/cleanup_messaging.py",
                    *("--bootstrap", kafka_bootstrap, "--topic", topic_name),
                    *("--database-url", new_database(), "--group", f"g-{uuid.uuid4().hex[:8]}"),
                    env={**otel, "OTEL_SERVICE_NAME": "messaging-cleanup"},
                )
                await consumer.start()
                try:
                    await admin.DeleteUser(
                        admin_pb2.DeleteUserRequest(user_id=alice), metadata=ADMIN_MD, timeout=10
                    )
                    spans = await asyncio.to_thread(sink.wait_for, _has("handle user_deleted"), 60)
                finally:
                    assert await consumer.terminate() == 0, consumer.stderr()
        # serve has stopped: everything it buffered is exported.

    delete = _one(spans, "auth.v1.UserAdminService/DeleteUser", SERVER)
    transaction = next(
        s for s in spans if s.name == "UPDATE users" and s.trace_id == delete.trace_id
    )
    send = _one(spans, f"send {topic_name}", PRODUCER)
    process = _one(spans, f"process {topic_name}", CONSUMER)
    handle = _one(spans, "handle user_deleted")
    _child(delete, transaction)
    _child(transaction, send)
    _child(send, process)
    _child(process, handle)
    assert (send.service, process.service) == ("auth-service", "messaging-cleanup")
    assert process.attributes["messaging.destination.name"] == topic_name
    assert handle.attributes["auth_client.attempt"] == 1
