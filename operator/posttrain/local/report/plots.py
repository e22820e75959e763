"""Charts as PNG files, drawn with matplotlib's Agg backend (skipped when matplotlib is missing)."""

from __future__ import annotations

from pathlib import Path

from posttrain.local.report.model import BarChart, Chart


def draw(chart: Chart, path: Path) -> bool:
    """Draw a chart to a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    if isinstance(chart, BarChart):
        groups = list(chart.series)
        width = 0.8 / max(len(groups), 1)
        for index, group in enumerate(groups):
            xs = [i + (index - (len(groups) - 1) / 2) * width for i in range(len(chart.categories))]
            values = chart.series[group]
            errors = chart.errors.get(group)
            yerr = None
            if errors:
                yerr = [
                    [max(v - low, 0.0) for v, (low, _) in zip(values, errors, strict=True)],
                    [max(high - v, 0.0) for v, (_, high) in zip(values, errors, strict=True)],
                ]
            axes.bar(xs, values, width=width, label=group, yerr=yerr, capsize=3 if yerr else 0)
        axes.set_xticks(
            range(len(chart.categories)), chart.categories, rotation=20 if len(chart.categories) > 5 else 0
        )
        if len(groups) > 1:
            axes.legend()
    else:
        for name, points in chart.series.items():
            axes.plot(
                [x for x, _ in points],
                [y for _, y in points],
                marker="o" if len(points) < 30 else None,
                markersize=3,
                label=name,
            )
        axes.set_xlabel(chart.xlabel)
        axes.legend()
    axes.set_ylabel(chart.ylabel)
    axes.set_title(chart.title, fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True
