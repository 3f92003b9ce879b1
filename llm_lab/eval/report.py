"""An evaluation's results as files and as a table: ``results.json`` and ``report.md``.

``results.json`` is ``{"<task>": {"<metric>": value, ..., "n": items}}``, for programs (a sweep, a
notebook, a later comparison). The table puts each headline metric beside its baseline, so that a
number means something: bits per byte beside a unigram model's, accuracy beside a random guess's.
"""

from __future__ import annotations

import json
from pathlib import Path

from llm_lab.atomic import replacing

Results = dict[str, dict[str, float]]

# The metrics a table shows, each with the metric of the same task that is its baseline.
HEADLINES: dict[str, str | None] = {
    "bits_per_byte": "unigram_bits_per_byte",
    "nll_per_token": None,
    "unk_share": None,
    "acc": "random_acc",
    "acc_norm": "random_acc",
    "f1_macro": None,  # a classifier's, beside its acc
    "perplexity": "unigram_perplexity",
}


def _number(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"


def table_rows(results: Results) -> list[tuple[str, str, str, str, str]]:
    """(task, metric, value, baseline, items) for each headline metric of each task; a harness
    task's metrics, whatever their names, are shown as they come."""
    rows = []
    for task, metrics in results.items():
        shown = [m for m in HEADLINES if m in metrics] or [
            m for m in metrics if m != "n" and m not in HEADLINES.values()
        ]
        for metric in shown:
            base = HEADLINES.get(metric)
            baseline = _number(metrics[base]) if base and base in metrics else ""
            rows.append((task, metric, _number(metrics[metric]), baseline, f"{int(metrics.get('n', 0)):,}"))
    return rows


def format_table(results: Results) -> str:
    """The results as a Markdown table (readable as plain text too)."""
    header = ("task", "metric", "value", "baseline", "items")
    rows = [header, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_results(folder: Path, results: Results, model: str, settings: dict[str, object]) -> None:
    """``results.json`` and ``report.md`` (the model, the settings, the table) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with replacing(folder / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    lines = [f"# Evaluation of {model}", ""]
    lines += [f"- {key}: {value}" for key, value in settings.items()]
    lines += [
        "",
        format_table(results),
        "",
        "Baselines: bits per byte and the cloze word's perplexity of a unigram model (token frequencies "
        "of the training split, add-one smoothed); the accuracy of a uniform random choice.",
        "",
    ]
    with replacing(folder / "report.md") as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
