"""The dashboard's last row: the auth_client of the calling services, read from their
own scrape jobs (`$client_job`). The server rows and the panel types are in
dashboard_panels.py.
"""

from __future__ import annotations

from dashboard_panels import CLIENT, RATE, Panel, Row, q

CLIENT_ROW: Row = (
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
)
