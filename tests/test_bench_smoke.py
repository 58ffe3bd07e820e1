"""Smoke tests of the benchmark harness (bench/): the modules import, the gRPC
framing h2load sends is what a real server accepts, errors hidden behind HTTP 200
are counted, and RESULTS.md keeps its hand-written part. No timings asserted."""

from __future__ import annotations

import importlib
import shutil
import struct
from pathlib import Path

import pytest

from auth_client.contract import auth_pb2
from auth_service.api.server import AuthServer
from bench import calls, grpcload, latency, reasons, report
from bench.load import H2Load, LoadResult, LoadSpec, grpc_frame, parse_h2load
from bench.measure import Measured, call_raw
from tests.helpers import create_user

MODULES = [
    "bench.run",
    "bench.serving",
    "bench.calls",
    "bench.latency",
    "bench.reasons",
    "bench.batch",
    "bench.inserts",
    "bench.workers",
    "bench.tracing",
    "bench.otlp_sink",
    "bench.external",
    "bench.pyload",
    "bench.bench_client",
    "bench.bench_relay",
    "bench.debezium",
    "bench.bench_replicas",
    "bench.bench_client_replica",
]
USER_EXISTS = "/auth.v1.AuthService/UserExists"


@pytest.mark.parametrize("name", MODULES)
def test_bench_module_imports(name: str) -> None:
    module = importlib.import_module(name)
    if name in {
        "bench.bench_client",
        "bench.bench_relay",
        "bench.bench_replicas",
        "bench.bench_client_replica",
    }:
        assert callable(module.run), "the runner calls run() of this module"


def test_grpc_frame_is_flag_length_message() -> None:
    message = auth_pb2.BatchUserExistsRequest(
        user_ids=[f"00000000-0000-4000-8000-{i:012d}" for i in range(1000)]
    ).SerializeToString()
    frame = grpc_frame(message)
    assert frame[0] == 0  # not compressed
    assert struct.unpack(">I", frame[1:5])[0] == len(message) > 0xFFFF // 2
    assert auth_pb2.BatchUserExistsRequest.FromString(frame[5:]).user_ids[999].endswith("999")


def test_h2load_parser_counts_errors_from_data_bytes() -> None:
    output = (
        "finished in 3.00s, 100.00 req/s, 1KB/s\n"
        "requests: 300 total, 300 started, 300 done, 300 succeeded, 0 failed, 0 errored, 0 timeout\n"
        "status codes: 300 2xx, 0 3xx, 0 4xx, 0 5xx\n"
        "traffic: 20KB (20000) total, 9KB (9000) headers (space savings 90.00%), 2.48KB (2538) data\n"
    )
    # 282 answers of 4 + 5 bytes; the other 18 "successes" were grpc-status errors.
    result = parse_h2load(output, response_size=4)
    assert (result.done, result.ok, result.failed) == (300, 282, 18)
    assert result.rps == 100.0


@pytest.fixture
def h2load() -> H2Load:
    binary = shutil.which("h2load")
    if binary is None:
        pytest.skip("h2load not installed (apt-get install nghttp2-client)")
    return H2Load(binary)


async def test_h2load_drives_a_real_server(h2load: H2Load, server: AuthServer, admin_stub) -> None:
    user = await create_user(admin_stub)
    good = auth_pb2.UserExistsRequest(user_id=user.id).SerializeToString()
    bad = auth_pb2.UserExistsRequest(user_id="not-a-uuid").SerializeToString()
    reply = await call_raw(server.address, USER_EXISTS, good, ())
    assert auth_pb2.UserExistsResponse.FromString(reply).exists

    def spec(body: bytes) -> LoadSpec:
        return LoadSpec(
            target=server.address,
            path=USER_EXISTS,
            bodies=[body],
            response_sizes=[len(reply)],
            connections=1,
            streams=2,
            duration=0.3,
            latencies=True,
        )

    answered = await h2load.run(spec(good))
    assert answered.done > 0
    assert answered.ok == answered.done
    assert answered.latencies_us  # per-request times from --log-file
    rejected = await h2load.run(spec(bad))  # INVALID_ARGUMENT, but HTTP 200
    assert rejected.done > 0
    assert rejected.ok == 0
    assert rejected.failed == rejected.done


async def test_grpcload_varies_the_request_per_call_against_a_real_server(
    server: AuthServer, admin_stub
) -> None:
    """bench/grpcload.c, compiled here: every call takes the next body of the
    sequence, so one run asks about many users; calls answered with an error (no
    message) are counted as failed; an open-loop rate is kept; latencies logged."""
    binary = grpcload.build()
    if binary is None:
        pytest.skip("no C compiler")
    users = [await create_user(admin_stub) for _ in range(3)]
    bodies = [auth_pb2.UserExistsRequest(user_id=u.id).SerializeToString() for u in users]
    bad = auth_pb2.UserExistsRequest(user_id="not-a-uuid").SerializeToString()
    assert server._lookup is not None
    before = server._lookup.lookups
    load = grpcload.GrpcLoad(binary)
    spec = LoadSpec(
        target=server.address,
        path=USER_EXISTS,
        bodies=[*bodies, bad],
        response_sizes=[0] * 4,
        connections=2,
        streams=4,
        duration=1.0,
        rate=200.0,
        latencies=True,
        workers=1,
    )
    result = await load.run(spec)
    assert 150 <= result.done <= 230  # about 200 calls at 200/s for 1 s
    # One call in four was malformed: answered, but without a message.
    assert result.failed == pytest.approx(result.done / 4, abs=2)
    assert result.ok + result.failed == result.done
    assert len(result.latencies_us) == result.done
    assert server._lookup.lookups - before >= 3  # the three users were all asked about


def test_results_rewrite_keeps_the_history(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    report.write_results("first table", path)
    text = path.read_text().replace("## History\n", "## History\n\n- fast path: 2x\n")
    path.write_text(text)
    report.write_results("second table", path)
    text = path.read_text()
    assert "second table" in text
    assert "first table" not in text
    assert "- fast path: 2x" in text


async def test_latency_loads_take_turns_and_pool_their_slices() -> None:
    """The latency targets compare loads measured in alternating slices: each load runs
    the same number of slices, no load always follows the same one, and each load's
    figures come from all of its slices."""
    order: list[str] = []

    def load(name: str) -> latency.Slice:
        async def run_slice(seconds: float) -> list[int]:
            assert seconds == latency.SLICE_S
            order.append(name)
            return [len(order) * 1000]

        return run_slice

    pooled = await latency.alternate({n: load(n) for n in ("a", "b", "c")}, slices=3)
    assert all(p.counted is None for p in pooled.values())  # no probe
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert pooled["a"].latencies_us == [1000, 6000, 8000]
    assert pooled["a"].p(50) == 6.0  # ms, over the pooled slices
    assert all(p.seconds > 0 and p.steal_s >= 0 for p in pooled.values())
    assert latency.slices_for(15.0) == 8
    assert latency.slices_for(0.5) == 1


async def test_latency_slices_count_what_the_probe_counts_during_each_load() -> None:
    """A missed latency target's reason uses the server's database lookups during
    each load's own slices: the probe is read before and after every slice."""
    total = 0.0

    def load(adds: float) -> latency.Slice:
        async def run_slice(seconds: float) -> list[int]:
            nonlocal total
            total += adds
            return [1000]

        return run_slice

    pooled = await latency.alternate(
        {"skewed": load(5), "health": load(0)}, slices=3, probe=lambda: total
    )
    assert pooled["skewed"].counted == 15
    assert pooled["health"].counted == 0
    # each slice's steal and p99 are kept, for the slice that can set the pooled p99
    assert len(pooled["skewed"].slices) == 3
    assert pooled["skewed"].stealiest()[1] == 1.0  # ms: every slice answered in 1,000 µs
    unreadable = await latency.alternate({"skewed": load(5)}, slices=1, probe=lambda: None)
    assert unreadable["skewed"].counted is None


def test_results_give_the_measured_reason_of_each_target_missed() -> None:
    """`python -m bench` shows each goal met or, where not, the reason measured in the
    same run: listed under the table for the rows that missed, and only for them."""
    section = report.Section("inserts", "Inserts")
    section.row("warm", "1 rows/s", "", 1.0, ">= 1.0", True).why = "not shown: met"
    section.row("cold", "1 rows/s", "", 0.5, ">= 0.8", False).why = reasons.cold_inserts(
        busy=0.97,
        fk_us=400,
        validated_us=700,
        plain_us=390,
        floor_us=(700, 430),
        rpcs_per_row=0.15625,  # 6.4 ids per RPC
    )
    section.row("plain", "1 rows/s")
    block = report.generated_block("header", [section])
    table, _, listed = block.partition(
        "Targets not met in this run, and the reason measured in it:"
    )
    assert "**not met**" in table
    assert "not shown" not in block
    (item,) = [line for line in listed.splitlines() if line.startswith("- ")]
    assert item.startswith("- **cold**: the cold runs kept 97% of the cores busy")
    # For 0.8 a row may cost 400 / 0.8 = 500 µs, 110 over an unchecked insert; it costs
    # 310 more, of which (700 + 430) / 6.4 = 177 µs are the gRPC floor, 133 per-id work.
    assert "may cost 500 µs, 110 µs more than an unchecked insert (390 µs)" in item
    assert "it costs 310 µs more" in item
    assert "The gRPC floor is 177 µs" in item
    assert "6.4 ids per RPC" in item
    assert "the other 133 µs are per-id work" in item
    assert report.reasons([report.Section("x", "all met")]) == ""


def test_skewed_stream_hands_each_run_the_next_calls() -> None:
    """Each skewed run gets the next stretch of the sequence: a run that replayed an
    earlier run's calls would find their ids in the server's cache."""
    stream = calls.Stream([bytes([i]) for i in range(10)])
    first, second = stream.take(4), stream.take(4)
    assert first == [bytes([i]) for i in range(4)]
    assert second == [bytes([i]) for i in range(4, 8)]
    assert not stream.wrapped
    assert stream.take(4) == [bytes([8]), bytes([9]), bytes([0]), bytes([1])]
    assert stream.wrapped
    assert stream.sent == 12
    assert len(stream.take(50)) == 10  # never more than the whole sequence


def test_a_missed_latency_target_names_the_slice_with_the_most_steal() -> None:
    """One 2 s slice with a steal burst can set a load's pooled p99 (History 9), so
    the reason names each load's stealiest slice beside the database share."""
    skewed = latency.Pooled(latencies_us=[1000] * 99 + [50_000], counted=20.0)
    skewed.slices = [(0.02, 4.0), (0.19, 118.0)]
    health = latency.Pooled(latencies_us=[1000] * 100, slices=[(0.03, 7.7), (0.01, 4.6)])
    cold = latency.Pooled(latencies_us=[2000] * 100)
    why = reasons.skewed_latency(skewed, health, cold)
    assert why.startswith("20.0% of the skewed calls went to the database")
    assert "took +1.00 ms against Health/Check at the median" in why
    assert "the skewed slice with the most steal had 19% and a p99 of 118.00 ms" in why
    assert "Health/Check's 3% and 7.70 ms" in why
    # the typical slice, which the burst does not move: (4 + 118) / 2 and (7.7 + 4.6) / 2
    assert "median of the slices' p99s was 61.00 ms against Health/Check's 6.15 ms" in why


def _run(rps: float, cpu_us: float, steal: float, seconds: float = 10.0) -> Measured:
    done = int(rps * seconds)
    return Measured(
        load=LoadResult(done=done, ok=done, seconds=seconds, rps=rps),
        cpu_s=cpu_us * done / 1e6,
        pg_cpu_s=0.0,
        rss_max=0,
        server_codes=None,
        log_problems=0,
        steal_share=steal,
    )


def test_a_missed_throughput_target_gives_the_cores_used_and_each_rounds_steal() -> None:
    """The server's event-loop thread limits both loads; the reason says how many
    cores the server got in each, and each round's ratio beside its steal, since a
    burst of steal in one run moves a ratio of medians (History 10)."""
    rounds = [
        (_run(2_000, 500, 0.02), _run(2_500, 440, 0.03)),
        (_run(1_800, 560, 0.22), _run(2_400, 450, 0.15)),
    ]
    why = reasons.saturated(530, 445, 0, rounds)
    assert why.startswith("the server spent 530 µs of CPU per UserExists against 445 µs")
    # cores: 2,000 x 500 µs = 1.00 and 1,800 x 560 µs = 1.008 (median 1.004);
    # 2,500 x 440 µs = 1.10 and 2,400 x 450 µs = 1.08 (median 1.09)
    assert "used 1.00 cores during the UserExists runs against 1.09 during" in why
    assert "0.80 (2% / 3%), 0.75 (22% / 15%)" in why
