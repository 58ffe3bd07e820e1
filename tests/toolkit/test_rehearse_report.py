"""The rehearsal's verdict rule and its pictures, without a database: which finding
makes a table a no-go and what the one-line reason says; the timeline is a valid
PNG with the steps and the failures where they belong."""

from __future__ import annotations

from pathlib import Path

from auth_client.toolkit.png import Canvas
from auth_client.toolkit.rehearse_report import Report, Sample, StepResult, TableResult, percentile
from auth_client.toolkit.timeline import draw
from tests.toolkit.support import png_size


def table(**changes: object) -> TableResult:
    item = TableResult("messaging.messages", ["messages_sender_fk"], ["sender_id"])
    item.rollback_ok = True
    item.write_p99_ms = {"drop": 12.0}
    for key, value in changes.items():
        setattr(item, key, value)
    item.decide(max_write_p99_ms=1000)
    return item


def test_a_table_is_a_go_when_nothing_went_wrong() -> None:
    item = table(orphans_existing=3, orphans_created=2)
    assert item.verdict == "go"
    assert item.reason == (
        "writes p99 at most 12.0 ms during the schema steps; 5 orphan row(s) (2 written"
        " while the FKs were gone); the rollback restores every constraint"
    )


def test_each_finding_makes_a_no_go_with_its_reason() -> None:
    assert table(step_error="the drop migration failed: locked").reason == (
        "the drop migration failed: locked"
    )
    rollback = table(rollback_ok=False, rollback_problem="messages_sender_fk is back but NOT VALID")
    assert rollback.verdict == "no-go"
    assert rollback.reason == "rollback: messages_sender_fk is back but NOT VALID"
    failed = table(write_errors=2, first_error="DeadlockDetectedError: deadlock (during drop)")
    assert failed.reason == (
        "2 write(s) failed while the playbook ran: DeadlockDetectedError: deadlock (during drop)"
    )
    stalled = table(write_p99_ms={"indexes": 3.0, "drop": 2400.0})
    assert stalled.verdict == "no-go"
    assert stalled.reason == "writes stalled: p99 2400 ms during drop (--max-write-p99-ms 1000)"


def test_the_first_problem_is_the_reason() -> None:
    both = table(step_error="the drop migration failed: x", write_errors=1, first_error="y")
    assert both.reason == "the drop migration failed: x"


def test_the_exit_follows_every_table_and_the_source() -> None:
    report = Report("db", "db_rehearsal_1", kept=False, settings={}, source_unchanged=True)
    report.tables = [table(), table()]
    assert report.go
    report.tables.append(table(write_errors=1, first_error="x"))
    assert not report.go
    report.tables.pop()
    report.source_unchanged = False
    assert not report.go
    assert report.render_text().endswith(
        "verdict: no-go: the source's constraints or indexes changed during the rehearsal"
        " (rehearse again)"
    )


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 99) is None
    assert percentile([5.0], 50) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0


def test_the_canvas_writes_a_png_pixel_for_pixel(tmp_path: Path) -> None:
    canvas = Canvas(7, 5)
    canvas.line(0, 0, 6, 4, (255, 0, 0))
    canvas.save(tmp_path / "c.png")
    assert png_size(tmp_path / "c.png") == (7, 5)
    assert canvas.get(0, 0) == (255, 0, 0)
    assert canvas.get(6, 4) == (255, 0, 0)
    assert canvas.get(6, 0) == (255, 255, 255)


def test_the_timeline_marks_the_steps_and_the_failures(tmp_path: Path) -> None:
    steps = [StepResult("baseline", 0.0, 2.0), StepResult("drop", 2.0, 2.5, ok=False)]
    samples = [Sample(t / 10, 1.0 + t, 0.5, "t", "insert", "ok") for t in range(25)]
    samples.append(Sample(2.2, 5000.0, 5000.0, "t", "insert", "error", "boom"))
    path = draw(tmp_path / "t.png", samples, steps, "a title")
    assert png_size(path) == (1100, 480)
