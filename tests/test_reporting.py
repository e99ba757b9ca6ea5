"""task_weights.jsonl round trip, plots, atomic JSON and the model-card section."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from hf_ldro.metrics import language_metrics
from hf_ldro.reporting import (
    append_task_weights_line,
    model_card_section,
    plot_perplexities,
    plot_task_weights,
    read_task_weights,
    write_json_atomic,
)

TASKS = ["eng_Latn", "yor_Latn", "amh_Ethi"]


@pytest.fixture()
def weights_log(tmp_path):
    path = tmp_path / "task_weights.jsonl"
    for step in range(1, 6):
        weights = {"eng_Latn": 0.5 - 0.05 * step, "yor_Latn": 0.3 + 0.05 * step, "amh_Ethi": 0.2}
        losses = {"eng_Latn": 3.0, "yor_Latn": 4.0, "amh_Ethi": float("nan") if step == 1 else 5.0}
        append_task_weights_line(str(path), step * 10, weights, losses)
    return path


@pytest.fixture()
def metrics():
    return language_metrics(
        {name: (index + 1) * 20.0 for index, name in enumerate(TASKS)},
        {name: 10 for name in TASKS},
        {name: 5.0 for name in TASKS},
    )


def test_jsonl_round_trip(weights_log):
    records = read_task_weights(str(weights_log))

    assert [record["step"] for record in records] == [10, 20, 30, 40, 50]
    assert records[0]["weights"]["yor_Latn"] == pytest.approx(0.35)
    assert records[0]["losses"]["amh_Ethi"] is None
    assert records[1]["losses"]["amh_Ethi"] == 5.0


def test_malformed_jsonl_line_is_located(tmp_path):
    path = tmp_path / "task_weights.jsonl"
    path.write_text('{"step": 1, "weights": {}, "losses": {}}\nnot json\n')

    with pytest.raises(ValueError, match=r"task_weights.jsonl:2"):
        read_task_weights(str(path))


def test_plot_task_weights_writes_png(tmp_path, weights_log):
    png = tmp_path / "plots" / "weights.png"
    plot_task_weights(str(weights_log), str(png))

    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size[0] > 100


def test_plot_perplexities_writes_png(tmp_path, metrics):
    png = tmp_path / "perplexity.png"
    plot_perplexities(metrics, str(png))

    with Image.open(png) as image:
        assert image.format == "PNG"


def test_plot_perplexities_needs_language_metrics(tmp_path):
    with pytest.raises(ValueError, match="No per-language metrics"):
        plot_perplexities({"eval_loss": 1.0}, str(tmp_path / "x.png"))


def test_write_json_atomic_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomic(str(path), {"a": 1})
    write_json_atomic(str(path), {"a": 2})

    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_json_atomic_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomic(str(path), {"a": 1})

    with pytest.raises(ValueError):
        write_json_atomic(str(path), {"a": math.nan})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_model_card_section_lists_weights_and_table(metrics):
    section = model_card_section(
        "ldro", {"ldro_eta": 0.01, "ldro_update_interval": 100}, {"eng_Latn": 0.25, "yor_Latn": 0.75},
        metrics,
    )

    assert "Method: `ldro`" in section
    assert "| ldro_eta | 0.01 |" in section
    assert "| yor_Latn | 0.7500 |" in section
    assert "| worst (amh_Ethi) |" in section
