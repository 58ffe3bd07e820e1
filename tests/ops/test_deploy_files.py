"""The alert rules and the dashboard as files: complete, tested, linked to the docs,
generated from scripts/gen_dashboard.py; and the drift checker of
tests/ops/test_deploy_metrics.py catching what it should. (promtool itself runs in
.ci/run: scripts/check_deploy.sh.)"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from tests.ops import promql
from tests.ops.support import REPO

GUIDE = (REPO / "docs" / "operations.md").read_text()
SEVERITIES = {"critical", "warning", "info"}


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_rule_has_for_severity_summary_description_and_a_runbook_entry() -> None:
    rules = promql.alert_rules()
    assert len(rules) >= 12
    anchors = _anchors(GUIDE)
    problems = []
    for rule in rules:
        name = rule["alert"]
        if not re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))):
            problems.append(f"{name}: no `for:`")
        if rule.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity not one of {sorted(SEVERITIES)}")
        notes = rule.get("annotations", {})
        if not notes.get("summary") or not notes.get("description"):
            problems.append(f"{name}: summary and description needed")
        page, _, anchor = notes.get("runbook_url", "").partition("#")
        if page != "docs/operations.md" or anchor not in anchors:
            problems.append(f"{name}: runbook_url {notes.get('runbook_url')!r} is no heading")
        if anchor != name.lower():
            problems.append(f"{name}: runbook_url should point at its own entry #{name.lower()}")
    assert problems == []


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    spec = yaml.safe_load(promql.ALERTS_TEST.read_text())
    assert spec["rule_files"] == [promql.ALERTS.name]
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in spec["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in promql.alert_rules()}
    assert (fires | quiet) <= names
    assert sorted(names - fires) == []
    assert sorted(names - quiet) == []


def test_every_query_parses_and_names_metrics() -> None:
    queries = promql.queries()
    assert len(queries) > 30
    for query in queries:
        refs = promql.references(query.expr)
        assert refs.selectors, query


def test_alerts_and_dashboard_select_the_scrape_jobs_of_the_example_config() -> None:
    jobs = set(promql.scrape_jobs())
    assert jobs == {"auth-service", "auth-relay"}
    used = set()
    for query in promql.queries():
        for selector in promql.references(query.expr).selectors:
            for label, _, value in selector.matchers:
                if label == "job" and "$" not in value:
                    used.update(value.split("|"))
            # Our generic server-side names are never queried across every job.
            if selector.name.startswith(("grpc_server_", "db_pool_", "outbox_", "up")):
                assert any(m[0] == "job" for m in selector.matchers), (query.where, selector)
    assert used == jobs


def test_dashboard_is_generated_and_well_formed() -> None:
    check = subprocess.run(
        [sys.executable, "scripts/gen_dashboard.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    board = promql.dashboard()
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            for name in re.findall(r"\$(\w+)", target["expr"]):
                assert name.startswith("__") or name in variables, (panel["title"], name)


def test_docs_point_at_the_deploy_files_and_name_every_alert() -> None:
    cited = set(re.findall(r"\((?:\.\./)?(deploy/[\w./-]+)\)", GUIDE))
    assert {
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts_test.yml",
        "deploy/prometheus/prometheus.yml",
        "deploy/grafana/auth-service.json",
        "deploy/kubernetes",
    } <= cited
    for path in cited:
        assert (REPO / path).exists(), path
    for rule in promql.alert_rules():
        assert f"### {rule['alert']}\n" in GUIDE, rule["alert"]


# --- the drift checker itself -------------------------------------------------

SERVE = """\
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_type="unary",grpc_service="auth.v1.AuthService",grpc_method="UserExists",grpc_code="OK",caller="a"} 1
grpc_server_handled_total{grpc_type="unary",grpc_service="auth.v1.AuthService",grpc_method="UserExists",grpc_code="Unavailable",caller="a"} 0
# TYPE grpc_server_handling_seconds histogram
grpc_server_handling_seconds_bucket{grpc_method="UserExists",le="0.1"} 1
grpc_server_handling_seconds_bucket{grpc_method="UserExists",le="+Inf"} 1
grpc_server_handling_seconds_sum{grpc_method="UserExists"} 0.01
grpc_server_handling_seconds_count{grpc_method="UserExists"} 1
# TYPE db_pool_in_use gauge
db_pool_in_use 1
# TYPE outbox_unpublished_rows gauge
outbox_unpublished_rows 0
"""
RELAY = "# TYPE outbox_unpublished_rows gauge\noutbox_unpublished_rows 0\n"
CLIENT = '# TYPE auth_client_rpcs_total counter\nauth_client_rpcs_total{client="x"} 1\n'


def _check(expr: str) -> list[str]:
    processes = {"auth-service": promql.Exported(SERVE), "auth-relay": promql.Exported(RELAY)}
    client = promql.Exported(CLIENT)
    return promql.problems(promql.Query("q", expr), processes, client)


@pytest.mark.parametrize(
    "expr",
    [
        'sum(rate(grpc_server_handled_total{job="auth-service",grpc_code="Unavailable"}[5m]))',
        'histogram_quantile(0.99, sum by (le, grpc_method) (rate(grpc_server_handling_seconds_bucket{job="auth-service"}[5m])))',
        'max(outbox_unpublished_rows{job=~"auth-service|auth-relay"}) > 0',
        'sum by (job, client) (rate(auth_client_rpcs_total{job=~"$client_job"}[$__rate_interval]))',
        'absent(up{job="auth-relay"} == 1)',
        'db_pool_in_use{job="auth-service"} / on (instance, pod) db_pool_in_use{job="auth-service"}',
    ],
)
def test_checker_accepts_what_is_exported(expr: str) -> None:
    assert _check(expr) == []


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ('rate(grpc_server_handled_total{job="auth-service",grpc_code="UNAVAILABLE"}[5m])', "no value 'UNAVAILABLE'"),
        ('rate(grpc_server_handled_total{job="auth-service",grpc_code=~"Internal|Unavailable"}[5m])', "no value(s) ['Internal']"),
        ('rate(grpc_server_handled_total{job="auth-service",grpc_code!="Ok"}[5m])', "no value 'Ok'"),
        ('rate(grpc_server_handled_total{job="auth-service",status="OK"}[5m])', "no label 'status'"),
        ('sum by (method) (rate(grpc_server_handled_total{job="auth-service"}[5m]))', "label 'method'"),
        ('rate(grpc_server_handling_seconds{job="auth-service"}[5m])', "not exported"),
        ('rate(grpc_server_requests_total{job="auth-service"}[5m])', "not exported"),
        ('outbox_unpublished_rows{job="auth-relays"}', "not a scrape job"),
        ('db_pool_in_use{job="auth-relay"}', "not exported"),
        ("db_pool_in_use", "not exported"),
        ('up{job="relay"}', "not a scrape job"),
        ('sum by (job) (up{job="auth-relay",pod=~".+",grpc_code="OK"})', "no label 'grpc_code'"),
        ('db_pool_in_use{job="auth-service"} / on (grpc_method) db_pool_in_use{job="auth-service"}', "label 'grpc_method'"),
        ("sum(rate(auth_client_rpcs{client='x'}[5m]))", "not exported"),
    ],
)  # fmt: skip
def test_checker_finds_drift(expr: str, why: str) -> None:
    found = _check(expr)
    assert any(why in problem for problem in found), found
