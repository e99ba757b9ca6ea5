"""End-to-end runs of run_mlm_ldro.py on four UD languages: every method, references, JSON config.

Each run trains a 1-layer GPT-2 of width 32 for 10 steps on 64-byte blocks, in-process through
`main()`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from script_loading import load_run_mlm_script

REPO_ROOT = Path(__file__).resolve().parents[1]
UD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "multilingual" / "ud"
LANGUAGES = ["eng_Latn", "yor_Latn", "amh_Ethi", "jpn_Jpan"]
MAX_STEPS = 10
LOGGING_STEPS = 2

pytestmark = pytest.mark.skipif(
    not UD_DIR.is_dir(), reason=f"UD sample data not found at {UD_DIR} (it is not in the repository)"
)


script = load_run_mlm_script()


def small_run_arguments(output_dir: Path, languages=LANGUAGES) -> list[str]:
    return [
        "--output_dir", str(output_dir),
        "--data_dir", str(UD_DIR),
        "--languages", ",".join(languages),
        "--byte_tokenizer",
        "--config_overrides", "n_layer=1,n_embd=32,n_head=2",
        "--block_size", "64",
        "--max_eval_blocks", "4",
        "--max_steps", str(MAX_STEPS),
        "--logging_steps", str(LOGGING_STEPS),
        "--learning_rate", "1e-2",
        "--disable_tqdm", "true",
    ]  # fmt: skip


def run(output_dir: Path, *extra: str, languages=LANGUAGES) -> dict:
    return script.main(small_run_arguments(output_dir, languages) + list(extra))


def read_weight_records(output_dir: Path) -> list[dict]:
    lines = (output_dir / "task_weights.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def assert_run_outputs(output_dir: Path, languages: list[str]) -> dict:
    """Check the files and evaluation metrics every run writes; return eval_results.json."""
    for name in ("eval_results.json", "task_weights.jsonl", "task_weights.png", "perplexity.png",
                 "README.md", "config.json", "model.safetensors", "tokenizer_config.json"):
        assert (output_dir / name).is_file(), f"{name} missing in {sorted(p.name for p in output_dir.iterdir())}"
    results = json.loads((output_dir / "eval_results.json").read_text(encoding="utf-8"))
    for language in languages:
        for metric in ("loss", "perplexity"):
            key = f"eval_{language}_{metric}"
            assert key in results, f"{key} missing from eval_results.json"
            assert math.isfinite(results[key]), f"{key} = {results[key]}"
    for key in ("eval_avg_perplexity", "eval_worst_perplexity"):
        assert math.isfinite(results[key]), f"{key} = {results[key]}"
    assert results["eval_worst_language"] in languages
    return results


def assert_weights_on_simplex(records: list[dict], languages: list[str]) -> None:
    assert len(records) == MAX_STEPS // LOGGING_STEPS
    for record in records:
        assert list(record["weights"]) == languages
        weights = list(record["weights"].values())
        assert all(weight >= 0 for weight in weights), record
        assert math.isclose(sum(weights), 1.0, abs_tol=1e-6), record


def max_distance_from_uniform(records: list[dict]) -> float:
    distances = []
    for record in records:
        weights = list(record["weights"].values())
        distances.extend(abs(weight - 1.0 / len(weights)) for weight in weights)
    return max(distances)


@pytest.mark.parametrize(
    "method, extra",
    [
        ("dro", ["--dro_eta", "0.5"]),
        ("ldro", ["--ldro_eta", "0.5", "--ldro_update_interval", "4"]),
        ("ldro_exact", ["--ldro_lookahead_lr", "0.1", "--ldro_update_interval", "4"]),
    ],
)
def test_online_methods_move_weights(tmp_path, method, extra):
    output_dir = tmp_path / method
    run(output_dir, "--method", method, *extra)
    assert_run_outputs(output_dir, LANGUAGES)
    records = read_weight_records(output_dir)
    assert_weights_on_simplex(records, LANGUAGES)
    assert max_distance_from_uniform(records) > 1e-3, records


def test_static_mixing_uses_token_counts(tmp_path):
    output_dir = tmp_path / "static"
    run(output_dir, "--method", "static", "--mixing_alpha", "0.5")
    assert_run_outputs(output_dir, LANGUAGES)
    records = read_weight_records(output_dir)
    assert_weights_on_simplex(records, LANGUAGES)
    first = records[0]["weights"]
    assert all(record["weights"] == first for record in records)
    assert first["eng_Latn"] == max(first.values())
    assert first["yor_Latn"] < 1.0 / len(LANGUAGES)


def test_masked_lm_run(tmp_path):
    output_dir = tmp_path / "mlm"
    run(output_dir, "--mlm", "--method", "dro", "--config_overrides",
        "num_hidden_layers=1,hidden_size=32,num_attention_heads=2,intermediate_size=64")  # fmt: skip
    config = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "roberta"
    assert_run_outputs(output_dir, LANGUAGES)


@pytest.fixture(scope="module")
def yoruba_reference(tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("monolingual") / "yor_Latn"
    run(output_dir, "--method", "monolingual", languages=["yor_Latn"])
    return output_dir


def test_monolingual_writes_reference(yoruba_reference):
    assert_run_outputs(yoruba_reference, ["yor_Latn"])
    reference = json.loads((yoruba_reference / "reference.json").read_text(encoding="utf-8"))
    results = json.loads((yoruba_reference / "eval_results.json").read_text(encoding="utf-8"))
    assert reference["language"] == "yor_Latn"
    assert reference["reference_losses"] == {"yor_Latn": results["eval_yor_Latn_loss"]}
    assert reference["reference_perplexities"] == {"yor_Latn": results["eval_yor_Latn_perplexity"]}


def test_baselined_dro_with_references(tmp_path, yoruba_reference):
    output_dir = tmp_path / "baselined"
    other_languages = json.dumps({"eng_Latn": 3.0, "amh_Ethi": 3.0, "jpn_Jpan": 3.0})
    metrics = run(
        output_dir,
        "--method", "baselined_dro",
        "--dro_eta", "0.5",
        "--reference_losses", str(yoruba_reference / "reference.json"), other_languages,
    )  # fmt: skip
    results = assert_run_outputs(output_dir, LANGUAGES)
    reference = json.loads((yoruba_reference / "reference.json").read_text(encoding="utf-8"))
    reference_perplexity = reference["reference_perplexities"]["yor_Latn"]
    expected = (results["eval_yor_Latn_perplexity"] - reference_perplexity) / reference_perplexity
    assert math.isclose(results["eval_yor_Latn_relative_perplexity"], expected, rel_tol=1e-6)
    assert math.isclose(
        results["eval_eng_Latn_relative_perplexity"],
        (results["eval_eng_Latn_perplexity"] - math.exp(3.0)) / math.exp(3.0),
        rel_tol=1e-6,
    )
    assert math.isfinite(results["eval_worst_relative_perplexity"])
    assert metrics["eval_worst_relative_language"] in LANGUAGES
    assert max_distance_from_uniform(read_weight_records(output_dir)) > 1e-3


def test_reference_from_other_tokenizer(tmp_path, yoruba_reference):
    arguments = small_run_arguments(tmp_path / "out", ["yor_Latn", "amh_Ethi"])
    arguments.remove("--byte_tokenizer")
    arguments += ["--tokenizer_vocab_size", "600", "--method", "baselined_dro", "--reference_losses",
                  str(yoruba_reference / "reference.json"), '{"amh_Ethi": 3.0}']  # fmt: skip
    with pytest.raises(script.UsageError, match="another tokenizer"):
        script.main(arguments)


def test_resume_from_last_checkpoint(tmp_path):
    output_dir = tmp_path / "resumed"
    arguments = small_run_arguments(output_dir, ["yor_Latn", "amh_Ethi"])
    arguments.remove("--byte_tokenizer")
    arguments += ["--tokenizer_vocab_size", "600", "--method", "dro", "--save_steps", "4"]
    script.main(arguments + ["--max_steps", "4"])
    assert (output_dir / "checkpoint-4" / "task_weighting.json").is_file()
    tokenizer_file = (output_dir / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8")
    script.main(arguments + ["--max_steps", "8"])
    trainer_state = json.loads((output_dir / "trainer_state.json").read_text(encoding="utf-8"))
    assert trainer_state["global_step"] == 8
    steps = [record["step"] for record in read_weight_records(output_dir)]
    assert steps == [2, 4, 6, 8]
    assert (output_dir / "tokenizer.json").read_text(encoding="utf-8") == tokenizer_file


def test_model_card_new_model_from_scratch(tmp_path):
    output_dir = tmp_path / "card"
    run(output_dir, "--max_steps", "2", "--method", "dro", languages=["yor_Latn", "amh_Ethi"])
    card = (output_dir / "README.md").read_text(encoding="utf-8")
    assert "This model was trained from scratch on" in card
    assert "fine-tuned version of" not in card
    assert "base_model" not in card


def test_json_config_file(tmp_path):
    output_dir = tmp_path / "from_json"
    config = {
        "output_dir": str(output_dir),
        "train_files": [f"{lang}={UD_DIR / lang / 'train.jsonl.gz'}" for lang in ("eng_Latn", "yor_Latn")],
        "validation_files": [f"{lang}={UD_DIR / lang / 'validation.jsonl.gz'}" for lang in ("eng_Latn", "yor_Latn")],
        "byte_tokenizer": True,
        "config_overrides": "n_layer=1,n_embd=32,n_head=2",
        "block_size": 64,
        "max_eval_blocks": 4,
        "max_steps": MAX_STEPS,
        "logging_steps": LOGGING_STEPS,
        "method": "dro",
        "dro_eta": 0.5,
        "disable_tqdm": True,
    }
    config_path = tmp_path / "run.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    script.main([str(config_path)])
    assert_run_outputs(output_dir, ["eng_Latn", "yor_Latn"])
    trainer_state = json.loads((output_dir / "trainer_state.json").read_text(encoding="utf-8"))
    assert trainer_state["global_step"] == MAX_STEPS


def test_json_config_unknown_key(tmp_path):
    config_path = tmp_path / "run.json"
    config_path.write_text(json.dumps({"output_dir": str(tmp_path / "out"), "n_layers": 2}), encoding="utf-8")
    with pytest.raises(ValueError, match="n_layers"):
        script.main([str(config_path)])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--languages", "eng_Latn,xxx_Latn"], "xxx_Latn"),
        (["--method", "monolingual", "--languages", "eng_Latn,yor_Latn"], "one language"),
        (["--method", "baselined_dro", "--languages", "eng_Latn,yor_Latn",
          "--reference_losses", '{"eng_Latn": 3.0}'], "yor_Latn"),
        (["--reference_losses", "no/such/reference.json"], "not found"),
        (["--reference_perplexities", '{"eng_Latn": -1}'], "eng_Latn"),
        (["--method", "baselined_dro"], "reference_losses"),
        (["--max_steps", "-1"], "max_steps"),
        (["--config_overrides", "n_layers=2"], "n_layers"),
        (["--train_files", "eng_Latn=a.jsonl"], "--data_dir and --train_files"),
    ],
)  # fmt: skip
def test_bad_arguments_fail_before_training(tmp_path, extra, message):
    output_dir = tmp_path / "out"
    arguments = small_run_arguments(output_dir)
    if "--languages" in extra:
        index = arguments.index("--languages")
        del arguments[index : index + 2]
    with pytest.raises(script.UsageError, match=message):
        script.main(arguments + extra)
    assert not (output_dir / "model.safetensors").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "static", "--mixing_alpha", "0.3"], "--dataset_sizes"),
        (["--method", "dro", "--dataset_sizes", '{"yo": 10}'], "'sw'"),
    ],
)
def test_mc4_sizes_checked_offline(tmp_path, extra, message):
    arguments = ["--output_dir", str(tmp_path / "out"), "--mc4", "--languages", "yo,sw", *extra]
    with pytest.raises(script.UsageError, match=message):
        script.main(arguments)


def test_mc4_needs_languages(tmp_path):
    with pytest.raises(script.UsageError, match="--mc4 needs --languages"):
        script.main(["--output_dir", str(tmp_path / "out"), "--mc4"])


def test_unknown_method_rejected(tmp_path):
    with pytest.raises(SystemExit):
        script.main(small_run_arguments(tmp_path / "out") + ["--method", "greedy"])


def test_reference_sources_merge(tmp_path):
    first = tmp_path / "a.json"
    first.write_text(json.dumps({"reference_losses": {"eng_Latn": 2.0}}), encoding="utf-8")
    merged = script.merge_reference_sources("losses", [str(first), '{"yor_Latn": 4.0}'])
    assert merged == {"eng_Latn": 2.0, "yor_Latn": 4.0}


def test_reference_sources_conflict(tmp_path):
    with pytest.raises(script.UsageError, match="eng_Latn"):
        script.merge_reference_sources("losses", ['{"eng_Latn": 2.0}', '{"eng_Latn": 2.5}'])


def test_command_line_error_message(tmp_path):
    arguments = small_run_arguments(tmp_path / "out")
    index = arguments.index("--languages")
    arguments[index + 1] = "eng_Latn,xxx_Latn"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_mlm_ldro.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode != 0
    assert "run_mlm_ldro.py: error:" in completed.stderr
    assert "xxx_Latn" in completed.stderr
    assert "Traceback" not in completed.stderr
