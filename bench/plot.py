"""The latency-against-load picture (bench/latency.png), drawn with matplotlib when
it is installed (`pip install -e '.[bench]'`); without it the figures are still in
RESULTS.md and the JSON."""

from __future__ import annotations

from pathlib import Path

PICTURE = Path(__file__).resolve().parent / "latency.png"

Curve = dict[str, list[tuple[float, float, float]]]  # name -> [(rate, p50 ms, p99 ms)]


def latency_curve(curve: Curve, saturation: float, path: Path = PICTURE) -> Path | None:
    """p50 and p99 of each method against the offered rate; None without matplotlib."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    styles = {"UserExists": "tab:blue", "Health/Check": "tab:gray"}
    for name, points in curve.items():
        if not points:
            continue
        x = [100 * rate / saturation for rate, _, _ in points]
        color = styles.get(name, "tab:red")
        ax.plot(x, [p50 for _, p50, _ in points], "-o", color=color, label=f"{name} p50")
        ax.plot(x, [p99 for _, _, p99 in points], "--^", color=color, label=f"{name} p99")
    ax.set_xlabel(f"offered load, % of the lower saturated rate ({saturation:,.0f} req/s)")
    ax.set_ylabel("latency, ms (log scale)")
    ax.set_yscale("log")
    ax.grid(visible=True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("auth-service: UserExists vs Health/Check, latency against load")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
