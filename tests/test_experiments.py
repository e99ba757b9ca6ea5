"""`python -m hf_ldro.experiments table1` on two UD languages with a few steps per run.

Every run calls run_mlm_ldro.py's main in this process (a 1-layer GPT-2 of width 32, 6 steps),
so the whole table trains in well under a minute on two CPU cores.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from hf_ldro.experiments import table1
from hf_ldro.experiments.__main__ import main as experiments_main

UD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "multilingual" / "ud"
LANGUAGES = ["eng_Latn", "yor_Latn"]
METHOD_ROWS = [
    "Static mixing (alpha = 1)",
    "Static mixing (alpha = 0.3)",
    "Static mixing (alpha = 0)",
    "DRO",
    "Baselined DRO",
    "L-DRO",
    "Monolingual",
]

pytestmark = pytest.mark.skipif(
    not UD_DIR.is_dir(), reason=f"UD sample data not found at {UD_DIR} (it is not in the repository)"
)


def command_line(output_dir: Path, *extra: str) -> list[str]:
    return [
        "--train_dir", str(UD_DIR),
        "--output_dir", str(output_dir),
        "--languages", ",".join(LANGUAGES),
        "--max_steps", "6",
        "--batch_size", "4",
        "--block_size", "32",
        "--config_overrides", "n_layer=1,n_embd=32,n_head=2",
        "--logging_steps", "2",
        "--save_steps", "3",
        "--max_eval_blocks", "4",
        "--ldro_update_interval", "2",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished_table(tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("table1") / "out"
    status = table1.main(command_line(output_dir))
    assert status == 0, (output_dir / "table1.md").read_text() if (output_dir / "table1.md").exists() else status
    return output_dir


def read_csv_rows(output_dir: Path) -> list[dict[str, str]]:
    with open(output_dir / "table1.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_has_paper_rows(finished_table):
    assert [row["method"] for row in read_csv_rows(finished_table)] == METHOD_ROWS


def test_csv_numbers_finite(finished_table):
    numeric = [
        "avg_perplexity",
        "worst_perplexity",
        "avg_relative_perplexity_percent",
        "worst_relative_perplexity_percent",
    ] + [f"perplexity_{language}" for language in LANGUAGES]
    for row in read_csv_rows(finished_table):
        for column in numeric:
            assert math.isfinite(float(row[column])), (row["method"], column, row[column])
        assert row["worst_language"] in LANGUAGES


def test_worst_not_below_average(finished_table):
    for row in read_csv_rows(finished_table):
        assert float(row["worst_perplexity"]) >= float(row["avg_perplexity"]), row
        assert float(row["worst_relative_perplexity_percent"]) >= float(row["avg_relative_perplexity_percent"]), row


def test_monolingual_row_relative_zero(finished_table):
    monolingual = read_csv_rows(finished_table)[-1]
    assert float(monolingual["avg_relative_perplexity_percent"]) == 0.0
    reference = json.loads((finished_table / "monolingual_yor_Latn" / "reference.json").read_text())
    assert float(monolingual["perplexity_yor_Latn"]) == pytest.approx(reference["reference_perplexities"]["yor_Latn"])


def test_relative_perplexity_uses_references(finished_table):
    dro = next(row for row in read_csv_rows(finished_table) if row["method"] == "DRO")
    monolingual = read_csv_rows(finished_table)[-1]
    expected = [
        100 * (float(dro[f"perplexity_{language}"]) - float(monolingual[f"perplexity_{language}"]))
        / float(monolingual[f"perplexity_{language}"])
        for language in LANGUAGES
    ]
    assert float(dro["avg_relative_perplexity_percent"]) == pytest.approx(sum(expected) / len(expected), rel=1e-6)
    assert float(dro["worst_relative_perplexity_percent"]) == pytest.approx(max(expected), rel=1e-6)


def test_markdown_has_every_row(finished_table):
    markdown = (finished_table / "table1.md").read_text(encoding="utf-8")
    assert "| method | avg perplexity | worst perplexity | avg relative perplexity (%) | worst relative perplexity (%) |" in markdown
    for method in METHOD_ROWS:
        assert f"| {method} |" in markdown, method
    assert "failed" not in markdown


def test_weight_figure_written(finished_table):
    figure = finished_table / "table1_task_weights.png"
    assert figure.is_file()
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_static_alpha_one_samples_by_size(finished_table):
    records = [json.loads(line) for line in (finished_table / "static_alpha1" / "task_weights.jsonl").read_text().splitlines()]
    assert records[0]["weights"]["eng_Latn"] > 0.9


def test_finished_runs_skipped(finished_table, monkeypatch):
    launched = []
    settings = table1.settings_from_arguments(command_line(finished_table))
    table1.run_experiment(settings, launch=lambda arguments, run_dir: launched.append(run_dir))
    assert launched == []


def test_changed_settings_rejected(finished_table):
    settings = table1.settings_from_arguments(command_line(finished_table, "--learning_rate", "0.5"))
    with pytest.raises(table1.Table1Error, match="finished run with other settings"):
        table1.run_experiment(settings, launch=lambda arguments, run_dir: None)


def test_unknown_language_rejected(tmp_path, capsys):
    arguments = command_line(tmp_path / "out")
    arguments[arguments.index("--languages") + 1] = "eng_Latn,xxx_Latn"
    assert experiments_main(["table1", *arguments]) == 1
    error = capsys.readouterr().err
    assert "table1: error:" in error
    assert "xxx_Latn" in error


def test_unknown_experiment_rejected(capsys):
    assert experiments_main(["table9"]) == 2
    assert "unknown experiment 'table9'" in capsys.readouterr().err
