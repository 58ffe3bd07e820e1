"""The results table (stdout and bench/RESULTS.md).

RESULTS.md keeps everything outside the generated block (between the two marker
comments) as written by hand, so a rerun replaces the figures and keeps the
history of before/after entries.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

START = "<!-- bench:generated:start (rewritten by `python -m bench`; edit outside) -->"
END = "<!-- bench:generated:end -->"

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

_TEMPLATE = f"""# Benchmark results

Run from the repository root: `.venv/bin/python -m bench` (see `--help`).

{START}
{END}

## History

Hand-written: each fast-path change with its before/after figures (same machine,
same command). Reruns of the benchmark do not touch this section.
"""


@dataclass
class Row:
    figure: str
    value: str
    reference: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    # When a target is not met: the measured reason, from this run's own figures.
    why: str = ""

    @property
    def verdict(self) -> str:
        if self.met is None:
            return ""
        return "met" if self.met else "**not met**"


@dataclass
class Section:
    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def row(self, *args: object, **kwargs: object) -> Row:
        row = Row(*args, **kwargs)  # type: ignore[arg-type]
        self.rows.append(row)
        return row


def fmt_int(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[int], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return float(ordered[index])


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(sections: list[Section]) -> str:
    lines = [
        "| Figure | Value | Reference (same run) | Ratio | Target | |",
        "|---|---:|---|---:|---|---|",
    ]
    for section in sections:
        lines.append(f"| **{_cell(section.title)}** | | | | | |")
        lines.extend(
            f"| {_cell(r.figure)} | {_cell(r.value)} | {_cell(r.reference)} | "
            f"{fmt_ratio(r.ratio)} | {_cell(r.target)} | {r.verdict} |"
            for r in section.rows
        )
    return "\n".join(lines)


def notes(sections: list[Section]) -> str:
    return "\n".join(
        f"- **{section.title}**: " + " ".join(section.notes)
        for section in sections
        if section.notes
    )


def reasons(sections: list[Section]) -> str:
    """One item per target not met: the figure, and why, measured in the same run."""
    return "\n".join(
        f"- **{row.figure}**: {row.why}"
        for section in sections
        for row in section.rows
        if row.met is False and row.why
    )


def generated_block(header: str, sections: list[Section]) -> str:
    parts = [header, "", table(sections)]
    why = reasons(sections)
    if why:
        parts += ["", "Targets not met in this run, and the reason measured in it:", "", why]
    text = notes(sections)
    if text:
        parts += ["", "How each figure was measured:", "", text]
    return "\n".join(parts)


def write_results(block: str, path: Path = RESULTS) -> None:
    text = path.read_text() if path.exists() else _TEMPLATE
    if START not in text or END not in text:
        text = _TEMPLATE + "\n" + text
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{block}\n{END}{tail}")
