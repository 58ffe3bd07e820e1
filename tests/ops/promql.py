"""What the files in deploy/ query, read with a real PromQL parser (promql-parser), and
checked against what real processes export.

- `queries()`: every PromQL expression of deploy/prometheus/alerts.yml and of the
  Grafana dashboard (panel targets and template-variable queries), with Grafana's
  interval variables replaced so the parser accepts them.
- `references(expr)`: each vector selector (metric name + matchers) and each label an
  aggregation (`by`/`without`) or vector matching (`on`/`ignoring`/`group_*`) uses.
- `Exported`: the sample names, label names and label values of real scrapes, plus the
  labels Prometheus adds to every target (`job`, `instance`, and what
  deploy/prometheus/prometheus.yml relabels in), and the synthetic `up`.
- `problems(...)`: every metric, label or label value a query names that nothing
  exports.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.support import REPO

if TYPE_CHECKING:
    from collections.abc import Iterator

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = REPO / "deploy" / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "auth-service.json"

# Grafana's built-in interval variables are not PromQL; any duration stands in.
_GRAFANA_INTERVALS = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__\w+)\}")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*(?P<label>\w+)\)$")
# A regex that is only literal alternatives (`Unavailable|Internal`): each one must exist.
_LITERAL_ALTERNATION = re.compile(r"^[\w.:/-]+(\|[\w.:/-]+)*$")


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    label: str | None = None  # for label_values(selector, label)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def queries() -> list[Query]:
    found = [Query(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    board = dashboard()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found.append(Query(f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.match(variable["query"]["query"])
        assert match, f"variable {variable['name']}: only label_values(...) queries are checked"
        found.append(
            Query(f"variable ${variable['name']}", match["selector"], label=match["label"])
        )
    return found


# Metric names of ours: a code span in the docs naming one is checked like a query.
OUR_PREFIXES = ("grpc_server_", "db_pool_", "outbox_", "auth_client_")
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))


def doc_queries() -> list[Query]:
    """Every `code span` of README.md and docs/*.md that is PromQL naming one of our
    metrics (`grpc_server_handled_total{grpc_code="Unavailable"}`, a bare name in a
    table, ...). Spans that are not PromQL (`auth_client_*_total`) are prose."""
    found = []
    for doc in DOCS:
        for span in sorted(set(re.findall(r"`([^`\n]+)`", doc.read_text()))):
            if re.search(r"[<*]|\.\.\.", span):  # a pattern of names, not a query
                continue
            try:
                selectors = references(span).selectors
            except (ValueError, AssertionError):
                continue
            if any(s.name.startswith(OUR_PREFIXES) for s in selectors):
                found.append(Query(f"{doc.relative_to(REPO)}: `{span}`", span))
    return found


def parse(expr: str) -> promql_parser.Expr:
    return promql_parser.parse(_GRAFANA_INTERVALS.sub("5m", expr))


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]  # (label, op: = != =~ !~, value)


@dataclass
class References:
    selectors: list[Selector] = field(default_factory=list)
    # (label, the metric names it must be found on: any one of them)
    labels: list[tuple[str, frozenset[str]]] = field(default_factory=list)


_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def _selectors_under(node: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    out: list[promql_parser.VectorSelector] = []

    def visit(child: promql_parser.Expr) -> None:
        if isinstance(child, promql_parser.VectorSelector):
            out.append(child)

    promql_parser.walk(node, pre_visit=visit)
    return out


def references(expr: str) -> References:
    tree = parse(expr)
    refs = References()

    def names(node: promql_parser.Expr) -> frozenset[str]:
        return frozenset(s.name for s in _selectors_under(node) if s.name)

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"{expr}: a selector without a metric name"
            assert not node.matchers.or_matchers, f"{expr}: `or` matchers are not checked"
            refs.selectors.append(
                Selector(
                    node.name,
                    [(m.name, _OPS[str(m.op)], m.value) for m in node.matchers.matchers],
                )
            )
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            under = names(node.expr)
            refs.labels.extend((label, under) for label in node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            under = names(node.lhs) | names(node.rhs)
            matching = node.modifier.matching
            if matching is not None:
                refs.labels.extend((label, under) for label in matching.labels or ())
            refs.labels.extend((label, under) for label in node.modifier.group_labels or ())

    promql_parser.walk(tree, pre_visit=visit)
    return refs


def scrape_jobs() -> dict[str, dict[str, Any]]:
    """deploy/prometheus/prometheus.yml's scrape jobs by name."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def target_labels() -> set[str]:
    """Labels Prometheus puts on every sample of a target: job, instance, and those
    the scrape config's relabeling writes."""
    labels = {"job", "instance"}
    for job in scrape_jobs().values():
        for rule in job.get("relabel_configs", []):
            if "target_label" in rule:
                labels.add(rule["target_label"])
    return labels


Labels = dict[str, set[str]]


class Exported:
    """What one process exports: sample name -> label name -> values."""

    def __init__(self, text: str, *, prefixes: tuple[str, ...] = ()) -> None:
        self.samples: dict[str, Labels] = defaultdict(lambda: defaultdict(set))
        self.families: dict[str, str] = {}  # family name -> type
        for family in text_string_to_metric_families(text):
            if prefixes and not family.name.startswith(prefixes):
                continue
            self.families[family.name] = family.type
            for sample in family.samples:
                labels = self.samples[sample.name]
                for key, value in sample.labels.items():
                    labels[key].add(value)
                # A sample with no labels still makes the name exist.
                labels.setdefault("__name__", set()).add(sample.name)


def _value_problem(op: str, value: str, values: set[str]) -> str | None:
    if "$" in value:  # a Grafana template variable: its values come from a query
        return None
    if op in {"=", "!="}:
        return None if value in values else f"no value {value!r} (have {sorted(values)})"
    if _LITERAL_ALTERNATION.match(value):
        missing = [v for v in value.split("|") if v not in values]
        return f"no value(s) {missing} (have {sorted(values)})" if missing else None
    pattern = re.compile(value)
    if op == "=~" and not any(pattern.fullmatch(v) for v in values):
        return f"no value matches {value!r} (have {sorted(values)})"
    return None


def problems(
    query: Query, processes: dict[str, Exported], client: Exported, *, anywhere: bool = False
) -> list[str]:
    """Everything `query` names that the processes do not export. `processes` maps the
    scrape jobs of prometheus.yml to the process each one scrapes; selectors without
    such a job (auth_client_* in the calling services' jobs) are looked up in `client`.
    With `anywhere` (the docs' examples, which leave the job out), any process will do."""
    check = _QueryCheck(query, processes, client, anywhere)
    refs = references(query.expr)
    if not refs.selectors:
        check.out.append(f"{query.where}: queries no metric")
    for selector in refs.selectors:
        check.selector(selector)
    check.label_uses(refs)
    return check.out


@dataclass
class _QueryCheck:
    """The problems of one query, collected in `out`."""

    query: Query
    processes: dict[str, Exported]
    client: Exported
    anywhere: bool
    targets: set[str] = field(default_factory=target_labels)
    out: list[str] = field(default_factory=list)

    @property
    def every_source(self) -> list[Exported]:
        return [*self.processes.values(), self.client]

    def sources(self, selector: Selector) -> list[tuple[str, Exported]]:
        """(scrape job, process) pairs that `selector` may be answered by."""
        if self.anywhere:
            candidates = [*self.processes.items(), ("client", self.client)]
            names = {selector.name, f"{selector.name}_count"}
            having = [(n, e) for n, e in candidates if names & set(e.samples)]
            return having[:1] or candidates[:1]
        jobs = set(self.processes)
        for label, op, value in selector.matchers:
            if label == "job" and op in {"=", "=~"} and "$" not in value:
                wanted = value.split("|") if op == "=~" else [value]
                unknown = [job for job in wanted if job not in jobs]
                if unknown:
                    self.out.append(
                        f"{self.query.where}: job {unknown} is not a scrape job of "
                        f"{PROMETHEUS_CONFIG.name} ({sorted(jobs)})"
                    )
                return [(job, self.processes[job]) for job in wanted if job in jobs]
        return [("client", self.client)]

    def exported_labels(self, name: str, where: Exported) -> Labels | None:
        if name == "up":  # synthetic: one per target, with the target's labels only
            return {
                "job": set(self.processes),
                **{label: set() for label in self.targets - {"job"}},
            }
        found = where.samples.get(name)
        if found is None and self.anywhere:  # prose may name a histogram by its family name
            found = where.samples.get(f"{name}_count")
        if found is None:
            return None
        return {**found, **{label: found.get(label, set()) for label in self.targets}}

    def selector(self, selector: Selector) -> None:
        for source, exported in self.sources(selector):
            labels = self.exported_labels(selector.name, exported)
            where = f"{self.query.where}: {selector.name} (scrape of {source})"
            if labels is None:
                self.out.append(f"{where}: not exported")
                continue
            for label, op, value in selector.matchers:
                if label not in labels:
                    self.out.append(f"{where}: no label {label!r}")
                elif label not in self.targets or (label == "job" and selector.name == "up"):
                    problem = _value_problem(op, value, labels[label])
                    if problem:
                        self.out.append(f"{where}: label {label}: {problem}")

    def label_uses(self, refs: References) -> None:
        """Labels the query groups or joins by, and label_values' label, exist."""
        for label, names in refs.labels:
            if label not in self.targets and not any(
                label in (exported.samples.get(name) or {})
                for name in names
                for exported in self.every_source
            ):
                self.out.append(
                    f"{self.query.where}: label {label!r} is on none of {sorted(names)}"
                )
        wanted = self.query.label
        if wanted is not None and not any(
            wanted in (exported.samples.get(s.name) or {}) or wanted in self.targets
            for s in refs.selectors
            for exported in self.every_source
        ):
            self.out.append(f"{self.query.where}: label_values label {wanted!r} is not exported")


def queried_names() -> set[str]:
    return {s.name for q in queries() for s in references(q.expr).selectors}


def uncovered(families: dict[str, str], names: set[str]) -> Iterator[str]:
    """Exported families no query reads (any of a histogram's series counts; the
    `*_created` timestamps prometheus-client adds to its counters are not metrics)."""
    created = {f"{family}_created" for family, kind in families.items() if kind == "counter"}
    for family, kind in sorted(families.items()):
        if family in created:
            continue
        forms = {family, f"{family}_total", f"{family}_bucket", f"{family}_sum"}
        forms.add(f"{family}_count")
        if kind == "counter":
            forms = {f"{family}_total"}
        if not forms & names:
            yield family
