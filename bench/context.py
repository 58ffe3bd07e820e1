"""What every benchmark gets: options, the load generator, the dataset and its
sampled ids, and the running single-process server."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from bench.dataset import Dataset, Sample
from bench.load import Generator
from bench.server import Features, ServerProcess


@dataclass(frozen=True)
class Options:
    quick: bool = False
    users: int = 1_000_000
    duration: float = 10.0  # seconds per measured run
    rounds: int = 3  # alternating runs of a figure and its reference; medians reported
    processes: int = 4  # load-generator processes
    connections: int = 2  # HTTP/2 connections per generator process
    streams: int = 16  # calls in flight per connection

    @classmethod
    def make(
        cls,
        *,
        quick: bool,
        users: int | None = None,
        duration: float | None = None,
        processes: int | None = None,
        connections: int | None = None,
        streams: int | None = None,
    ) -> Options:
        if quick:
            base = cls(quick=True, users=users or 100_000, duration=duration or 3.0, rounds=1)
        else:
            base = cls(users=users or 1_000_000, duration=duration or 10.0)
        return dataclasses.replace(
            base,
            processes=processes or base.processes,
            connections=connections or base.connections,
            streams=streams or base.streams,
        )

    @property
    def warmup(self) -> float:
        return min(2.0, self.duration / 2)


@dataclass
class Context:
    options: Options
    generator: Generator
    features: Features
    dataset: Dataset | None = None
    sample: Sample = field(default_factory=Sample)
    server: ServerProcess | None = None
    idle_rss: int = 0

    @property
    def db(self) -> Dataset:
        assert self.dataset is not None
        return self.dataset

    @property
    def srv(self) -> ServerProcess:
        assert self.server is not None
        return self.server

    _taken: dict[str, int] = field(default_factory=dict)

    def take(self, kind: str, count: int) -> list[str]:
        """`count` ids of `kind` ("active" or "deleted") no other benchmark got."""
        pool = self.sample.active if kind == "active" else self.sample.deleted
        start = self._taken.get(kind, 0)
        ids = pool[start : start + count]
        if len(ids) < count:
            raise RuntimeError(f"sample too small: {kind} ids {start}..{start + count}")
        self._taken[kind] = start + count
        return [str(i) for i in ids]

    def remaining(self, kind: str) -> int:
        pool = self.sample.active if kind == "active" else self.sample.deleted
        return len(pool) - self._taken.get(kind, 0)
