"""Bad input to run_mlm_ldro.py and LDROTrainer: a clear error before training, or logged handling.

The data layer's own errors are tested in test_data_errors.py. Here they go through the script,
which must stop before any training with a message that names the file, the line and the fix.
Cases covered elsewhere: an unknown language and reference losses missing a language
(test_run_mlm_ldro.py), a checkpoint saved for another task list (test_resume.py), NaN losses
on every task (test_trainer.py).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import default_data_collator

from hf_ldro.arguments import LDROArguments
from hf_ldro.checkpoints import checkpoint_problem
from hf_ldro.trainer import TASK_WEIGHTS_LOG_NAME, LDROTrainer, NonFiniteTaskLossError
from test_trainer_data import tiny_gpt2, training_arguments
from script_loading import load_run_mlm_script

REPO_ROOT = Path(__file__).resolve().parents[1]
UD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "multilingual" / "ud"
needs_ud = pytest.mark.skipif(not UD_DIR.is_dir(), reason=f"UD sample data not found at {UD_DIR}")


script = load_run_mlm_script()


def script_arguments(output_dir: Path, data_dir: Path, languages: str, *extra: str) -> list[str]:
    return [
        "--output_dir", str(output_dir),
        "--data_dir", str(data_dir),
        "--languages", languages,
        "--byte_tokenizer",
        "--config_overrides", "n_layer=1,n_embd=32,n_head=2",
        "--block_size", "32",
        "--max_eval_blocks", "2",
        "--max_steps", "4",
        "--logging_steps", "2",
        "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


def write_jsonl(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")


def good_texts(count: int) -> list[str]:
    return [f"Sentence number {index} of a small but valid training document." for index in range(count)]


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A data folder with one valid language, `aaa`; each test adds a broken language `bbb`."""
    folder = tmp_path / "data"
    write_jsonl(folder / "aaa" / "train.jsonl", good_texts(40))
    write_jsonl(folder / "aaa" / "validation.jsonl", good_texts(8))
    return folder


def break_language(folder: Path, case: str) -> None:
    language = folder / "bbb"
    language.mkdir()
    train = language / "train.jsonl"
    if case == "empty folder":
        return
    write_jsonl(language / "validation.jsonl", good_texts(4))
    if case == "empty file":
        train.write_text("\n  \n", encoding="utf-8")
    elif case == "invalid JSON line":
        train.write_text(json.dumps({"text": "fine"}) + "\n" + '{"text": "cut off\n', encoding="utf-8")
    elif case == "missing text field":
        train.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "x"}) + "\n", encoding="utf-8")
    elif case == "invalid UTF-8 (gzip)":
        with gzip.open(language / "train.jsonl.gz", "wb") as handle:
            handle.write(json.dumps({"text": "fine"}).encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    elif case == "shorter than one block":
        write_jsonl(train, ["tiny"])
    else:
        raise ValueError(case)


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty folder", r"Language folder '.*bbb' has no train file"),
        ("empty file", r"bbb/train\.jsonl' for language 'bbb' contains no documents"),
        ("invalid JSON line", r"bbb/train\.jsonl, line 2: invalid JSON"),
        ("missing text field", r"bbb/train\.jsonl, line 2: missing text field 'text' \(found \['body'\]\)"),
        ("invalid UTF-8 (gzip)", r"bbb/train\.jsonl\.gz, line 2: invalid UTF-8 byte b'\\xe9'"),
        ("shorter than one block", r"'bbb' has 5 tokens .* fewer than one block of block_size=32"),
    ],
)
def test_bad_language_data_stops_script(tmp_path, data_dir, case, message):
    break_language(data_dir, case)
    output_dir = tmp_path / "out"
    with pytest.raises(script.UsageError, match=message):
        script.main(script_arguments(output_dir, data_dir, "aaa,bbb"))
    assert not (output_dir / "model.safetensors").exists()
    assert not output_dir.exists() or not list(output_dir.glob("checkpoint-*"))


def test_duplicate_languages_stop_script(tmp_path, data_dir):
    with pytest.raises(script.UsageError, match=r"Duplicate languages in the language list: \['aaa'\]"):
        script.main(script_arguments(tmp_path / "out", data_dir, "aaa,aaa"))


def test_encoding_errors_replace_loads_data(tmp_path, data_dir, caplog):
    break_language(data_dir, "invalid UTF-8 (gzip)")
    arguments = script_arguments(tmp_path / "out", data_dir, "aaa,bbb", "--encoding_errors", "replace")
    _, data_args, ldro_args, _ = script.parse_arguments(arguments)
    with caplog.at_level(logging.WARNING, logger="hf_ldro.data"):
        data = script.load_language_data(data_args, ldro_args)
    assert data.task_names == ["aaa", "bbb"]
    assert "U+FFFD" in caplog.text


def test_encoding_errors_rejects_unknown_mode(tmp_path, data_dir):
    with pytest.raises(SystemExit):
        script.parse_arguments(script_arguments(tmp_path / "out", data_dir, "aaa", "--encoding_errors", "ignore"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--per_device_train_batch_size", "0"], r"--per_device_train_batch_size must be an integer >= 1, got 0"),
        (["--per_device_eval_batch_size", "0"], r"--per_device_eval_batch_size must be an integer >= 1, got 0"),
        (["--model_name_or_path", "./no/such/model"], r"model folder \./no/such/model not found"),
        (["--config_name", "~/no/such/config"], r"config folder ~/no/such/config not found"),
    ],
)  # fmt: skip
def test_bad_training_arguments_rejected(tmp_path, data_dir, extra, message):
    arguments = script_arguments(tmp_path / "out", data_dir, "aaa", *extra)
    if "--model_name_or_path" in extra:
        index = arguments.index("--config_overrides")
        del arguments[index : index + 2]
    with pytest.raises(script.UsageError, match=message):
        script.parse_arguments(arguments)


@pytest.mark.parametrize(
    "name, message",
    [
        ("runs/demo/tokenzer", r"tokenizer folder runs/demo/tokenzer not found"),
        ("./tokenzer", r"tokenizer folder \./tokenzer not found"),
        ("google/mt5-small", r"could not load google/mt5-small from the Hub \(offline / unreachable\)"),
    ],
)
def test_bad_tokenizer_name_rejected(tmp_path, data_dir, name, message):
    arguments = script_arguments(tmp_path / "out", data_dir, "aaa", "--tokenizer_name", name)
    arguments.remove("--byte_tokenizer")
    with pytest.raises(script.UsageError, match=message):
        script.main(arguments)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_output_dir_is_file_rejected(tmp_path, data_dir):
    existing_file = tmp_path / "taken"
    existing_file.write_text("not a folder", encoding="utf-8")
    for output_dir in (existing_file, existing_file / "run"):
        with pytest.raises(script.UsageError, match=rf"{existing_file} is an existing file, not a folder"):
            script.parse_arguments(script_arguments(output_dir, data_dir, "aaa"))


def test_json_config_wrong_type_one_line(tmp_path, data_dir):
    config = {
        "output_dir": str(tmp_path / "out"),
        "data_dir": str(data_dir),
        "byte_tokenizer": True,
        "ldro_update_interval": "fifty",
    }
    config_path = tmp_path / "run.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_mlm_ldro.py"), str(config_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert f"run_mlm_ldro.py: error: Config file {config_path}: " in completed.stderr
    assert "ldro_update_interval='fifty' has type str" in completed.stderr
    assert "must be an integer" in completed.stderr


# ---- unusual but valid setups -------------------------------------------------------------------


def read_records(output_dir: Path) -> list[dict]:
    lines = (output_dir / TASK_WEIGHTS_LOG_NAME).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@needs_ud
@pytest.mark.parametrize("method", ["dro", "ldro"])
def test_single_task_trains(tmp_path, method):
    output_dir = tmp_path / method
    metrics = script.main(script_arguments(output_dir, UD_DIR, "yor_Latn", "--method", method, "--ldro_update_interval", "2"))
    assert [record["weights"] for record in read_records(output_dir)] == [{"yor_Latn": 1.0}] * 2
    assert math.isfinite(metrics["eval_yor_Latn_perplexity"])


@needs_ud
def test_batch_smaller_than_task_count(tmp_path, caplog):
    output_dir = tmp_path / "small_batch"
    languages = ["eng_Latn", "yor_Latn", "amh_Ethi", "jpn_Jpan"]
    arguments = script_arguments(
        output_dir, UD_DIR, ",".join(languages),
        "--per_device_train_batch_size", "2", "--method", "ldro", "--ldro_eta", "0.5",
        "--ldro_update_interval", "1", "--logging_steps", "1",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="hf_ldro.trainer"):
        metrics = script.main(arguments)
    assert "every step misses some tasks" in caplog.text
    absent_warnings = [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and "absent from the interaction batch" in record.getMessage()
    ]
    assert absent_warnings
    assert "TaskStratifiedStream" in absent_warnings[0]
    for record in read_records(output_dir):
        weights = list(record["weights"].values())
        assert all(math.isfinite(weight) and weight > 0 for weight in weights), record
        assert math.isclose(sum(weights), 1.0, abs_tol=1e-9), record
    assert all(math.isfinite(metrics[f"eval_{language}_perplexity"]) for language in languages)


# ---- non-finite losses and converged tasks (trainer level) --------------------------------------

TASKS = ["aaa", "bbb"]
NAN_TASK_MARKER = 5  # first token of every example of task "bbb"


def marked_dataset(examples_per_task: int = 4, length: int = 16) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    rows = {"input_ids": [], "labels": [], "task_ids": []}
    for task_id in range(len(TASKS)):
        for _ in range(examples_per_task):
            ids = torch.randint(10, 200, (length,), generator=generator)
            if task_id == 1:
                ids[0] = NAN_TASK_MARKER
            rows["input_ids"].append(ids.tolist())
            rows["labels"].append(ids.tolist())
            rows["task_ids"].append(task_id)
    return Dataset.from_dict(rows)


def test_nan_in_one_task_keeps_weights_and_checkpoints(tmp_path, caplog):
    earlier_output = tmp_path / "eval_results.json"
    earlier_output.write_text('{"eval_loss": 1.0}', encoding="utf-8")
    trainer = LDROTrainer(
        tiny_gpt2(),
        training_arguments(
            tmp_path, per_device_train_batch_size=8, max_steps=20, save_strategy="steps",
            save_steps=2, save_total_limit=1,
        ),
        data_collator=default_data_collator,
        train_dataset=marked_dataset(),
        ldro_args=LDROArguments(method="dro", dro_eta=0.5, max_consecutive_nonfinite=3),
        task_names=TASKS,
    )  # fmt: skip

    def poison_task_bbb(module, args, kwargs, output):
        if trainer.state.global_step >= 4:
            rows = kwargs["input_ids"][:, 0] == NAN_TASK_MARKER
            output.logits[rows] = float("nan")
        return output

    trainer.model.register_forward_hook(poison_task_bbb, with_kwargs=True)
    with caplog.at_level(logging.WARNING, logger="hf_ldro.trainer"):
        with pytest.raises(NonFiniteTaskLossError, match=r"at step 7: the loss of task\(s\) .* for 3 consecutive"):
            trainer.train()

    warnings = [record.getMessage() for record in caplog.records if "non-finite loss" in record.getMessage()]
    assert warnings[0].startswith("Step 5: non-finite loss for task(s) ['bbb'], task weights not updated")
    assert len(warnings) == 3
    records = read_records(tmp_path)
    assert all(math.isfinite(weight) for record in records for weight in record["weights"].values())
    weights_at_step_4 = next(record["weights"] for record in records if record["step"] == 4)
    assert trainer.weighting.weight_dict() == pytest.approx(weights_at_step_4, abs=1e-12)
    assert checkpoint_problem(tmp_path / "checkpoint-4") is None
    assert "older checkpoints are kept" in caplog.text
    assert earlier_output.read_text(encoding="utf-8") == '{"eval_loss": 1.0}'


class ParameterIndependentLM(nn.Module):
    """A causal LM whose logits do not depend on its only parameter: every gradient is zero."""

    def __init__(self, vocab_size: int = 256):
        super().__init__()
        self.vocab_size = vocab_size
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = nn.functional.one_hot(input_ids, self.vocab_size).float() * 3.0
        return {"logits": logits + 0.0 * self.unused}


def test_zero_gradients_keep_ldro_uniform(tmp_path, caplog):
    trainer = LDROTrainer(
        ParameterIndependentLM(),
        training_arguments(tmp_path, per_device_train_batch_size=8, max_steps=4),
        data_collator=default_data_collator,
        train_dataset=marked_dataset(),
        ldro_args=LDROArguments(
            method="ldro", ldro_eta=1.0, ldro_lookahead_lr=1.0, ldro_update_interval=2, lm_objective="causal"
        ),
        task_names=TASKS,
    )
    with caplog.at_level(logging.INFO, logger="hf_ldro.trainer"):
        trainer.train()
    assert "have a zero gradient" in caplog.text
    assert torch.equal(trainer.weighting.interaction, torch.zeros(2, 2, dtype=torch.float64))
    assert trainer.weighting.weights.tolist() == pytest.approx([0.5, 0.5], abs=1e-12)
