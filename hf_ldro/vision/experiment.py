"""Runs of the multitask image experiment: method grids, evaluation records and Pareto summaries.

Every evaluation of every run is one JSON line of `<output_dir>/evals.jsonl`:

    {"method", "hparams", "seed", "run", "epoch", "step", "task_accuracy": {task: acc},
     "avg_accuracy", "worst_accuracy", "worst_task", "loss"}

`write_pareto_summary` reads them back and writes, per seed and method, the Pareto frontier of
(average, worst) accuracy over all evaluations and hyperparameters (`pareto.json`, `pareto.png`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from transformers import TrainerCallback

from ..pareto import frontier_records, plot_pareto_frontiers

logger = logging.getLogger(__name__)

METHODS = ("static", "dro", "ldro", "ldro_exact", "pcgrad")

# Grids of Michel, Ruder & Yogatama's CIFAR-100 experiment (section 5.1). The exact variant of
# L-DRO has no update rate, so only its lookahead rates are swept.
PAPER_DRO_ETAS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
PAPER_LDRO_ETAS = (1e-2, 1e-3, 1e-4)
PAPER_LDRO_LOOKAHEAD_LRS = (1e-3, 1e-2, 1e-1)
PAPER_SWEEP_METHODS = ("static", "dro", "ldro", "pcgrad")

EVALS_FILE = "evals.jsonl"
PARETO_JSON = "pareto.json"
PARETO_PNG = "pareto.png"


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method, its hyperparameters and a seed."""

    method: str
    seed: int
    hparams: Mapping[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Folder name of the run, e.g. `ldro_eta0.01_lambda0.1_seed0`."""
        short = {"dro_eta": "eta", "ldro_eta": "eta", "ldro_lookahead_lr": "lambda"}
        parts = [self.method] + [f"{short.get(k, k)}{v:g}" for k, v in self.hparams.items() if k in short]
        return "_".join(parts + [f"seed{self.seed}"])

    def key(self) -> tuple:
        return (self.method, json.dumps(dict(self.hparams), sort_keys=True), self.seed)


def build_run_specs(
    methods: Sequence[str],
    seeds: Sequence[int],
    sweep: str = "none",
    dro_eta: float = 1e-2,
    ldro_eta: float = 1e-2,
    ldro_lookahead_lr: float = 1e-2,
) -> list[RunSpec]:
    """List the runs of a sweep.

    sweep "none": each method once with the given hyperparameters. sweep "paper": DRO over
    `PAPER_DRO_ETAS`, L-DRO over `PAPER_LDRO_ETAS` x `PAPER_LDRO_LOOKAHEAD_LRS`, exact L-DRO over
    the lookahead rates, static mixing and PCGrad once. Every run is repeated for every seed.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}: use {list(METHODS)}.")
    if sweep not in ("none", "paper"):
        raise ValueError(f"Unknown sweep {sweep!r}: use 'none' or 'paper'.")
    if not seeds:
        raise ValueError("No seed given: pass at least one seed.")

    grids: list[tuple[str, dict]] = []
    for method in methods:
        if method in ("static", "pcgrad"):
            grids.append((method, {}))
        elif method == "dro":
            etas = PAPER_DRO_ETAS if sweep == "paper" else (dro_eta,)
            grids += [(method, {"dro_eta": eta}) for eta in etas]
        elif method == "ldro":
            etas = PAPER_LDRO_ETAS if sweep == "paper" else (ldro_eta,)
            rates = PAPER_LDRO_LOOKAHEAD_LRS if sweep == "paper" else (ldro_lookahead_lr,)
            grids += [(method, {"ldro_eta": eta, "ldro_lookahead_lr": rate}) for eta in etas for rate in rates]
        else:
            rates = PAPER_LDRO_LOOKAHEAD_LRS if sweep == "paper" else (ldro_lookahead_lr,)
            grids += [(method, {"ldro_lookahead_lr": rate}) for rate in rates]
    return [RunSpec(method, int(seed), hparams) for seed in seeds for method, hparams in grids]


def read_evals(path: str | Path) -> list[dict]:
    """Read the records of an evals.jsonl file (an absent file gives an empty list)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: invalid JSON ({error}).") from error
    return records


def drop_run_records(path: str | Path, run: RunSpec) -> int:
    """Remove the lines of `run` from an evals.jsonl file, so a rerun replaces them; return the count."""
    records = read_evals(path)
    kept = [r for r in records if (r["method"], json.dumps(r["hparams"], sort_keys=True), r["seed"]) != run.key()]
    if len(kept) != len(records):
        tmp = Path(f"{path}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, path)
    return len(records) - len(kept)


class EvaluationRecorder(TrainerCallback):
    """Append one evals.jsonl line per evaluation of one run (on the main process only).

    Reads the metrics of `hf_ldro.vision.metrics.make_compute_metrics` (`eval_accuracy_<task>`,
    `eval_avg_accuracy`, `eval_worst_accuracy`).
    """

    def __init__(self, path: str | Path, run: RunSpec, task_names: Sequence[str], prefix: str = "eval"):
        self.path = Path(path)
        self.run = run
        self.task_names = list(task_names)
        self.prefix = prefix

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        accuracy_key = f"{self.prefix}_accuracy_"
        task_accuracy = {
            name: metrics[accuracy_key + name] for name in self.task_names if accuracy_key + name in metrics
        }
        if not task_accuracy:
            logger.warning("Evaluation at step %d reported no per-task accuracy; nothing recorded.", state.global_step)
            return
        worst_task = min(task_accuracy, key=task_accuracy.get)
        record = {
            "method": self.run.method,
            "hparams": dict(self.run.hparams),
            "seed": self.run.seed,
            "run": self.run.name,
            "epoch": state.epoch,
            "step": state.global_step,
            "task_accuracy": task_accuracy,
            "avg_accuracy": metrics[f"{self.prefix}_avg_accuracy"],
            "worst_accuracy": metrics[f"{self.prefix}_worst_accuracy"],
            "worst_task": worst_task,
            "loss": metrics.get(f"{self.prefix}_loss"),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def pareto_summary(records: Iterable[Mapping[str, Any]]) -> dict:
    """Return {"panels": {"seed S": {method: {"num_evaluations", "frontier": [records]}}}}."""
    by_seed: dict[int, dict[str, list]] = {}
    for record in records:
        by_seed.setdefault(int(record["seed"]), {}).setdefault(record["method"], []).append(record)
    panels = {}
    for seed in sorted(by_seed):
        panels[f"seed {seed}"] = {
            method: {
                "num_evaluations": len(method_records),
                "frontier": [
                    {key: r[key] for key in ("avg_accuracy", "worst_accuracy", "worst_task", "hparams", "epoch", "step", "run")}
                    for r in frontier_records(method_records)
                ],
            }
            for method, method_records in sorted(by_seed[seed].items())
        }
    return {"objectives": ["avg_accuracy", "worst_accuracy"], "panels": panels}


def write_pareto_summary(output_dir: str | Path, title: str | None = None) -> dict:
    """Write pareto.json and pareto.png from `<output_dir>/evals.jsonl`; return the summary."""
    output_dir = Path(output_dir)
    records = read_evals(output_dir / EVALS_FILE)
    if not records:
        raise ValueError(f"{output_dir / EVALS_FILE} has no evaluation: nothing to summarise.")
    summary = pareto_summary(records)
    (output_dir / PARETO_JSON).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    panels: dict[str, dict[str, list]] = {}
    for record in records:
        panels.setdefault(f"seed {record['seed']}", {}).setdefault(record["method"], []).append(record)
    ordered = {name: panels[name] for name in sorted(panels, key=lambda n: int(n.split()[-1]))}
    plot_pareto_frontiers(ordered, str(output_dir / PARETO_PNG), title=title)
    return summary


def format_summary_table(summary: Mapping) -> str:
    """Return a Markdown table: per seed and method, the best average, best worst and frontier size."""
    lines = [
        "| seed | method | evaluations | best average | best worst | frontier (average, worst) |",
        "|---|---|---|---|---|---|",
    ]
    for panel, methods in summary["panels"].items():
        for method, entry in methods.items():
            frontier = entry["frontier"]
            points = ", ".join(f"({p['avg_accuracy']:.3f}, {p['worst_accuracy']:.3f})" for p in frontier)
            lines.append(
                f"| {panel.split()[-1]} | {method} | {entry['num_evaluations']} | "
                f"{max(p['avg_accuracy'] for p in frontier):.3f} | "
                f"{max(p['worst_accuracy'] for p in frontier):.3f} | {points} |"
            )
    return "\n".join(lines)
