"""Exact resume of run_mlm_ldro.py after SIGKILL, and rejection of incomplete checkpoints.

The resume test runs the real script in subprocesses. One run trains without interruption. A
second run is killed with SIGKILL as soon as its first checkpoint is complete, then resumed with
--resume_from_checkpoint. Both must end with the same task-weight log, final metrics, model
weights and stream positions (CPU, one thread, fixed seeds).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from hf_ldro.checkpoints import (
    CHECKPOINT_COMPLETE_NAME,
    IncompleteCheckpointError,
    check_checkpoint_complete,
    checkpoint_folders,
    checkpoint_problem,
    discard_task_weight_records_after,
    last_complete_checkpoint,
)
from script_loading import load_run_mlm_script

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "run_mlm_ldro.py"
UD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "multilingual" / "ud"
LANGUAGES = ["eng_Latn", "yor_Latn", "amh_Ethi"]
MAX_STEPS = 60
SAVE_STEPS = 12  # not a multiple of LOGGING_STEPS: a checkpoint falls between two logs
LOGGING_STEPS = 5
TOLERANCE = 1e-6
KILL_TIMEOUT_SECONDS = 240

pytestmark = pytest.mark.skipif(
    not UD_DIR.is_dir(), reason=f"UD sample data not found at {UD_DIR} (it is not in the repository)"
)


def script_arguments(output_dir: Path, *extra: str) -> list[str]:
    return [
        "--output_dir", str(output_dir),
        "--data_dir", str(UD_DIR),
        "--languages", ",".join(LANGUAGES),
        "--byte_tokenizer",
        "--config_overrides", "n_layer=1,n_embd=32,n_head=2",
        "--block_size", "32",
        "--per_device_train_batch_size", "6",
        "--max_eval_blocks", "4",
        "--max_steps", str(MAX_STEPS),
        "--save_steps", str(SAVE_STEPS),
        "--save_total_limit", "2",
        "--logging_steps", str(LOGGING_STEPS),
        "--learning_rate", "1e-2",
        "--method", "dro",
        "--dro_eta", "0.5",
        "--seed", "7",
        "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


def subprocess_environment() -> dict[str, str]:
    # One intra-op thread: the same arithmetic order in every run, so results match bit for bit.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}


def start_script(output_dir: Path, log_path: Path, *extra: str) -> subprocess.Popen:
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.Popen(
            [sys.executable, str(SCRIPT), *script_arguments(output_dir, *extra)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=subprocess_environment(),
            cwd=REPO_ROOT,
        )


def wait_for_success(process: subprocess.Popen, log_path: Path) -> None:
    return_code = process.wait(timeout=KILL_TIMEOUT_SECONDS)
    assert return_code == 0, f"run failed ({return_code}):\n{log_path.read_text()[-3000:]}"


def kill_after_first_checkpoint(process: subprocess.Popen, output_dir: Path, log_path: Path) -> None:
    """Poll until a checkpoint folder is complete, then SIGKILL the process."""
    deadline = time.monotonic() + KILL_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if any(checkpoint_problem(folder) is None for folder in checkpoint_folders(output_dir)):
            process.send_signal(signal.SIGKILL)
            break
        if process.poll() is not None:
            break
        time.sleep(0.01)
    return_code = process.wait(timeout=60)
    assert return_code == -signal.SIGKILL, (
        f"the run was not killed during training (exit status {return_code}); raise MAX_STEPS.\n"
        + log_path.read_text()[-3000:]
    )


def read_records(output_dir: Path) -> list[dict]:
    text = (output_dir / "task_weights.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def numeric_results(output_dir: Path) -> dict[str, float]:
    results = json.loads((output_dir / "eval_results.json").read_text(encoding="utf-8"))
    timing = ("runtime", "per_second")
    return {
        key: value
        for key, value in results.items()
        if isinstance(value, (int, float)) and not any(part in key for part in timing)
    }


@pytest.fixture(scope="module")
def killed_and_uninterrupted(tmp_path_factory):
    """Train one uninterrupted run and one killed run side by side, then resume the killed one."""
    root = tmp_path_factory.mktemp("resume")
    uninterrupted, killed = root / "uninterrupted", root / "killed"
    reference_process = start_script(uninterrupted, root / "uninterrupted.log")
    killed_process = start_script(killed, root / "killed.log")
    kill_after_first_checkpoint(killed_process, killed, root / "killed.log")
    records_before_resume = read_records(killed)
    checkpoint = last_complete_checkpoint(killed)
    resumed_process = start_script(killed, root / "resumed.log", "--resume_from_checkpoint", checkpoint)
    wait_for_success(reference_process, root / "uninterrupted.log")
    wait_for_success(resumed_process, root / "resumed.log")
    return {
        "uninterrupted": uninterrupted,
        "resumed": killed,
        "checkpoint": Path(checkpoint),
        "records_before_resume": records_before_resume,
        "resumed_log": (root / "resumed.log").read_text(encoding="utf-8"),
    }


def test_kill_happened_mid_training(killed_and_uninterrupted):
    checkpoint_step = int(killed_and_uninterrupted["checkpoint"].name.split("-")[1])
    assert checkpoint_step < MAX_STEPS
    assert "Checkpoint detected" not in killed_and_uninterrupted["resumed_log"]
    assert f"Resuming training from checkpoint with epoch 0 and global step {checkpoint_step}" in (
        killed_and_uninterrupted["resumed_log"]
    )


def test_resumed_weight_log_matches(killed_and_uninterrupted):
    expected = read_records(killed_and_uninterrupted["uninterrupted"])
    actual = read_records(killed_and_uninterrupted["resumed"])
    assert [record["step"] for record in actual] == [record["step"] for record in expected]
    for got, want in zip(actual, expected):
        assert list(got["weights"]) == LANGUAGES
        for language in LANGUAGES:
            assert math.isclose(got["weights"][language], want["weights"][language], abs_tol=TOLERANCE), (got, want)
            assert math.isclose(got["losses"][language], want["losses"][language], abs_tol=TOLERANCE), (got, want)


def test_weights_moved_during_run(killed_and_uninterrupted):
    last = read_records(killed_and_uninterrupted["uninterrupted"])[-1]["weights"]
    assert max(abs(weight - 1 / len(LANGUAGES)) for weight in last.values()) > 1e-3, last


def test_resumed_final_metrics_match(killed_and_uninterrupted):
    expected = numeric_results(killed_and_uninterrupted["uninterrupted"])
    actual = numeric_results(killed_and_uninterrupted["resumed"])
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert math.isclose(actual[key], value, rel_tol=TOLERANCE, abs_tol=TOLERANCE), (key, actual[key], value)


def test_resumed_model_weights_match(killed_and_uninterrupted):
    expected = load_file(killed_and_uninterrupted["uninterrupted"] / "model.safetensors")
    actual = load_file(killed_and_uninterrupted["resumed"] / "model.safetensors")
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        difference = (actual[name].double() - tensor.double()).abs().max().item()
        assert difference <= TOLERANCE, f"{name}: max difference {difference}"


def test_resumed_stream_positions_match(killed_and_uninterrupted):
    final = f"checkpoint-{MAX_STEPS}"
    name = "task_stream_state_rank0.json"
    expected = json.loads((killed_and_uninterrupted["uninterrupted"] / final / name).read_text())
    actual = json.loads((killed_and_uninterrupted["resumed"] / final / name).read_text())
    assert expected["examples_yielded"] == MAX_STEPS * 6
    for language in LANGUAGES:
        assert actual["languages"][language] == expected["languages"][language], language
    assert actual == expected


def test_resumed_task_weighting_state_matches(killed_and_uninterrupted):
    final = f"checkpoint-{MAX_STEPS}"
    expected = json.loads((killed_and_uninterrupted["uninterrupted"] / final / "task_weighting.json").read_text())
    actual = json.loads((killed_and_uninterrupted["resumed"] / final / "task_weighting.json").read_text())
    for got, want in zip(actual["weighting"]["weights"], expected["weighting"]["weights"]):
        assert math.isclose(got, want, abs_tol=TOLERANCE)
    assert actual["weighting"]["num_updates"] == expected["weighting"]["num_updates"] == MAX_STEPS


def test_records_after_checkpoint_replaced(killed_and_uninterrupted):
    checkpoint_step = int(killed_and_uninterrupted["checkpoint"].name.split("-")[1])
    steps = [record["step"] for record in read_records(killed_and_uninterrupted["resumed"])]
    assert len(steps) == len(set(steps)), steps
    assert steps == sorted(steps)
    assert any(step > checkpoint_step for step in steps)


# ---- incomplete checkpoints ---------------------------------------------------------------------


def short_run_arguments(output_dir: Path, *extra: str) -> list[str]:
    arguments = script_arguments(output_dir)
    for flag, value in (("--max_steps", "6"), ("--save_steps", "2"), ("--logging_steps", "1"), ("--save_total_limit", "5")):
        arguments[arguments.index(flag) + 1] = value
    return arguments + list(extra)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    """A finished in-process run with complete checkpoints at steps 2, 4 and 6."""
    output_dir = tmp_path_factory.mktemp("checkpoints") / "run"
    load_run_mlm_script().main(short_run_arguments(output_dir))
    return output_dir


@pytest.fixture
def damaged_run(short_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(short_run, copy)
    return copy


def test_all_saved_checkpoints_complete(short_run):
    for step in (2, 4, 6):
        assert checkpoint_problem(short_run / f"checkpoint-{step}") is None


def test_missing_marker_skipped(damaged_run, caplog):
    (damaged_run / "checkpoint-6" / CHECKPOINT_COMPLETE_NAME).unlink()
    with caplog.at_level(logging.WARNING, logger="hf_ldro.checkpoints"):
        chosen = last_complete_checkpoint(damaged_run)
    assert chosen == str(damaged_run / "checkpoint-4")
    assert "Skipping incomplete checkpoint" in caplog.text
    assert "checkpoint-6" in caplog.text


def test_missing_weighting_state_skipped(damaged_run, caplog):
    (damaged_run / "checkpoint-6" / "task_weighting.json").unlink()
    with caplog.at_level(logging.WARNING, logger="hf_ldro.checkpoints"):
        chosen = last_complete_checkpoint(damaged_run)
    assert chosen == str(damaged_run / "checkpoint-4")
    assert "task_weighting.json is missing" in caplog.text


def test_truncated_file_skipped(damaged_run, caplog):
    model_file = damaged_run / "checkpoint-6" / "model.safetensors"
    size = model_file.stat().st_size
    with open(model_file, "r+b") as handle:
        handle.truncate(size // 2)
    with caplog.at_level(logging.WARNING, logger="hf_ldro.checkpoints"):
        chosen = last_complete_checkpoint(damaged_run)
    assert chosen == str(damaged_run / "checkpoint-4")
    assert f"has {size // 2} bytes but {size} were written" in caplog.text


def test_folder_without_marker_rejected(damaged_run):
    (damaged_run / "checkpoint-6" / CHECKPOINT_COMPLETE_NAME).unlink()
    with pytest.raises(IncompleteCheckpointError, match="checkpoint-6.*did not finish"):
        check_checkpoint_complete(damaged_run / "checkpoint-6")


def test_script_rejects_incomplete_checkpoint(damaged_run):
    (damaged_run / "checkpoint-4" / "optimizer.pt").unlink()
    script = load_run_mlm_script()
    arguments = script_arguments(damaged_run, "--resume_from_checkpoint", str(damaged_run / "checkpoint-4"))
    with pytest.raises(script.UsageError, match=r"optimizer\.pt is missing"):
        script.main(arguments)


def test_script_rejects_other_languages(damaged_run):
    script = load_run_mlm_script()
    arguments = script_arguments(damaged_run, "--resume_from_checkpoint", str(damaged_run / "checkpoint-4"))
    arguments[arguments.index("--languages") + 1] = "eng_Latn,amh_Ethi,yor_Latn"
    with pytest.raises(script.UsageError, match=r"saved for the languages \['eng_Latn', 'yor_Latn', 'amh_Ethi'\]"):
        script.main(arguments)


def test_discard_records_after_step(tmp_path):
    log = tmp_path / "task_weights.jsonl"
    lines = [json.dumps({"step": step, "weights": {}, "losses": {}}) for step in (5, 10, 15)]
    log.write_text("\n".join(lines) + '\n{"step": 2', encoding="utf-8")
    assert discard_task_weight_records_after(log, 10) == 2
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [5, 10]


# ---- re-running a run ---------------------------------------------------------------------------


def global_step(output_dir: Path) -> int:
    return json.loads((output_dir / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]


def test_rerun_finished_run_evaluates_only(damaged_run, caplog):
    weights_before = (damaged_run / "checkpoint-6" / "model.safetensors").read_bytes()
    (damaged_run / "eval_results.json").unlink()
    with caplog.at_level(logging.INFO, logger="run_mlm_ldro"):
        metrics = load_run_mlm_script().main(short_run_arguments(damaged_run))
    assert not (damaged_run / "checkpoint-7").exists()
    assert global_step(damaged_run) == 6
    assert (damaged_run / "checkpoint-6" / "model.safetensors").read_bytes() == weights_before
    assert "Already trained to step 6 (max_steps 6)" in caplog.text
    assert "evaluating only" in caplog.text
    assert (damaged_run / "eval_results.json").is_file()
    assert all(math.isfinite(metrics[f"eval_{language}_perplexity"]) for language in LANGUAGES)


def test_larger_max_steps_resumes_with_new_eta(damaged_run, caplog):
    arguments = short_run_arguments(damaged_run, "--max_steps", "8", "--dro_eta", "0.25")
    with caplog.at_level(logging.WARNING, logger="run_mlm_ldro"):
        load_run_mlm_script().main(arguments)
    assert global_step(damaged_run) == 8
    assert (damaged_run / "checkpoint-8").is_dir()
    assert "was trained with eta=0.5; this run uses eta=0.25" in caplog.text


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--block_size", "16"], r"has n_positions=32 but this run's model has n_positions=16: --block_size"),
        (["--config_overrides", "n_layer=2,n_embd=32,n_head=2"], r"has n_layer=1 but this run's model has n_layer=2"),
        (["--method", "ldro"], r"contains OnlineDRO task weights, but --method ldro uses LookaheadDRO"),
    ],
)  # fmt: skip
def test_changed_settings_rejected_on_resume(damaged_run, extra, message):
    script = load_run_mlm_script()
    weights_before = (damaged_run / "model.safetensors").read_bytes()
    with pytest.raises(script.UsageError, match=message):
        script.main(short_run_arguments(damaged_run, "--max_steps", "8", *extra))
    assert (damaged_run / "model.safetensors").read_bytes() == weights_before
    assert not (damaged_run / "checkpoint-8").exists()
