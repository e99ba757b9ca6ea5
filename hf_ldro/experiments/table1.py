"""The multilingual language-modelling experiment of Table 1 in Michel, Ruder & Yogatama,
"Balancing Average and Worst-Case Accuracy in Multitask Learning".

One monolingual reference model per language, then static mixing (alpha = 1, 0.3, 0), online DRO,
baselined DRO (on the references' validation losses) and online L-DRO, all with the same model,
steps, batch and seed. Every run is one call of `run_mlm_ldro.py`'s `main` (in this process, or a
subprocess per run with `--launcher subprocess`), so the experiment trains exactly what the script
trains. The table reports, per method, the average and worst per-language validation perplexity
and the average and worst relative perplexity (ppl - ppl_mono) / ppl_mono, in percent as in the
paper.

    python -m hf_ldro.experiments table1 --train_dir data/ud --output_dir runs/table1 \
        --languages eng_Latn,yor_Latn,amh_Ethi --max_steps 400

Each run writes to `<output_dir>/<run name>/` and, once finished, `table1_run.json` there. A run
with that file is skipped, so an interrupted experiment continues where it stopped (an interrupted
run resumes from its last complete checkpoint). The outputs are `table1.md`, `table1.csv` and
`table1_task_weights.png` (the weight trajectory of every multilingual method) in `output_dir`.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..data import DataError, load_languages
from ..reporting import read_task_weights, write_json_atomic

logger = logging.getLogger(__name__)

SCRIPT_PATH = Path(__file__).resolve().parents[2] / "run_mlm_ldro.py"
RUN_MARKER_NAME = "table1_run.json"
TABLE_MARKDOWN_NAME = "table1.md"
TABLE_CSV_NAME = "table1.csv"
WEIGHTS_FIGURE_NAME = "table1_task_weights.png"
LAUNCHERS = ("inprocess", "subprocess")
MONOLINGUAL_PREFIX = "monolingual_"


class Table1Error(RuntimeError):
    """The experiment cannot run or continue; the message names the cause and the fix."""


class RunFailedError(RuntimeError):
    """One run of run_mlm_ldro.py exited with an error."""


@dataclass(frozen=True)
class MethodRun:
    """One multilingual run of the table: its folder name, row label and method arguments."""

    name: str
    label: str
    method_arguments: tuple[str, ...]
    uses_reference_losses: bool = False


@dataclass
class Table1Settings:
    """Settings of the experiment: what every run shares (data, model, budget) and each method's step sizes."""

    train_dir: Path
    output_dir: Path
    languages: list[str] | None = None
    max_steps: int = 400
    batch_size: int = 10
    block_size: int = 128
    config_overrides: str = "n_layer=2,n_embd=128,n_head=2"
    learning_rate: float = 2e-3
    seed: int = 42
    logging_steps: int = 10
    save_steps: int = 100
    max_eval_blocks: int = 64
    dro_eta: float = 1e-2
    ldro_eta: float = 1e-1
    ldro_lookahead_lr: float = 1e-1
    ldro_update_interval: int = 20
    methods: list[str] | None = None
    launcher: str = "inprocess"
    script: Path = SCRIPT_PATH
    extra_arguments: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Raise a Table1Error for settings that cannot produce a table."""
        if self.launcher not in LAUNCHERS:
            raise Table1Error(f"--launcher {self.launcher!r} is unknown: use one of {list(LAUNCHERS)}.")
        for name in ("max_steps", "batch_size", "logging_steps", "save_steps", "max_eval_blocks"):
            if getattr(self, name) < 1:
                raise Table1Error(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.block_size < 2:
            raise Table1Error(f"--block_size must be >= 2, got {self.block_size}.")
        if not self.script.is_file():
            raise Table1Error(
                f"run_mlm_ldro.py not found at {self.script}: pass --script with its path "
                "(it is in the root of the hf_ldro repository)."
            )
        known = [run.name for run in method_runs(self)]
        unknown = [name for name in self.methods or [] if name not in known]
        if unknown:
            raise Table1Error(f"--methods {unknown} unknown: choose among {known}.")


def method_runs(settings: Table1Settings) -> list[MethodRun]:
    """Return the multilingual runs in the row order of the paper's Table 1."""
    dro_eta = str(settings.dro_eta)
    runs = [
        MethodRun("static_alpha1", "Static mixing (alpha = 1)", ("--method", "static", "--mixing_alpha", "1")),
        MethodRun("static_alpha0.3", "Static mixing (alpha = 0.3)", ("--method", "static", "--mixing_alpha", "0.3")),
        MethodRun("static_alpha0", "Static mixing (alpha = 0)", ("--method", "static", "--mixing_alpha", "0")),
        MethodRun("dro", "DRO", ("--method", "dro", "--dro_eta", dro_eta)),
        MethodRun(
            "baselined_dro",
            "Baselined DRO",
            ("--method", "baselined_dro", "--dro_eta", dro_eta),
            uses_reference_losses=True,
        ),
        MethodRun(
            "ldro",
            "L-DRO",
            (
                "--method", "ldro",
                "--ldro_eta", str(settings.ldro_eta),
                "--ldro_lookahead_lr", str(settings.ldro_lookahead_lr),
                "--ldro_update_interval", str(settings.ldro_update_interval),
            ),
        ),
    ]  # fmt: skip
    return runs


def selected_method_runs(settings: Table1Settings) -> list[MethodRun]:
    runs = method_runs(settings)
    if settings.methods is None:
        return runs
    return [run for run in runs if run.name in settings.methods]


def resolve_languages(settings: Table1Settings) -> list[str]:
    """Check the data folder and the languages up front; return the languages in task order."""
    try:
        data = load_languages(data_dir=settings.train_dir, languages=settings.languages)
    except DataError as error:
        raise Table1Error(f"--train_dir {settings.train_dir}: {error}") from error
    missing_validation = [name for name in data.task_names if name not in data.validation_sources]
    if missing_validation:
        raise Table1Error(
            f"Language(s) {missing_validation} in {settings.train_dir} have no validation file, so "
            "neither their perplexity nor a monolingual reference can be measured: add "
            "validation.jsonl[.gz] for them or leave them out of --languages."
        )
    return list(data.task_names)


def shared_arguments(settings: Table1Settings, run_dir: Path, languages: Sequence[str]) -> list[str]:
    """Return the script arguments that every run of the table shares."""
    return [
        "--output_dir", str(run_dir),
        "--data_dir", str(settings.train_dir),
        "--languages", ",".join(languages),
        "--byte_tokenizer",
        "--config_overrides", settings.config_overrides,
        "--block_size", str(settings.block_size),
        "--per_device_train_batch_size", str(settings.batch_size),
        "--max_steps", str(settings.max_steps),
        "--learning_rate", str(settings.learning_rate),
        "--seed", str(settings.seed),
        "--logging_steps", str(settings.logging_steps),
        "--save_steps", str(settings.save_steps),
        "--save_total_limit", "1",
        "--max_eval_blocks", str(settings.max_eval_blocks),
        "--report_to", "none",
        "--disable_tqdm", "true",
        *settings.extra_arguments,
    ]  # fmt: skip


def monolingual_run_dir(settings: Table1Settings, language: str) -> Path:
    return settings.output_dir / f"{MONOLINGUAL_PREFIX}{language}"


def reference_files(settings: Table1Settings, languages: Sequence[str]) -> list[str]:
    return [str(monolingual_run_dir(settings, language) / "reference.json") for language in languages]


def monolingual_arguments(settings: Table1Settings, language: str) -> list[str]:
    run_dir = monolingual_run_dir(settings, language)
    return shared_arguments(settings, run_dir, [language]) + ["--method", "monolingual"]


def multilingual_arguments(settings: Table1Settings, run: MethodRun, languages: Sequence[str]) -> list[str]:
    references = reference_files(settings, languages)
    arguments = shared_arguments(settings, settings.output_dir / run.name, languages)
    arguments += list(run.method_arguments)
    arguments += ["--reference_perplexities", *references]
    if run.uses_reference_losses:
        arguments += ["--reference_losses", *references]
    return arguments


# ---- running ------------------------------------------------------------------------------------


def load_script(path: Path):
    """Import run_mlm_ldro.py from `path` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("run_mlm_ldro", path)
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve the script's string annotations through sys.modules.
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return sys.modules[spec.name]


def completed_run(run_dir: Path, arguments: Sequence[str]) -> dict[str, Any] | None:
    """Return the marker of a finished run, None if the run has not finished.

    Raises:
        Table1Error: the run finished with other arguments, so its results would not fit the table.
    """
    marker_path = run_dir / RUN_MARKER_NAME
    if not marker_path.is_file():
        return None
    marker = json.loads(marker_path.read_text(encoding="utf-8"))
    if marker.get("arguments") != list(arguments):
        raise Table1Error(
            f"{run_dir} holds a finished run with other settings (see {marker_path}). Use another "
            "--output_dir, or delete that folder to train it again with these settings."
        )
    if not (run_dir / "eval_results.json").is_file():
        raise Table1Error(
            f"{marker_path} marks the run as finished but {run_dir / 'eval_results.json'} is "
            "missing: delete the folder to train the run again."
        )
    return marker


class RunLauncher:
    """Call run_mlm_ldro.py's `main` in this process, or run the script in a subprocess."""

    def __init__(self, script: Path, launcher: str):
        self.script = script
        self.launcher = launcher
        self._module = None

    def __call__(self, arguments: Sequence[str], run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.launcher == "inprocess":
            self._run_in_process(arguments)
        else:
            self._run_subprocess(arguments, run_dir)

    def _run_in_process(self, arguments: Sequence[str]) -> None:
        if self._module is None:
            self._module = load_script(self.script)
        self._module.main(list(arguments))

    def _run_subprocess(self, arguments: Sequence[str], run_dir: Path) -> None:
        log_path = run_dir / "train.log"
        with open(log_path, "a", encoding="utf-8") as log:
            completed = subprocess.run(
                [sys.executable, str(self.script), *arguments],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if completed.returncode != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
            raise RunFailedError(
                f"{self.script.name} exited with status {completed.returncode} for {run_dir.name}; "
                f"see {log_path}. Last lines:\n" + "\n".join(tail)
            )


def train_run(
    name: str, arguments: Sequence[str], run_dir: Path, launch: Callable[[Sequence[str], Path], None]
) -> bool:
    """Train one run unless it has finished; return True when it was trained now."""
    if completed_run(run_dir, arguments) is not None:
        logger.info("%s: finished earlier, skipped (%s).", name, run_dir / RUN_MARKER_NAME)
        return False
    start = time.monotonic()
    logger.info("%s: training in %s", name, run_dir)
    launch(arguments, run_dir)
    seconds = time.monotonic() - start
    write_json_atomic(
        str(run_dir / RUN_MARKER_NAME),
        {
            "arguments": list(arguments),
            "seconds": round(seconds, 1),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    logger.info("%s: finished in %.0f s.", name, seconds)
    return True


@dataclass
class Table1Outputs:
    """Files written by `run_experiment`, and the multilingual runs that failed (name: error)."""

    markdown: Path
    csv: Path
    figure: Path
    failures: dict[str, str]


def run_experiment(settings: Table1Settings, launch: Callable | None = None) -> Table1Outputs:
    """Train every run that has not finished, then write the table and the figure.

    A failed multilingual run is logged and left out of the table; the other runs still train.
    `launch(arguments, run_dir)` trains one run; default `RunLauncher` for `settings.launcher`.

    Raises:
        Table1Error: invalid settings or data, a failed monolingual run (every relative
            perplexity needs all of them), or no multilingual run finished.
    """
    settings.check()
    languages = resolve_languages(settings)
    launch = launch or RunLauncher(settings.script, settings.launcher)
    runs = selected_method_runs(settings)
    total = len(languages) + len(runs)
    logger.info(
        "Table 1 on %d languages (%s): %d monolingual and %d multilingual runs of %d steps in %s",
        len(languages),
        ", ".join(languages),
        len(languages),
        len(runs),
        settings.max_steps,
        settings.output_dir,
    )
    experiment_start = time.monotonic()
    for index, language in enumerate(languages, start=1):
        name = f"[{index}/{total}] monolingual {language}"
        try:
            train_run(name, monolingual_arguments(settings, language), monolingual_run_dir(settings, language), launch)
        except Table1Error:
            raise
        except Exception as error:
            raise Table1Error(
                f"The monolingual run of {language} failed ({type(error).__name__}: {error}); the "
                "relative perplexities need every reference. Fix the cause and rerun: finished "
                "runs are kept."
            ) from error

    failures: dict[str, str] = {}
    for index, run in enumerate(runs, start=len(languages) + 1):
        name = f"[{index}/{total}] {run.label}"
        try:
            train_run(name, multilingual_arguments(settings, run, languages), settings.output_dir / run.name, launch)
        except Table1Error:
            raise
        except Exception as error:  # one failed method must not cost the others their runs
            logger.exception("%s failed; it is left out of the table.", name)
            failures[run.name] = f"{type(error).__name__}: {error}"
    logger.info("All runs done in %.0f s.", time.monotonic() - experiment_start)

    rows = collect_rows(settings, languages, runs)
    if not any(row.method != "Monolingual" for row in rows):
        raise Table1Error(f"No multilingual run finished: {failures}")
    outputs = write_outputs(settings, languages, rows, runs, failures)
    if failures:
        logger.error("Runs that failed and are missing from the table: %s", failures)
    return outputs


# ---- results ------------------------------------------------------------------------------------


@dataclass
class TableRow:
    """One row of Table 1: a method's average and worst absolute and relative perplexity."""

    method: str
    run: str
    avg_perplexity: float
    worst_perplexity: float
    worst_language: str
    avg_relative_perplexity_percent: float
    worst_relative_perplexity_percent: float
    worst_relative_language: str
    perplexities: dict[str, float]


def read_eval_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "eval_results.json"
    if not path.is_file():
        raise Table1Error(f"{path} not found: the run in {run_dir} has not finished.")
    return json.loads(path.read_text(encoding="utf-8"))


def row_from_metrics(label: str, run: str, metrics: Mapping[str, Any], languages: Sequence[str]) -> TableRow:
    """Build a row from a multilingual run's eval_results.json (with relative perplexities)."""
    return TableRow(
        method=label,
        run=run,
        avg_perplexity=float(metrics["eval_avg_perplexity"]),
        worst_perplexity=float(metrics["eval_worst_perplexity"]),
        worst_language=str(metrics["eval_worst_language"]),
        avg_relative_perplexity_percent=100.0 * float(metrics["eval_avg_relative_perplexity"]),
        worst_relative_perplexity_percent=100.0 * float(metrics["eval_worst_relative_perplexity"]),
        worst_relative_language=str(metrics["eval_worst_relative_language"]),
        perplexities={language: float(metrics[f"eval_{language}_perplexity"]) for language in languages},
    )


def monolingual_row(settings: Table1Settings, languages: Sequence[str]) -> TableRow:
    """Build the Monolingual row: each language's perplexity under its own reference model."""
    perplexities = {
        language: float(read_eval_results(monolingual_run_dir(settings, language))[f"eval_{language}_perplexity"])
        for language in languages
    }
    worst = max(perplexities, key=perplexities.get)
    return TableRow(
        method="Monolingual",
        run=MONOLINGUAL_PREFIX + "*",
        avg_perplexity=sum(perplexities.values()) / len(perplexities),
        worst_perplexity=perplexities[worst],
        worst_language=worst,
        avg_relative_perplexity_percent=0.0,
        worst_relative_perplexity_percent=0.0,
        worst_relative_language="-",
        perplexities=perplexities,
    )


def collect_rows(settings: Table1Settings, languages: Sequence[str], runs: Sequence[MethodRun]) -> list[TableRow]:
    """Read the finished runs into table rows (methods in the paper's order, Monolingual last)."""
    rows = []
    for run in runs:
        run_dir = settings.output_dir / run.name
        if (run_dir / RUN_MARKER_NAME).is_file():
            rows.append(row_from_metrics(run.label, run.name, read_eval_results(run_dir), languages))
    rows.append(monolingual_row(settings, languages))
    return rows


def format_number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def markdown_table(rows: Sequence[TableRow]) -> str:
    """Return the Table 1 layout: per method, average and worst absolute and relative perplexity."""
    lines = [
        "| method | avg perplexity | worst perplexity | avg relative perplexity (%) | worst relative perplexity (%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        worst_relative = format_number(row.worst_relative_perplexity_percent)
        if row.worst_relative_language != "-":
            worst_relative += f" ({row.worst_relative_language})"
        lines.append(
            f"| {row.method} | {format_number(row.avg_perplexity)} | "
            f"{format_number(row.worst_perplexity)} ({row.worst_language}) | "
            f"{format_number(row.avg_relative_perplexity_percent)} | {worst_relative} |"
        )
    return "\n".join(lines)


def per_language_table(rows: Sequence[TableRow], languages: Sequence[str]) -> str:
    """Return a markdown table of every method's validation perplexity on every language."""
    lines = ["| language | " + " | ".join(row.method for row in rows) + " |"]
    lines.append("|---|" + "---:|" * len(rows))
    for language in languages:
        cells = [format_number(row.perplexities[language]) for row in rows]
        lines.append(f"| {language} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[TableRow], languages: Sequence[str]) -> None:
    summary_fields = [name for name in TableRow.__dataclass_fields__ if name != "perplexities"]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(summary_fields + [f"perplexity_{language}" for language in languages])
        for row in rows:
            values = asdict(row)
            writer.writerow(
                [values[name] for name in summary_fields] + [row.perplexities[language] for language in languages]
            )


def settings_lines(settings: Table1Settings, languages: Sequence[str]) -> list[str]:
    return [
        f"- languages ({len(languages)}): {', '.join(languages)}",
        f"- data: `{settings.train_dir}` (train split for training, validation split for the table; "
        f"at most {settings.max_eval_blocks} blocks per language)",
        f"- model: GPT-2 `{settings.config_overrides}`, UTF-8 byte tokens, blocks of "
        f"{settings.block_size} tokens",
        f"- budget per run: {settings.max_steps} steps of batch {settings.batch_size}, AdamW lr "
        f"{settings.learning_rate} with cosine decay, seed {settings.seed}",
        f"- DRO and baselined DRO eta {settings.dro_eta}; L-DRO eta {settings.ldro_eta}, lookahead "
        f"lr {settings.ldro_lookahead_lr}, interaction refresh every {settings.ldro_update_interval} steps",
    ]


def write_outputs(
    settings: Table1Settings,
    languages: Sequence[str],
    rows: Sequence[TableRow],
    runs: Sequence[MethodRun],
    failures: Mapping[str, str],
) -> Table1Outputs:
    """Write table1.md, table1.csv and the task-weight figure into `settings.output_dir`."""
    output_dir = settings.output_dir
    markdown = [
        "# Table 1: multilingual language modelling",
        "",
        *settings_lines(settings, languages),
        "",
        "Relative perplexity is (ppl - ppl_mono) / ppl_mono in percent, ppl_mono being the "
        "perplexity of the language's monolingual model; worst values name their language.",
        "",
        markdown_table(rows),
        "",
        "Validation perplexity per language:",
        "",
        per_language_table(rows, languages),
        "",
    ]
    if failures:
        markdown += ["Runs that failed (not in the table):", ""]
        markdown += [f"- {name}: {message}" for name, message in failures.items()]
        markdown.append("")
    markdown_path = output_dir / TABLE_MARKDOWN_NAME
    markdown_path.write_text("\n".join(markdown), encoding="utf-8")
    csv_path = output_dir / TABLE_CSV_NAME
    write_csv(csv_path, rows, languages)
    figure_path = plot_weight_trajectories(
        {run.label: output_dir / run.name / "task_weights.jsonl" for run in runs},
        output_dir / WEIGHTS_FIGURE_NAME,
    )
    logger.info("Wrote %s, %s and %s", markdown_path, csv_path, figure_path)
    return Table1Outputs(markdown_path, csv_path, figure_path, dict(failures))


def plot_weight_trajectories(logs: Mapping[str, Path], png_path: Path) -> Path:
    """Draw one panel of task weights over steps per method, from their task_weights.jsonl files.

    Methods without a log (failed or not selected) are left out.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = {label: read_task_weights(str(path)) for label, path in logs.items() if path.is_file()}
    records = {label: values for label, values in records.items() if values}
    if not records:
        raise Table1Error("No task_weights.jsonl to plot: no multilingual run finished with logging.")
    columns = min(3, len(records))
    rows = math.ceil(len(records) / columns)
    figure = Figure(figsize=(4.0 * columns, 2.8 * rows + 0.6), dpi=80)
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    handles, labels = [], []
    for axes, (label, values) in zip(axes_list, records.items()):
        steps = [record["step"] for record in values]
        for language in values[0]["weights"]:
            (line,) = axes.plot(steps, [record["weights"][language] for record in values], linewidth=1.2)
            if language not in labels:
                handles.append(line)
                labels.append(language)
        axes.set_title(label, fontsize="medium")
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    for axes in axes_list[len(records) :]:
        axes.set_visible(False)
    for axes in axes_list[::columns]:
        axes.set_ylabel("task weight")
    legend_columns = min(len(labels), 8)
    figure.legend(handles, labels, loc="lower center", ncol=legend_columns, fontsize="small")
    legend_height = 0.3 * math.ceil(len(labels) / legend_columns) + 0.15  # inches
    figure.tight_layout(rect=(0, legend_height / figure.get_figheight(), 1, 1))
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path)
    return png_path


# ---- command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    defaults = Table1Settings(train_dir=Path("."), output_dir=Path("."))
    parser = argparse.ArgumentParser(
        prog="python -m hf_ldro.experiments table1",
        description="Train monolingual references, static mixing (alpha 1, 0.3, 0), DRO, baselined "
        "DRO and L-DRO with one budget, and write table1.md, table1.csv and the weight figure.",
    )
    parser.add_argument("--train_dir", "--data_dir", type=Path, required=True,
                        help="Folder with <lang>/{train,validation}.jsonl[.gz] per language (alias --data_dir, as in run_mlm_ldro.py).")
    parser.add_argument("--output_dir", type=Path, required=True,
                        help="Folder of the runs and the table; finished runs in it are skipped.")
    parser.add_argument("--languages", default=None,
                        help="Comma-separated languages (folder names) in task order; default all.")
    parser.add_argument("--max_steps", type=int, default=defaults.max_steps,
                        help="Optimizer steps of every run (default %(default)s).")
    parser.add_argument("--batch_size", type=int, default=defaults.batch_size,
                        help="Blocks per step (default %(default)s); with N languages, a multiple of N "
                        "puts every language in every step.")
    parser.add_argument("--block_size", type=int, default=defaults.block_size,
                        help="Tokens (UTF-8 bytes) per block (default %(default)s).")
    parser.add_argument("--config_overrides", default=defaults.config_overrides,
                        help="GPT-2 config fields of the model (default %(default)s).")
    parser.add_argument("--learning_rate", type=float, default=defaults.learning_rate,
                        help="Peak AdamW learning rate (default %(default)s).")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="Seed of every run.")
    parser.add_argument("--logging_steps", type=int, default=defaults.logging_steps,
                        help="Steps between task-weight log records (default %(default)s).")
    parser.add_argument("--save_steps", type=int, default=defaults.save_steps,
                        help="Steps between checkpoints, from which an interrupted run resumes.")
    parser.add_argument("--max_eval_blocks", type=int, default=defaults.max_eval_blocks,
                        help="Validation blocks per language (default %(default)s).")
    parser.add_argument("--dro_eta", type=float, default=defaults.dro_eta,
                        help="Step size of DRO and baselined DRO (default %(default)s).")
    parser.add_argument("--ldro_eta", type=float, default=defaults.ldro_eta,
                        help="Step size of L-DRO (default %(default)s).")
    parser.add_argument("--ldro_lookahead_lr", type=float, default=defaults.ldro_lookahead_lr,
                        help="Lookahead learning rate lambda of L-DRO (default %(default)s).")
    parser.add_argument("--ldro_update_interval", type=int, default=defaults.ldro_update_interval,
                        help="Steps between interaction-matrix refreshes of L-DRO (default %(default)s).")
    parser.add_argument("--methods", default=None,
                        help="Comma-separated subset of the multilingual runs: "
                        + ",".join(run.name for run in method_runs(defaults)) + " (default all).")
    parser.add_argument("--launcher", choices=LAUNCHERS, default=defaults.launcher,
                        help="inprocess: call run_mlm_ldro.main here; subprocess: one process per "
                        "run, its output in <run>/train.log (default %(default)s).")
    parser.add_argument("--script", type=Path, default=SCRIPT_PATH,
                        help="Path of run_mlm_ldro.py (default: the repository's).")
    parser.add_argument("--script_args", default="",
                        help="Extra arguments for every run, as one string (e.g. '--warmup_steps 0.1').")
    return parser  # fmt: skip


def settings_from_arguments(argv: Sequence[str]) -> Table1Settings:
    arguments = build_parser().parse_args(list(argv))
    split = lambda value: [item.strip() for item in value.split(",") if item.strip()] if value else None  # noqa: E731
    return Table1Settings(
        train_dir=arguments.train_dir.resolve(),
        output_dir=arguments.output_dir.resolve(),
        languages=split(arguments.languages),
        max_steps=arguments.max_steps,
        batch_size=arguments.batch_size,
        block_size=arguments.block_size,
        config_overrides=arguments.config_overrides,
        learning_rate=arguments.learning_rate,
        seed=arguments.seed,
        logging_steps=arguments.logging_steps,
        save_steps=arguments.save_steps,
        max_eval_blocks=arguments.max_eval_blocks,
        dro_eta=arguments.dro_eta,
        ldro_eta=arguments.ldro_eta,
        ldro_lookahead_lr=arguments.ldro_lookahead_lr,
        ldro_update_interval=arguments.ldro_update_interval,
        methods=split(arguments.methods),
        launcher=arguments.launcher,
        script=arguments.script.resolve(),
        extra_arguments=arguments.script_args.split(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run Table 1 from command-line arguments; print the table; return the exit status."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        level=logging.INFO,
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    logging.getLogger("hf_ldro").setLevel(logging.INFO)
    try:
        settings = settings_from_arguments(sys.argv[1:] if argv is None else argv)
        outputs = run_experiment(settings)
    except Table1Error as error:
        print(f"table1: error: {error}", file=sys.stderr)
        return 1
    print(outputs.markdown.read_text(encoding="utf-8"))
    return 1 if outputs.failures else 0
