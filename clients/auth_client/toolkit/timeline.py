"""The rehearsal's timeline picture (PNG): the latency of every write (and read) on
the copy against time, log scale, with the 99th percentile of the writes per half
second as a line, and each playbook step as a shaded band named at the top.
Failed writes are red crosses at the top. Drawn with `png.Canvas`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from auth_client.toolkit.png import Canvas, Color
from auth_client.toolkit.rehearse_report import percentile

if TYPE_CHECKING:
    from pathlib import Path

    from auth_client.toolkit.rehearse_report import Sample, StepResult

__all__ = ["draw"]

WIDTH, HEIGHT = 1100, 480
LEFT, RIGHT, TOP, BOTTOM = 80, 1080, 76, 420
_LABEL_ROWS = 4  # step names stack in up to this many rows above the plot
BUCKET_S = 0.5
_INK: Color = (40, 40, 40)
_GRID: Color = (225, 225, 225)
_WRITE: Color = (70, 110, 200)
_READ: Color = (120, 190, 120)
_P99: Color = (200, 40, 40)
_ERROR: Color = (230, 0, 0)
_BANDS: tuple[Color, ...] = ((250, 240, 215), (225, 235, 250))


class _Axes:
    def __init__(self, seconds: float, top_ms: float) -> None:
        self.seconds = max(seconds, 1e-3)
        self.low = -1.0  # 0.1 ms
        self.high = max(2.0, math.ceil(math.log10(max(top_ms, 1.0))))

    def x(self, at: float) -> int:
        return LEFT + round((RIGHT - LEFT) * min(max(at, 0.0), self.seconds) / self.seconds)

    def y(self, ms: float) -> int:
        value = min(max(math.log10(max(ms, 1e-3)), self.low), self.high)
        return BOTTOM - round((BOTTOM - TOP) * (value - self.low) / (self.high - self.low))


def _frame(canvas: Canvas, axes: _Axes, title: str) -> None:
    canvas.text(LEFT, 12, title, _INK, 2)
    for power in range(int(axes.low), int(axes.high) + 1):
        y = axes.y(10.0**power)
        canvas.line(LEFT, y, RIGHT, y, _GRID)
        label = f"{10.0**power:g}"
        canvas.text(LEFT - 8 - canvas.text_width(label), y - 3, label, _INK)
    canvas.text(8, TOP - 14, "MS (LOG)", _INK)
    step = max(1, round(axes.seconds / 10))
    for second in range(0, int(axes.seconds) + 1, step):
        x = axes.x(second)
        canvas.line(x, BOTTOM, x, BOTTOM + 4, _INK)
        canvas.text(x - canvas.text_width(str(second)) // 2, BOTTOM + 8, str(second), _INK)
    canvas.text(LEFT, BOTTOM + 24, "SECONDS SINCE THE LOAD STARTED", _INK)
    canvas.line(LEFT, TOP, LEFT, BOTTOM, _INK)
    canvas.line(LEFT, BOTTOM, RIGHT, BOTTOM, _INK)


def _steps(canvas: Canvas, axes: _Axes, steps: list[StepResult]) -> None:
    ends = [0] * _LABEL_ROWS  # where each row of names is taken up to
    for i, step in enumerate(steps):
        x0, x1 = axes.x(step.started), axes.x(step.ended)
        canvas.box(x0, TOP, max(x1, x0 + 1), BOTTOM - 1, _BANDS[i % 2])
        color = _INK if step.ok else _ERROR
        width = canvas.text_width(step.name)
        left = min(x0 + 2, WIDTH - width - 2)
        row = next((r for r, end in enumerate(ends) if left >= end), i % _LABEL_ROWS)
        ends[row] = left + width + 6
        top = TOP - 10 * (_LABEL_ROWS - row)
        canvas.line(x0, top + 8, x0, BOTTOM, color)
        canvas.text(left, top, step.name, color)


def _samples(canvas: Canvas, axes: _Axes, samples: list[Sample]) -> None:
    for sample in samples:
        if sample.outcome == "error":
            x, y = axes.x(sample.at), axes.y(10.0**axes.high)
            canvas.line(x - 3, y - 3 + 6, x + 3, y + 3 + 6, _ERROR)
            canvas.line(x - 3, y + 3 + 6, x + 3, y - 3 + 6, _ERROR)
            continue
        color = _WRITE if sample.write else _READ
        canvas.dot(axes.x(sample.at), axes.y(sample.latency_ms), color, 1)
    buckets: dict[int, list[float]] = {}
    for sample in samples:
        if sample.write and sample.outcome != "error":
            buckets.setdefault(int(sample.at / BUCKET_S), []).append(sample.latency_ms)
    previous: tuple[int, int] | None = None
    for bucket in sorted(buckets):
        p99 = percentile(buckets[bucket], 99)
        assert p99 is not None
        point = (axes.x((bucket + 0.5) * BUCKET_S), axes.y(p99))
        if previous is not None:
            canvas.line(*previous, *point, _P99)
        canvas.dot(*point, _P99, 1)
        previous = point


def _legend(canvas: Canvas) -> None:
    x = RIGHT - 420
    for label, color in (
        ("WRITE", _WRITE),
        ("READ", _READ),
        ("WRITE P99", _P99),
        ("FAILED", _ERROR),
    ):
        canvas.dot(x, 16, color, 3)
        canvas.text(x + 8, 13, label, _INK)
        x += canvas.text_width(label) + 40


def draw(path: Path, samples: list[Sample], steps: list[StepResult], title: str) -> Path:
    """Write the timeline of `samples` with `steps` marked to `path`."""
    seconds = max([s.at for s in samples] + [s.ended for s in steps] + [1.0])
    top = max([s.latency_ms for s in samples] + [100.0])
    axes = _Axes(seconds, top)
    canvas = Canvas(WIDTH, HEIGHT)
    _steps(canvas, axes, steps)
    _frame(canvas, axes, title)
    _samples(canvas, axes, samples)
    _legend(canvas)
    canvas.save(path)
    return path
