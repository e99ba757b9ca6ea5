"""Model card of LDROTrainer and run_mlm_ldro.py, and push_to_hub without a network.

The card is checked offline through the README.md that `create_model_card` writes into
output_dir. The push tests use offline mode (HF_HUB_OFFLINE=1, set by conftest.py) and an endpoint
on a closed local port; neither may cost a file that training already saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import default_data_collator

from hf_ldro.arguments import LDROArguments
from hf_ldro.trainer import LDROTrainer
from test_trainer_data import eval_datasets, language_dataset, tiny_gpt2, training_arguments
from script_loading import load_run_mlm_script

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "run_mlm_ldro.py"
UD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "multilingual" / "ud"
LANGUAGES = ["eng_Latn", "yor_Latn", "amh_Ethi"]
REFERENCE_PERPLEXITIES = {"eng_Latn": 20.0, "yor_Latn": 25.0, "amh_Ethi": 15.0}
CLOSED_PORT = 9  # the discard port, closed on this machine; checked by `closed_local_port`
SAVED_FILES = ("model.safetensors", "config.json", "tokenizer_config.json", "eval_results.json", "task_weights.jsonl")

pytestmark = pytest.mark.skipif(
    not UD_DIR.is_dir(), reason=f"UD sample data not found at {UD_DIR} (it is not in the repository)"
)


script = load_run_mlm_script()


def script_arguments(output_dir: Path, *extra: str) -> list[str]:
    return [
        "--output_dir", str(output_dir),
        "--data_dir", str(UD_DIR),
        "--languages", ",".join(LANGUAGES),
        "--byte_tokenizer",
        "--config_overrides", "n_layer=1,n_embd=32,n_head=2",
        "--block_size", "32",
        "--max_eval_blocks", "4",
        "--max_steps", "8",
        "--logging_steps", "2",
        "--learning_rate", "1e-2",
        "--method", "dro",
        "--dro_eta", "0.5",
        "--reference_perplexities", json.dumps(REFERENCE_PERPLEXITIES),
        "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, dict]:
    output_dir = tmp_path_factory.mktemp("card") / "run"
    metrics = script.main(script_arguments(output_dir))
    return output_dir, metrics


def card_text(output_dir: Path) -> str:
    return (output_dir / "README.md").read_text(encoding="utf-8")


def table_row(card: str, first_cell: str) -> list[str]:
    for line in card.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r} in the card:\n{card}")


def test_card_names_method(finished_run):
    card = card_text(finished_run[0])
    assert card.count("## Task weighting") == 1
    assert "Method: `dro`" in card


def test_card_lists_hyperparameters(finished_run):
    card = card_text(finished_run[0])
    assert table_row(card, "dro_eta")[1] == "0.5"
    assert table_row(card, "method")[1] == "dro"
    assert table_row(card, "max_consecutive_nonfinite")[1] == "10"


def test_card_has_final_weights(finished_run):
    output_dir = finished_run[0]
    card = card_text(output_dir)
    state = json.loads((output_dir / "checkpoint-8" / "task_weighting.json").read_text(encoding="utf-8"))
    final_weights = dict(zip(state["task_names"], state["weighting"]["weights"]))
    weights_section = card.split("Final task weights:")[1].split("## Per-language evaluation")[0]
    for language in LANGUAGES:
        assert table_row(weights_section, language)[1] == f"{final_weights[language]:.4f}"


def test_card_has_perplexity_table(finished_run):
    output_dir, metrics = finished_run
    card = card_text(output_dir)
    evaluation = card.split("## Per-language evaluation")[1]
    assert "| language | loss | perplexity | relative perplexity |" in evaluation
    for language in LANGUAGES:
        row = table_row(evaluation, language)
        assert float(row[2]) == pytest.approx(metrics[f"eval_{language}_perplexity"], rel=1e-3)
        assert float(row[3]) == pytest.approx(metrics[f"eval_{language}_relative_perplexity"], rel=1e-3, abs=1e-3)
    average = table_row(evaluation, "average")
    assert float(average[2]) == pytest.approx(metrics["eval_avg_perplexity"], rel=1e-3)
    worst = table_row(evaluation, f"worst ({metrics['eval_worst_language']})")
    assert float(worst[2]) == pytest.approx(metrics["eval_worst_perplexity"], rel=1e-3)
    assert worst[3].endswith(f"({metrics['eval_worst_relative_language']})")


def test_card_keeps_transformers_metadata(finished_run):
    card = card_text(finished_run[0])
    assert card.startswith("---\n")
    assert re.search(r"^tags:\n(- .*\n)*- dro\n", card, flags=re.MULTILINE)


def test_trainer_card_without_script(tmp_path):
    train = language_dataset(LANGUAGES, "train", blocks_per_language=4)
    trainer = LDROTrainer(
        tiny_gpt2(),
        training_arguments(tmp_path, max_steps=2),
        data_collator=default_data_collator,
        train_dataset=train,
        eval_dataset=eval_datasets(LANGUAGES, blocks_per_language=2),
        ldro_args=LDROArguments(method="dro", dro_eta=0.3),
        task_names=LANGUAGES,
    )
    trainer.train()
    metrics = trainer.evaluate()
    trainer.create_model_card(model_name="tiny")
    card = card_text(tmp_path)
    assert "Method: `dro`" in card
    assert table_row(card, "dro_eta")[1] == "0.3"
    evaluation = card.split("## Per-language evaluation")[1]
    assert float(table_row(evaluation, "average")[2]) == pytest.approx(metrics["eval_avg_perplexity"], rel=1e-3)


# ---- push_to_hub without a network --------------------------------------------------------------


def fingerprints(output_dir: Path) -> dict[str, str]:
    return {name: hashlib.sha256((output_dir / name).read_bytes()).hexdigest() for name in SAVED_FILES}


@pytest.fixture
def saved_run(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run[0], copy)
    return copy


def test_push_offline_fails_fast(saved_run):
    before = fingerprints(saved_run)
    start = time.monotonic()
    with pytest.raises(script.UsageError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)"):
        script.main(script_arguments(saved_run, "--push_to_hub", "--hub_model_id", "someone/ldro-test"))
    assert time.monotonic() - start < 30
    assert fingerprints(saved_run) == before


@pytest.fixture
def closed_local_port() -> int:
    try:
        with socket.create_connection(("127.0.0.1", CLOSED_PORT), timeout=2):
            pytest.skip(f"port {CLOSED_PORT} is open on this machine; the test needs a closed port")
    except OSError:
        return CLOSED_PORT


def test_push_unreachable_endpoint_fails_fast(saved_run, closed_local_port):
    before = fingerprints(saved_run)
    environment = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{closed_local_port}"}
    start = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *script_arguments(saved_run, "--push_to_hub", "--hub_model_id", "someone/ldro-test")],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO_ROOT,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert completed.returncode != 0
    assert f"cannot reach the Hub at http://127.0.0.1:{closed_local_port}" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert fingerprints(saved_run) == before


def test_trainer_push_offline_keeps_outputs(tmp_path):
    train = language_dataset(LANGUAGES, "train", blocks_per_language=4)
    trainer = LDROTrainer(
        tiny_gpt2(),
        training_arguments(tmp_path, max_steps=2),
        data_collator=default_data_collator,
        train_dataset=train,
        ldro_args=LDROArguments(method="dro"),
        task_names=LANGUAGES,
    )
    trainer.train()
    trainer.save_model()
    saved = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    from huggingface_hub.errors import OfflineModeIsEnabled

    start = time.monotonic()
    with pytest.raises(OfflineModeIsEnabled):
        trainer.push_to_hub()
    assert time.monotonic() - start < 30
    for name, content in saved.items():
        assert (tmp_path / name).read_bytes() == content, name
