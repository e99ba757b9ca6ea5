"""Task-weight logs, plots, result tables and model-card text."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Mapping


def write_json_atomic(path: str, payload: Any) -> None:
    """Write `payload` as JSON to `path` through a temporary file and os.replace.

    A reader (or a resume after a crash) finds either the old file or the complete new one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, indent=2, allow_nan=False)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def append_task_weights_line(
    path: str,
    step: int,
    weights: Mapping[str, float],
    losses: Mapping[str, float | None],
) -> None:
    """Append one `{"step", "weights", "losses"}` JSON line to `path` (non-finite losses as null)."""
    record = {
        "step": int(step),
        "weights": {name: float(value) for name, value in weights.items()},
        "losses": {name: _finite_or_none(value) for name, value in losses.items()},
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record, allow_nan=False) + "\n")


def read_task_weights(path: str) -> list[dict[str, Any]]:
    """Read a task_weights.jsonl file into a list of records, raising on a malformed line."""
    records = []
    with open(path, encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: invalid JSON ({error}).") from error
            for key in ("step", "weights", "losses"):
                if key not in record:
                    raise ValueError(f"{path}:{line_number}: record has no {key!r} field.")
            records.append(record)
    return records


def _new_figure(width: float, height: float):
    # The Agg canvas renders without touching pyplot's global backend, so this works headless and
    # does not change the backend of a notebook that imports the package.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_task_weights(jsonl_path: str, png_path: str, title: str | None = None) -> str:
    """Plot the task weights of a task_weights.jsonl file over steps, one line per task.

    Returns `png_path`. Raises a ValueError for an empty file.
    """
    records = read_task_weights(jsonl_path)
    if not records:
        raise ValueError(f"{jsonl_path} has no records: train with logging enabled first.")
    task_names = list(records[0]["weights"])
    steps = [record["step"] for record in records]

    figure = _new_figure(7.0, 4.0)
    axes = figure.add_subplot(1, 1, 1)
    for name in task_names:
        axes.plot(steps, [record["weights"].get(name, math.nan) for record in records], label=name)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("task weight")
    axes.set_title(title or "Task weights")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncol=max(1, len(task_names) // 10))
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    figure.savefig(png_path)
    return png_path


def plot_perplexities(metrics: Mapping[str, Any], png_path: str, prefix: str = "eval") -> str:
    """Draw per-language perplexity bars, the worst language in red, and relative perplexity.

    `metrics` is the output of `LDROTrainer.evaluate` (or `hf_ldro.metrics.language_metrics`).
    A second panel shows relative perplexity when the metrics contain it. Returns `png_path`.
    """
    from .metrics import languages_in_metrics

    languages = languages_in_metrics(metrics, prefix)
    if not languages:
        raise ValueError(
            f"No per-language metrics with prefix {prefix!r} in {sorted(metrics)}: pass the "
            "metrics returned by LDROTrainer.evaluate."
        )
    has_relative = f"{prefix}_avg_relative_perplexity" in metrics
    panels = [("perplexity", "perplexity", f"{prefix}_worst_language")]
    if has_relative:
        panels.append(
            ("relative_perplexity", "relative perplexity", f"{prefix}_worst_relative_language")
        )

    figure = _new_figure(max(6.0, 0.6 * len(languages) + 2.0), 3.5 * len(panels))
    for index, (suffix, label, worst_key) in enumerate(panels, start=1):
        axes = figure.add_subplot(len(panels), 1, index)
        values = [float(metrics[f"{prefix}_{name}_{suffix}"]) for name in languages]
        worst = metrics.get(worst_key)
        colors = ["tab:red" if name == worst else "tab:blue" for name in languages]
        axes.bar(range(len(languages)), values, color=colors)
        axes.axhline(float(metrics[f"{prefix}_avg_{suffix}"]), color="gray", linestyle="--", label="average")
        axes.set_xticks(range(len(languages)))
        axes.set_xticklabels(languages, rotation=45, ha="right", fontsize="small")
        axes.set_ylabel(label)
        axes.set_title(f"{label} per language (worst: {worst})")
        axes.legend(fontsize="small")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    figure.savefig(png_path)
    return png_path


def perplexity_markdown_table(metrics: Mapping[str, Any], prefix: str = "eval") -> str:
    """Return the markdown table of per-language absolute and relative perplexity."""
    from .metrics import perplexity_table

    return perplexity_table(metrics, prefix)


def model_card_section(
    method: str,
    hyperparameters: Mapping[str, Any],
    final_weights: Mapping[str, float],
    metrics: Mapping[str, Any] | None = None,
    prefix: str = "eval",
) -> str:
    """Return a markdown model-card section on the task weighting and per-language results.

    Args:
        method: weighting method name (e.g. "ldro").
        hyperparameters: the weighting options to list (e.g. `LDROArguments.to_dict()`).
        final_weights: {task: weight} at the end of training.
        metrics: optional output of `LDROTrainer.evaluate`, shown as the perplexity table.
    """
    lines = ["## Task weighting", "", f"Method: `{method}`", ""]
    if hyperparameters:
        lines += ["| option | value |", "|---|---|"]
        for name, value in hyperparameters.items():
            lines.append(f"| {name} | {json.dumps(value) if isinstance(value, (dict, list)) else value} |")
        lines.append("")
    lines += ["Final task weights:", "", "| task | weight |", "|---|---|"]
    for name, weight in final_weights.items():
        lines.append(f"| {name} | {float(weight):.4f} |")
    if metrics is not None:
        lines += ["", "## Per-language evaluation", "", perplexity_markdown_table(metrics, prefix)]
    return "\n".join(lines) + "\n"
