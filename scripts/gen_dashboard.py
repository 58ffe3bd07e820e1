"""Generate the Grafana dashboard deploy/grafana/auth-service.json.

    python scripts/gen_dashboard.py            # rewrite the JSON
    python scripts/gen_dashboard.py --check    # exit 1 if the checked-in JSON is stale

The panels are data below: edit them here, not in the JSON. Server panels select
the scrape jobs of deploy/prometheus/prometheus.yml (`auth-service`, `auth-relay`),
as deploy/prometheus/alerts.yml does; client panels read auth_client_* from the
calling services' own jobs. tests/ops/test_deploy_metrics.py checks that every
metric, label and label value queried here is one a real server, relay and client
export, and that every exported metric has a panel.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "grafana" / "auth-service.json"

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


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
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
                "State cache",
                "Entries held per replica (STATE_CACHE_SIZE caps them) and replicas whose "
                "cache is bypassed because its change feed is not listening.",
                (
                    q(f"auth_state_cache_entries{{{API}}}", "{{instance}}"),
                    q(
                        f"count(auth_state_cache_enabled{{{API}}} == 0) or vector(0)",
                        "bypassed replicas",
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
    (
        "Clients (auth_client in the calling services)",
        (
            Panel(
                "Breaker state",
                "AuthClients whose circuit breaker is open or half-open, by service (job) and "
                "client name.",
                (
                    q(
                        f'sum by (job, client, state) (auth_client_breaker_state{{{CLIENT}, state!="closed"}})',
                        "{{job}}/{{client}} {{state}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                "Breaker openings",
                "Times a client's breaker opened (auth-service unreachable from that "
                "service). The AuthClientBreakerOpened alert fires on any.",
                (
                    q(
                        f"sum by (job, client) (increase(auth_client_breaker_opened_total{{{CLIENT}}}{RATE}))",
                        "{{job}}/{{client}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                "Cache hit ratio",
                "Lookups answered from the client's cache, without an RPC.",
                (
                    q(
                        f"sum by (job, client) (rate(auth_client_cache_hits_total{{{CLIENT}}}{RATE}))"
                        f" / (sum by (job, client) (rate(auth_client_cache_hits_total{{{CLIENT}}}{RATE}))"
                        f" + sum by (job, client) (rate(auth_client_cache_misses_total{{{CLIENT}}}{RATE})))",
                        "{{job}}/{{client}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Fallbacks and unavailable",
                "Answers served stale (SERVE_STALE), ids let in unverified (FAIL_OPEN: the "
                "AuthClientUnverifiedIds alert), and ServiceUnavailableError raised to the "
                "calling code, per second.",
                (
                    q(
                        f"sum by (job, client) (rate(auth_client_fallback_stale_total{{{CLIENT}}}{RATE}))",
                        "stale {{job}}/{{client}}",
                    ),
                    q(
                        f"sum by (job, client) (rate(auth_client_fallback_open_total{{{CLIENT}}}{RATE}))",
                        "unverified {{job}}/{{client}}",
                    ),
                    q(
                        f"sum by (job, client) (rate(auth_client_unavailable_total{{{CLIENT}}}{RATE}))",
                        "unavailable {{job}}/{{client}}",
                    ),
                ),
                unit="ops",
                width=8,
            ),
            Panel(
                "RPCs and coalesced lookups",
                "RPCs sent to auth-service, and lookups that joined another caller's pending "
                "lookup of the same id instead of sending their own, per second.",
                (
                    q(
                        f"sum by (job, client) (rate(auth_client_rpcs_total{{{CLIENT}}}{RATE}))",
                        "rpcs {{job}}/{{client}}",
                    ),
                    q(
                        f"sum by (job, client) (rate(auth_client_coalesced_total{{{CLIENT}}}{RATE}))",
                        "coalesced {{job}}/{{client}}",
                    ),
                ),
                unit="ops",
                width=8,
            ),
            Panel(
                "Ids per RPC",
                "Ids asked for per RPC: how much the client's batching merges concurrent "
                "lookups (1 = none).",
                (
                    q(
                        f"sum by (job, client) (rate(auth_client_ids_sent_total{{{CLIENT}}}{RATE}))"
                        f" / sum by (job, client) (rate(auth_client_rpcs_total{{{CLIENT}}}{RATE}))",
                        "{{job}}/{{client}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                "Cache entries",
                "Entries in each client's cache (several clients of one name add up).",
                (
                    q(
                        f"sum by (job, client) (auth_client_cache_entries{{{CLIENT}}})",
                        "{{job}}/{{client}}",
                    ),
                ),
                width=12,
            ),
            Panel(
                "Rollout: SHADOW and OFF modes",
                "While a service rolls auth_client out: SHADOW ids auth-service reported "
                "missing (the caller was told they exist), SHADOW checks that failed, and "
                "OFF-mode ids answered without a check, per second.",
                (
                    q(
                        f"sum by (job, client) (rate(auth_client_shadow_disagreements_total{{{CLIENT}}}{RATE}))",
                        "shadow disagreements {{job}}/{{client}}",
                    ),
                    q(
                        f"sum by (job, client) (rate(auth_client_shadow_failures_total{{{CLIENT}}}{RATE}))",
                        "shadow failures {{job}}/{{client}}",
                    ),
                    q(
                        f"sum by (job, client) (rate(auth_client_unchecked_total{{{CLIENT}}}{RATE}))",
                        "unchecked {{job}}/{{client}}",
                    ),
                ),
                unit="ops",
                width=12,
            ),
        ),
    ),
)


def _query_variable(name: str, label: str, query: str, ref_id: str) -> dict[str, Any]:
    """A multi-select dashboard variable over the values of one label (All = any)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": ref_id},
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {},
        "hide": 0,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
    }


VARIABLES: tuple[dict[str, Any], ...] = (
    {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "options": [],
        "refresh": 1,
        "regex": "",
    },
    _query_variable(
        "caller", "Caller", f"label_values(grpc_server_handled_total{{{API}}}, caller)", "callers"
    ),
    _query_variable(
        "client_job", "Calling service", "label_values(auth_client_rpcs_total, job)", "client_jobs"
    ),
)


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
            **panel.options,
        },
        "targets": [
            {
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                "range": True,
                "refId": chr(ord("A") + index),
            }
            for index, query in enumerate(panel.queries)
        ],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for title, row_panels in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        for panel in row_panels:
            if x + panel.width > WIDTH:
                x, y = 0, y + 8
            panels.append(_panel(panel, next_id, x, y))
            next_id += 1
            x += panel.width
        y += 8
    return {
        "title": "auth-service",
        "uid": "auth-service",
        "description": "auth-service API, outbox relay and the auth_client of calling "
        "services. Generated by scripts/gen_dashboard.py; see docs/operations.md.",
        "tags": ["auth-service"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": list(VARIABLES)},
        "panels": panels,
        "version": 1,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the JSON is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(
                f"stale: {OUT.relative_to(ROOT)}; run: python scripts/gen_dashboard.py",
                file=sys.stderr,
            )
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
