"""`auth-service dev` traces as `serve` does: the OTEL_* variables alone turn export
on, and a bad one is named before anything starts."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import pytest

from auth_client.contract import auth_pb2, auth_pb2_grpc
from bench.otlp_sink import SERVER, OtlpSink
from tests.dev import REPO, DevProcess, dev_env

pytestmark = pytest.mark.slow


async def test_dev_exports_spans_when_otel_variables_say_so() -> None:
    with OtlpSink() as sink:
        env = dev_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
            OTEL_SERVICE_NAME="auth-dev-under-test",
        )
        with DevProcess(env=env) as dev:
            dev.read_banner()
            alice = dev.users["alice"]
            async with grpc.aio.insecure_channel(dev.target) as channel:
                reply = await auth_pb2_grpc.AuthServiceStub(channel).UserExists(
                    auth_pb2.UserExistsRequest(user_id=alice), timeout=5
                )
            assert reply.exists

            def served(spans: list) -> bool:  # type: ignore[type-arg]
                return any(
                    s.name == "auth.v1.AuthService/UserExists" and s.kind == SERVER for s in spans
                )

            spans = await asyncio.to_thread(sink.wait_for, served)
    span = next(s for s in spans if s.name == "auth.v1.AuthService/UserExists")
    assert span.service == "auth-dev-under-test"
    assert span.attributes["rpc.method"] == "UserExists"


def test_dev_names_a_bad_otel_variable_and_starts_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "auth_service", "dev", "--listen", "127.0.0.1:0"],
        env=dev_env(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="half"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "OTEL_TRACES_SAMPLER_ARG" in done.stderr
    assert "embedded PostgreSQL" not in done.stderr + done.stdout
