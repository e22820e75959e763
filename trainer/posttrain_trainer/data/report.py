"""The distribution report: attributes before cleaning and after sampling, as JSON and PNG plots.

Inputs: the `Attributes` of the input rows (before) and of the dataset (after), the attributes to
report, the sampling targets, the row counts of each cleaning step and the slice sizes. Outputs, in
the `report` folder: `before.json` and `after.json` (per attribute: counts and shares of its values;
summary statistics and a histogram of tokens, characters, difficulty and quality scores; the shares
of the quality signals; `after.json` adds the targets against the achieved shares, the cleaning
steps and the slices), one PNG per attribute (shares before and after, the target marked) and
`pipeline.png` (rows through the cleaning steps). Plots use matplotlib's Agg backend: no display.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from posttrain_trainer.data.attributes import SIGNALS, Attributes

HISTOGRAM_BINS = 20


def _round(value: float) -> float:
    return float(round(float(value), 4))


def summary(values: np.ndarray, log_bins: bool = False) -> dict[str, Any]:
    """Count, mean, min, percentiles, max and a histogram of a numeric column."""
    if not len(values):
        return {"count": 0}
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if log_bins and low > 0 and high > low:
        edges = np.geomspace(low, high, HISTOGRAM_BINS + 1)
    else:
        edges = np.linspace(low, high if high > low else low + 1.0, HISTOGRAM_BINS + 1)
    counts, edges = np.histogram(values, bins=edges)
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {
        "count": len(values),
        "mean": _round(values.mean()),
        "min": _round(low),
        "p10": _round(p10),
        "p50": _round(p50),
        "p90": _round(p90),
        "max": _round(high),
        "histogram": {"edges": [_round(e) for e in edges], "counts": counts.tolist()},
    }


def distribution(attributes: Attributes, names: list[str]) -> dict[str, Any]:
    """The distribution of each named attribute (see the module docstring)."""
    rows = len(attributes)
    out: dict[str, Any] = {"rows": rows, "attributes": {}}
    for name in names:
        counts = attributes.categorical(name).counts()
        entry: dict[str, Any] = {
            "counts": counts,
            "shares": {value: _round(count / rows) for value, count in counts.items()} if rows else {},
        }
        if name == "turns":
            entry["turns"] = summary(attributes.turns)
        elif name == "length":
            entry["tokens"] = summary(np.maximum(attributes.tokens, 1), log_bins=True)
            entry["chars"] = summary(attributes.chars)
            entry["instructionTokens"] = summary(attributes.instruction_tokens)
        elif name == "difficulty":
            entry["score"] = summary(attributes.difficulty)
            entry["judged"] = int(attributes.difficulty_judged.sum())
        elif name == "quality":
            entry["score"] = summary(attributes.quality)
            entry["judged"] = int(attributes.quality_judged.sum())
            entry["signals"] = {s: _round(attributes.signals[s].mean()) if rows else 0.0 for s in SIGNALS}
        out["attributes"][name] = entry
    return out


def write(
    folder: Path,
    before: dict[str, Any],
    after: dict[str, Any],
    targets: dict[str, dict[str, float]],
    steps: dict[str, int],
) -> list[Path]:
    """Write before.json, after.json and the plots; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "before.json", folder / "after.json"]
    files[0].write_text(json.dumps(before, indent=2, sort_keys=True))
    files[1].write_text(json.dumps(after, indent=2, sort_keys=True))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, entry in before["attributes"].items():
        later = after["attributes"].get(name, {"shares": {}})
        values = list(entry["shares"])
        values += [v for v in later["shares"] if v not in values]
        values += [v for v in targets.get(name, {}) if v not in values]
        positions = np.arange(len(values))
        figure, axes = plt.subplots(figsize=(max(4.0, 0.6 * len(values) + 2.0), 3.2))
        width = 0.4
        axes.bar(positions - width / 2, [entry["shares"].get(v, 0.0) for v in values], width, label="before")
        axes.bar(positions + width / 2, [later["shares"].get(v, 0.0) for v in values], width, label="after")
        if name in targets:
            axes.scatter(
                positions + width / 2,
                [targets[name].get(v, 0.0) for v in values],
                marker="_",
                s=400,
                color="black",
                label="target",
                zorder=3,
            )
        axes.set_xticks(positions, values, rotation=30 if len(values) > 6 else 0)
        axes.set_ylabel("share of rows")
        axes.set_title(f"{name}: {before['rows']} rows before, {after['rows']} after")
        axes.legend(fontsize="small")
        figure.tight_layout()
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        files.append(path)

    figure, axes = plt.subplots(figsize=(6.0, 3.2))
    labels = list(steps)
    axes.barh(labels[::-1], [steps[k] for k in labels][::-1])
    axes.set_xlabel("rows")
    axes.set_title("rows through the cleaning steps")
    figure.tight_layout()
    path = folder / "pipeline.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    files.append(path)
    return files
