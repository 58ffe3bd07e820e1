"""Whether the topics the relay publishes to are in place, as production has them.

Production clusters run with `auto.create.topics.enable=false`: the topics, with the
partitions, replication factor and `min.insync.replicas` ops chose, are created by
ops (docs/operations.md, "Topics"), never by the relay. A relay whose topic is
missing would otherwise wait out every send's metadata timeout, holding its claimed
outbox rows locked, while aiokafka logs "not found in cluster metadata" lines that
name no fix. So the relay asks the brokers' metadata first (`TopicWatch.ready`):

- a **missing topic**, or a partition **without a leader**, stops publishing: one
  ERROR line names the topic and the command that creates it, then at most one a
  minute; the relay checks again at its backoff and publishes once it is there;
- an **under-replicated** partition (fewer in-sync replicas than replicas) is a
  WARNING only: with `acks=all` the brokers still accept writes while
  `min.insync.replicas` are in sync, and refuse them (a Kafka failure the relay
  retries) when not.

The check runs when the publisher starts and again after any Kafka failure, not
for every batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from auth_service.notices import RepeatingNotice

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger("auth_service.events.relay")

# What docs/operations.md recommends, and the fix a missing topic's line names.
PARTITIONS = 6
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2


@dataclass(frozen=True)
class TopicReport:
    """What the brokers' metadata says of the relay's topics."""

    missing: tuple[str, ...] = ()
    without_leader: tuple[str, ...] = ()  # "topic[partition]"
    under_replicated: tuple[str, ...] = ()  # "topic[partition] (isr/replicas)"

    @property
    def publishable(self) -> bool:
        return not self.missing and not self.without_leader


def report(metadata: Any, topics: Iterable[str]) -> TopicReport:
    """Read `metadata` (aiokafka's ClusterMetadata of every topic) for `topics`."""
    missing: list[str] = []
    leaderless: list[str] = []
    under: list[str] = []
    for topic in topics:
        partitions = metadata.partitions_for_topic(topic)
        if not partitions:
            missing.append(topic)
            continue
        for partition in sorted(partitions):
            found = metadata._partitions[topic][partition]
            if found.leader is None or found.leader < 0:
                leaderless.append(f"{topic}[{partition}]")
            elif len(found.isr) < len(found.replicas):
                under.append(
                    f"{topic}[{partition}] ({len(found.isr)}/{len(found.replicas)} in sync)"
                )
    return TopicReport(tuple(missing), tuple(leaderless), tuple(under))


def create_command(topic: str, bootstrap: str) -> str:
    """The Kafka command that creates `topic` as docs/operations.md recommends."""
    first = bootstrap.split(",", maxsplit=1)[0]
    return (
        f"kafka-topics.sh --bootstrap-server {first} --create --topic {topic}"
        f" --partitions {PARTITIONS} --replication-factor {REPLICATION_FACTOR}"
        f" --config min.insync.replicas={MIN_INSYNC_REPLICAS}"
    )


class TopicWatch:
    """The relay's view of its topics: `ready()` asks the brokers unless the last
    answer was good and nothing failed since (`suspect()`). `metadata(as_a_send=)`
    is `Publisher.metadata`."""

    def __init__(
        self,
        topics: Iterable[str],
        bootstrap: str,
        metadata: Callable[..., Awaitable[Any]],
    ) -> None:
        self.topics = tuple(dict.fromkeys(topics))
        self._bootstrap = bootstrap
        self._metadata = metadata
        self._ok = False
        self._missing = RepeatingNotice(log, level=logging.ERROR)
        self._degraded = RepeatingNotice(log, interval=300.0)
        self.last: TopicReport | None = None
        self.checks = 0  # metadata asked for

    def suspect(self) -> None:
        """A send failed: check the topics again before the next batch."""
        self._ok = False

    async def ready(self) -> bool:
        """Whether the relay may publish now (said once when it may not)."""
        if self._ok:
            return True
        self.checks += 1
        # Asked as a send asks (which creates the topics where the brokers do that),
        # unless they were missing at the last check: then quietly, until they exist.
        missing = self.last is not None and bool(self.last.missing)
        self.last = found = report(await self._metadata(as_a_send=not missing), self.topics)
        if found.missing:
            self._missing.notice(
                "outbox relay: Kafka topic %s does not exist on %s, and the relay does not"
                " create topics (production brokers run with auto.create.topics.enable=false);"
                " create it: %s; events wait in the outbox meanwhile",
                ", ".join(repr(t) for t in found.missing),
                self._bootstrap,
                "; ".join(create_command(t, self._bootstrap) for t in found.missing),
            )
        elif found.without_leader:
            self._missing.notice(
                "outbox relay: Kafka partitions without a leader: %s; events wait in the"
                " outbox until the cluster elects one",
                ", ".join(found.without_leader),
            )
        else:
            self._missing.clear(
                "outbox relay: Kafka topics %s are in place", ", ".join(self.topics)
            )
        if found.under_replicated:
            self._degraded.notice(
                "outbox relay: under-replicated Kafka partitions: %s; writes go on while"
                " min.insync.replicas are in sync",
                ", ".join(found.under_replicated),
            )
        else:
            self._degraded.clear("outbox relay: every Kafka partition is fully replicated again")
        self._ok = found.publishable
        return self._ok


__all__ = ["TopicReport", "TopicWatch", "create_command", "report"]
