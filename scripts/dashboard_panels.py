"""The panels of the Grafana dashboard deploy/grafana/auth-service.json, as data.

Edit the panels here (the client row is in dashboard_client_panels.py);
scripts/gen_dashboard.py lays them out and writes the JSON.
Server panels select the scrape jobs of deploy/prometheus/prometheus.yml
(`auth-service`, `auth-relay`), as deploy/prometheus/alerts.yml does; client panels
read auth_client_* from the calling services' own jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
API = 'job="auth-service"'
API_CALLER = 'job="auth-service", caller=~"$caller"'
OUTBOX = 'job=~"auth-service|auth-relay"'
CLIENT = 'job=~"$client_job"'
RATE = "[$__rate_interval]"
# Codes that mean auth-service failed the call (the caller did nothing wrong);
# NotFound, InvalidArgument, AlreadyExists, Unauthenticated, ... are answers.
SERVER_ERRORS = "Unknown|DeadlineExceeded|Unimplemented|Internal|Unavailable|DataLoss"
WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    width: int = 12
    kind: str = "timeseries"
    options: dict[str, Any] = field(default_factory=dict)


def q(expr: str, legend: str) -> Query:
    return Query(" ".join(expr.split()), legend)


Row = tuple[str, tuple[Panel, ...]]

SERVER_ROWS: tuple[Row, ...] = (
    (
        "API (auth-service serve)",
        (
            Panel(
                "Calls by method",
                "Calls answered per second, by method (any status code).",
                (
                    q(
                        f"sum by (grpc_service, grpc_method) (rate(grpc_server_handled_total{{{API_CALLER}}}{RATE}))",
                        "{{grpc_method}}",
                    ),
                ),
                unit="reqps",
                width=8,
            ),
            Panel(
                "Answers by code (not OK)",
                "Calls per second answered with a status other than OK, by code. NotFound is "
                "a normal answer; Unavailable means the database is unreachable or stalled; "
                "ResourceExhausted a limit was hit.",
                (
                    q(
                        f'sum by (grpc_code) (rate(grpc_server_handled_total{{{API_CALLER}, grpc_code!="OK"}}{RATE}))',
                        "{{grpc_code}}",
                    ),
                ),
                unit="reqps",
                width=8,
            ),
            Panel(
                "Server error ratio by method",
                f"Share of calls auth-service failed ({SERVER_ERRORS.replace('|', ', ')}), "
                "by method. The AuthServiceUnavailable alert fires above 1% of Unavailable.",
                (
                    q(
                        f'sum by (grpc_method) (rate(grpc_server_handled_total{{{API_CALLER}, grpc_code=~"{SERVER_ERRORS}"}}{RATE}))'
                        f" / sum by (grpc_method) (rate(grpc_server_handled_total{{{API_CALLER}}}{RATE}))",
                        "{{grpc_method}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Latency p50 / p99 by method",
                "Time to answer, from the grpc_server_handling_seconds histogram (buckets "
                "from 0.5 ms to 10 s), and the mean over all methods (sum / count). The AuthServiceSlowAnswers alert fires when an "
                "AuthService method's p99 stays above 100 ms.",
                (
                    q(
                        "histogram_quantile(0.5, sum by (le, grpc_method) "
                        f"(rate(grpc_server_handling_seconds_bucket{{{API_CALLER}}}{RATE})))",
                        "p50 {{grpc_method}}",
                    ),
                    q(
                        "histogram_quantile(0.99, sum by (le, grpc_method) "
                        f"(rate(grpc_server_handling_seconds_bucket{{{API_CALLER}}}{RATE})))",
                        "p99 {{grpc_method}}",
                    ),
                    q(
                        f"sum(rate(grpc_server_handling_seconds_sum{{{API_CALLER}}}{RATE}))"
                        f" / sum(rate(grpc_server_handling_seconds_count{{{API_CALLER}}}{RATE}))",
                        "mean (all methods)",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Calls in flight",
                "Calls started but not yet answered (started - handled), over all replicas.",
                (
                    q(
                        f"sum(grpc_server_started_total{{{API_CALLER}}})"
                        f" - sum(grpc_server_handled_total{{{API_CALLER}}})",
                        "in flight",
                    ),
                ),
            ),
            Panel(
                "Calls by caller",
                "Calls per second by calling service (the token's caller name; anonymous "
                "= no known token).",
                (
                    q(
                        f"sum by (caller) (rate(grpc_server_started_total{{{API_CALLER}}}{RATE}))",
                        "{{caller}}",
                    ),
                ),
                unit="reqps",
                width=8,
            ),
            Panel(
                "Throttled callers",
                "Calls per second answered RESOURCE_EXHAUSTED, by caller: over its rate or "
                "in-flight limit, or a request larger than MAX_REQUEST_BYTES.",
                (
                    q(
                        f'sum by (caller) (rate(grpc_server_handled_total{{{API_CALLER}, grpc_code="ResourceExhausted"}}{RATE}))',
                        "{{caller}}",
                    ),
                ),
                unit="reqps",
                width=8,
            ),
            Panel(
                "Messages received / sent",
                "Request messages received and responses sent per second (unary: one "
                "each; a refused or failed call sends none).",
                (
                    q(
                        f"sum(rate(grpc_server_msg_received_total{{{API_CALLER}}}{RATE}))",
                        "received",
                    ),
                    q(f"sum(rate(grpc_server_msg_sent_total{{{API_CALLER}}}{RATE}))", "sent"),
                ),
                unit="reqps",
                width=8,
            ),
            Panel(
                "Database pool use by replica",
                "Connections checked out / DB_POOL_MAX_SIZE, per replica. The "
                "AuthServicePoolSaturated alert fires above 90% for 10 minutes.",
                (
                    q(
                        f"db_pool_in_use{{{API}}} / db_pool_max_size{{{API}}}",
                        "{{instance}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Database connections",
                "Open, checked-out and idle connections of every replica's pool, and the "
                "most they may open.",
                (
                    q(f"sum(db_pool_size{{{API}}})", "open"),
                    q(f"sum(db_pool_in_use{{{API}}})", "in use"),
                    q(f"sum(db_pool_idle{{{API}}})", "idle"),
                    q(f"sum(db_pool_max_size{{{API}}})", "max"),
                ),
                width=8,
            ),
            Panel(
                "Targets up",
                "Scrape targets answering, by job (API replicas, relays).",
                (q('sum by (job) (up{job=~"auth-service|auth-relay"})', "{{job}}"),),
                width=8,
            ),
        ),
    ),
    (
        "Events (outbox relay)",
        (
            Panel(
                "Outbox backlog",
                "user_deleted events not yet acknowledged by Kafka (the whole outbox; every "
                "relay reports the same, hence max).",
                (q(f"max(outbox_unpublished_rows{{{OUTBOX}}})", "unpublished"),),
                width=8,
            ),
            Panel(
                "Oldest unpublished event",
                "The delivery lag. The AuthOutboxEventsLate alert fires above 5 minutes.",
                (q(f"max(outbox_oldest_unpublished_age_seconds{{{OUTBOX}}})", "age"),),
                unit="s",
                width=8,
            ),
            Panel(
                "Relay publishes",
                "Events acknowledged by Kafka, failed publishes (retried) and published "
                "rows pruned after OUTBOX_RETENTION_S, per second, over all relays.",
                (
                    q(f"sum(rate(outbox_events_published_total{{{OUTBOX}}}{RATE}))", "published"),
                    q(f"sum(rate(outbox_events_failed_total{{{OUTBOX}}}{RATE}))", "failed"),
                    q(f"sum(rate(outbox_rows_pruned_total{{{OUTBOX}}}{RATE}))", "pruned"),
                ),
                unit="ops",
                width=8,
            ),
        ),
    ),
    (
        "Reads and personal data",
        (
            Panel(
                "State cache hit ratio",
                "UserExists and BatchUserExists ids answered from the server's state cache "
                "(no query). Near 0 after a restart or while the cache is bypassed.",
                (
                    q(
                        f"sum(rate(auth_state_cache_hits_total{{{API}}}{RATE}))"
                        f" / (sum(rate(auth_state_cache_hits_total{{{API}}}{RATE}))"
                        f" + sum(rate(auth_lookup_lookups_total{{{API}}}{RATE})))",
                        "hit ratio",
                    ),
                ),
                unit="percentunit",
                width=6,
            ),
            Panel(
                "Lookups per query",
                "Cache misses merged into one state query (above 1 under load), and the "
                "share of queries that waited for a collection window.",
                (
                    q(
                        f"sum(rate(auth_lookup_lookups_total{{{API}}}{RATE}))"
                        f" / sum(rate(auth_lookup_queries_total{{{API}}}{RATE}))",
                        "lookups per query",
                    ),
                    q(
                        f"sum(rate(auth_lookup_windows_total{{{API}}}{RATE}))"
                        f" / sum(rate(auth_lookup_queries_total{{{API}}}{RATE}))",
                        "windowed share",
                    ),
                ),
                width=6,
            ),
            Panel(
                "State cache and index",
                "Cache entries held per replica (STATE_CACHE_SIZE caps them), users in each "
                "replica's index of every user (0 while not loaded) and its ids changed "
                "since the load, index loads per second, and replicas whose cache and "
                "index are bypassed because their change feed is not listening.",
                (
                    q(f"auth_state_cache_entries{{{API}}}", "{{instance}} cache"),
                    q(f"auth_state_index_users{{{API}}}", "{{instance}} index"),
                    q(f"auth_state_index_stale{{{API}}}", "{{instance}} changed since load"),
                    q(f"sum(rate(auth_state_index_loads_total{{{API}}}{RATE}))", "loads/s"),
                    q(
                        f"count(auth_state_cache_enabled{{{API}}} == 0) or vector(0)",
                        "bypassed replicas",
                    ),
                ),
                width=6,
            ),
            Panel(
                "Read replicas",
                "Whether each read replica (DATABASE_READ_URL) is read, how far behind the "
                "primary it is, the queries it answers, and the ids memory or a replica "
                "called NOT_FOUND that the primary was asked about again.",
                (
                    q(f"auth_db_replica_up{{{API}}}", "{{instance}} {{replica}} read"),
                    q(
                        f"max by (replica) (auth_db_replica_lag_seconds{{{API}}})",
                        "{{replica}} lag (s)",
                    ),
                    q(
                        f"sum by (replica) (rate(auth_db_replica_reads_total{{{API}}}{RATE}))",
                        "{{replica}} reads/s",
                    ),
                    q(
                        f"sum(rate(auth_lookup_confirmations_total{{{API}}}{RATE}))",
                        "NOT_FOUND confirmed on the primary/s",
                    ),
                ),
                width=6,
            ),
            Panel(
                "Personal data awaiting erasure",
                "Deleted users whose PII_RETENTION_S is over but whose data is not erased "
                "yet, the age of the oldest, and erasures per second.",
                (
                    q(f"max(users_erasure_pending_rows{{{API}}})", "pending"),
                    q(f"max(users_erasure_oldest_pending_age_seconds{{{API}}})", "oldest (s)"),
                    q(f"sum(rate(users_erased_total{{{API}}}{RATE}))", "erased/s"),
                ),
                width=6,
            ),
        ),
    ),
)
