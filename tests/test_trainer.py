"""LDROTrainer on a tiny GPT-2 and real UD text in four languages and scripts."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from transformers import default_data_collator

from hf_ldro.arguments import LDROArguments
from hf_ldro.trainer import (
    TASK_WEIGHTING_STATE_NAME,
    TASK_WEIGHTS_LOG_NAME,
    LDROTrainer,
    NonFiniteTaskLossError,
)
from hf_ldro.weighting import OnlineDRO, StaticMixing
from test_trainer_data import (
    LANGUAGES,
    LogCapture,
    eval_datasets,
    language_dataset,
    tiny_gpt2,
    training_arguments,
)


@pytest.fixture(scope="module")
def train_dataset():
    return language_dataset(LANGUAGES, "train", blocks_per_language=8, masked_prefix=True)


def make_trainer(tmp_path, train_dataset, ldro_args=None, weighting=None, callbacks=(), **overrides):
    return LDROTrainer(
        tiny_gpt2(),
        training_arguments(tmp_path, **overrides),
        data_collator=default_data_collator,
        train_dataset=train_dataset,
        callbacks=list(callbacks),
        ldro_args=ldro_args,
        weighting=weighting,
        task_names=None if weighting is not None else LANGUAGES,
    )


def manual_task_losses(model, dataset) -> dict[str, float]:
    """Token-weighted causal-LM loss per task, from transformers' own loss one example at a time."""
    sums = {name: 0.0 for name in LANGUAGES}
    counts = {name: 0 for name in LANGUAGES}
    model.eval()
    with torch.no_grad():
        for row in dataset:
            labels = torch.tensor([row["labels"]])
            tokens = int((labels[:, 1:] != -100).sum())
            loss = model(input_ids=torch.tensor([row["input_ids"]]), labels=labels).loss
            name = LANGUAGES[row["task_ids"]]
            sums[name] += float(loss) * tokens
            counts[name] += tokens
    return {name: sums[name] / counts[name] for name in LANGUAGES}


@pytest.mark.parametrize("method", ["static", "dro", "baselined_dro"])
def test_training_keeps_weights_on_simplex(tmp_path, train_dataset, method):
    ldro_args = LDROArguments(
        method=method,
        mixing_alpha=0.0,
        dro_eta=0.5,
        reference_losses={name: 5.0 for name in LANGUAGES},
    )
    trainer = make_trainer(tmp_path, train_dataset, ldro_args=ldro_args)
    result = trainer.train()
    weights = trainer.weighting.weights

    assert math.isfinite(result.training_loss)
    assert bool(torch.isfinite(weights).all())
    assert bool((weights >= 0).all())
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("method", ["dro", "baselined_dro"])
def test_dro_weights_move(tmp_path, train_dataset, method):
    ldro_args = LDROArguments(
        method=method, dro_eta=0.5, reference_losses={name: 5.0 for name in LANGUAGES}
    )
    trainer = make_trainer(tmp_path, train_dataset, ldro_args=ldro_args)
    trainer.train()
    uniform = torch.full((len(LANGUAGES),), 1.0 / len(LANGUAGES), dtype=torch.float64)

    assert float((trainer.weighting.weights - uniform).abs().max()) > 1e-3


def test_static_weights_stay_fixed(tmp_path, train_dataset):
    mixing = StaticMixing(LANGUAGES, dataset_sizes=[8, 4, 2, 1], alpha=1.0)
    before = mixing.weights
    trainer = make_trainer(tmp_path, train_dataset, weighting=mixing)
    trainer.train()

    assert torch.equal(trainer.weighting.weights, before)
    assert not trainer.applies_weights_by_sampling


def test_task_losses_match_manual_computation(tmp_path, train_dataset):
    one_batch = train_dataset.select(range(8))
    capture = LogCapture()
    trainer = make_trainer(
        tmp_path, one_batch, ldro_args=LDROArguments(method="dro"), callbacks=[capture.callback],
        max_steps=1,
    )
    expected = manual_task_losses(tiny_gpt2(), one_batch)
    trainer.train()
    logged = capture.training_logs()[0]

    for name in LANGUAGES:
        assert logged[f"task_loss/{name}"] == pytest.approx(expected[name], rel=1e-5), name


def test_logged_loss_is_weighted_task_loss(tmp_path, train_dataset):
    one_batch = train_dataset.select(range(8))
    capture = LogCapture()
    weights = [0.1, 0.2, 0.3, 0.4]
    mixing = StaticMixing(LANGUAGES, dataset_sizes=weights, alpha=1.0)
    trainer = make_trainer(tmp_path, one_batch, weighting=mixing, callbacks=[capture.callback], max_steps=1)
    expected_losses = manual_task_losses(tiny_gpt2(), one_batch)
    trainer.train()
    expected = sum(w * expected_losses[name] for w, name in zip(weights, LANGUAGES))

    assert capture.training_logs()[0]["loss"] == pytest.approx(expected, rel=1e-5)


def test_logs_and_jsonl_have_every_task(tmp_path, train_dataset):
    capture = LogCapture()
    trainer = make_trainer(
        tmp_path, train_dataset, ldro_args=LDROArguments(method="dro"), callbacks=[capture.callback],
        logging_steps=2,
    )
    trainer.train()
    logs = capture.training_logs()
    lines = (tmp_path / TASK_WEIGHTS_LOG_NAME).read_text().splitlines()
    records = [json.loads(line) for line in lines]

    assert len(logs) == 3
    for name in LANGUAGES:
        assert f"task_weight/{name}" in logs[-1], name
        assert f"task_loss/{name}" in logs[-1], name
    assert [record["step"] for record in records] == [2, 4, 6]
    assert set(records[-1]["weights"]) == set(LANGUAGES)
    assert set(records[-1]["losses"]) == set(LANGUAGES)
    assert records[-1]["weights"] == pytest.approx(trainer.weighting.weight_dict())


def test_gradient_accumulation_matches_large_batch(tmp_path, train_dataset):
    # Plain SGD without clipping, so a mis-scaled gradient changes the parameters.
    sgd = dict(optim="sgd", max_grad_norm=0.0, learning_rate=0.5, max_steps=3)
    large = make_trainer(
        tmp_path / "large", train_dataset, ldro_args=LDROArguments(method="dro", dro_eta=0.5),
        per_device_train_batch_size=8, gradient_accumulation_steps=1, **sgd,
    )
    large.train()
    accumulated = make_trainer(
        tmp_path / "accumulated", train_dataset, ldro_args=LDROArguments(method="dro", dro_eta=0.5),
        per_device_train_batch_size=4, gradient_accumulation_steps=2, **sgd,
    )
    accumulated.train()

    assert torch.allclose(large.weighting.weights, accumulated.weighting.weights, atol=1e-6)
    for (name, p_large), (_, p_accumulated) in zip(
        large.model.named_parameters(), accumulated.model.named_parameters()
    ):
        assert torch.allclose(p_large, p_accumulated, atol=1e-5), name


def test_resume_restores_weights(tmp_path, train_dataset):
    ldro_args = LDROArguments(method="dro", dro_eta=0.5)
    full = make_trainer(tmp_path / "full", train_dataset, ldro_args=ldro_args, save_strategy="steps", save_steps=3)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    saved = json.loads((checkpoint / TASK_WEIGHTING_STATE_NAME).read_text())

    resumed = make_trainer(tmp_path / "full", train_dataset, ldro_args=ldro_args)
    resumed.train(resume_from_checkpoint=str(checkpoint))

    assert saved["task_names"] == LANGUAGES
    assert saved["weighting"]["num_updates"] == 3
    assert torch.allclose(resumed.weighting.weights, full.weighting.weights, atol=1e-9)


def test_resume_with_other_tasks_fails(tmp_path, train_dataset):
    ldro_args = LDROArguments(method="dro")
    first = make_trainer(tmp_path, train_dataset, ldro_args=ldro_args, save_strategy="steps", save_steps=3, max_steps=3)
    first.train()
    renamed = ["eng", "yor", "amh", "jpn"]
    other = LDROTrainer(
        tiny_gpt2(),
        training_arguments(tmp_path),
        data_collator=default_data_collator,
        train_dataset=train_dataset,
        weighting=OnlineDRO(renamed),
    )

    with pytest.raises(ValueError, match="same task list"):
        other.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))


def test_task_column_survives_unused_column_removal(tmp_path, train_dataset):
    with_text = train_dataset.add_column("text", ["unused"] * len(train_dataset))
    trainer = make_trainer(tmp_path, with_text, ldro_args=LDROArguments(method="dro"), max_steps=1)

    assert trainer.args.remove_unused_columns
    assert math.isfinite(trainer.train().training_loss)


def test_missing_task_column_is_explained(tmp_path, train_dataset):
    without = train_dataset.remove_columns("task_ids")
    trainer = make_trainer(tmp_path, without, ldro_args=LDROArguments(method="dro"), max_steps=1)

    with pytest.raises(ValueError, match="no 'task_ids' column.*remove_unused_columns"):
        trainer.train()


def test_world_size_mismatch_warns(tmp_path, train_dataset, monkeypatch, caplog):
    trainer = make_trainer(tmp_path, train_dataset, ldro_args=LDROArguments(method="dro"), max_steps=1)

    # Setting WORLD_SIZE before the Trainer exists would make accelerate start a process group,
    # so the check that the constructor runs is called again with the launcher's variable set.
    monkeypatch.setenv("WORLD_SIZE", "2")
    with caplog.at_level(logging.WARNING, logger="hf_ldro.trainer"):
        trainer._warn_on_world_size_mismatch()

    messages = [record.getMessage() for record in caplog.records]
    assert any("started 2 processes" in message for message in messages)
    assert any("use_cpu=True" in message for message in messages)


def test_out_of_range_task_id_is_rejected(tmp_path, train_dataset):
    bad = train_dataset.map(lambda row: {"task_ids": 7})
    trainer = make_trainer(tmp_path, bad, ldro_args=LDROArguments(method="dro"), max_steps=1)

    with pytest.raises(ValueError, match="Task id 7 .* out of range"):
        trainer.train()


def test_nonfinite_losses_stop_training(tmp_path, train_dataset, caplog):
    trainer = make_trainer(
        tmp_path, train_dataset, ldro_args=LDROArguments(method="dro", max_consecutive_nonfinite=3)
    )
    weights_before = trainer.weighting.weights
    trainer.model.lm_head.register_forward_hook(lambda module, inputs, output: output * float("nan"))

    with caplog.at_level(logging.WARNING, logger="hf_ldro.trainer"):
        with pytest.raises(NonFiniteTaskLossError, match="3 consecutive"):
            trainer.train()
    warnings = [record.getMessage() for record in caplog.records if "non-finite" in record.getMessage()]

    assert len(warnings) == 3
    assert "eng_Latn" in warnings[0]
    assert torch.equal(trainer.weighting.weights, weights_before)


def test_per_language_evaluation(tmp_path, train_dataset):
    trainer = LDROTrainer(
        tiny_gpt2(),
        training_arguments(tmp_path),
        data_collator=default_data_collator,
        train_dataset=train_dataset,
        eval_dataset=eval_datasets(LANGUAGES),
        ldro_args=LDROArguments(method="dro"),
        task_names=LANGUAGES,
        reference_perplexities={name: 300.0 for name in LANGUAGES},
    )
    trainer.train()
    metrics = trainer.evaluate()

    for name in LANGUAGES:
        assert math.isfinite(metrics[f"eval_{name}_loss"]), name
        assert metrics[f"eval_{name}_perplexity"] == pytest.approx(math.exp(metrics[f"eval_{name}_loss"]))
        assert f"eval_{name}_relative_perplexity" in metrics, name
    assert metrics["eval_worst_language"] in LANGUAGES
    assert metrics["eval_worst_perplexity"] == max(metrics[f"eval_{name}_perplexity"] for name in LANGUAGES)
    assert metrics["eval_worst_relative_language"] in LANGUAGES


def test_missing_reference_language_is_named(tmp_path, train_dataset):
    trainer = LDROTrainer(
        tiny_gpt2(),
        training_arguments(tmp_path),
        data_collator=default_data_collator,
        eval_dataset=eval_datasets(LANGUAGES[:2]),
        ldro_args=LDROArguments(method="dro"),
        task_names=LANGUAGES,
        reference_perplexities={LANGUAGES[0]: 300.0},
    )

    with pytest.raises(ValueError, match="yor_Latn"):
        trainer.evaluate()


def test_evaluation_loss_is_token_weighted(tmp_path):
    eval_set = language_dataset([LANGUAGES[1]], "validation", 3, masked_prefix=True)
    eval_set = eval_set.remove_columns("task_ids")
    trainer = LDROTrainer(
        tiny_gpt2(),
        training_arguments(tmp_path, per_device_eval_batch_size=2),
        data_collator=default_data_collator,
        eval_dataset={"yor_Latn": eval_set},
        ldro_args=LDROArguments(method="dro"),
        task_names=LANGUAGES,
    )
    metrics = trainer.evaluate()
    model = tiny_gpt2()
    model.eval()
    losses, counts = [], []
    with torch.no_grad():
        for row in eval_set:
            labels = torch.tensor([row["labels"]])
            losses.append(float(model(input_ids=torch.tensor([row["input_ids"]]), labels=labels).loss))
            counts.append(int((labels[:, 1:] != -100).sum()))
    token_weighted = sum(l * c for l, c in zip(losses, counts)) / sum(counts)
    batch_means = [
        (losses[0] * counts[0] + losses[1] * counts[1]) / (counts[0] + counts[1]),
        losses[2],
    ]
    mean_of_batch_means = sum(batch_means) / len(batch_means)

    assert metrics["eval_yor_Latn_loss"] == pytest.approx(token_weighted, rel=1e-5)
    assert abs(token_weighted - mean_of_batch_means) > 1e-4


def test_evaluation_during_training_selects_best(tmp_path, train_dataset):
    trainer = LDROTrainer(
        tiny_gpt2(),
        training_arguments(
            tmp_path, eval_strategy="steps", eval_steps=3, save_strategy="steps", save_steps=3,
            load_best_model_at_end=True, metric_for_best_model="worst_perplexity",
            greater_is_better=False,
        ),
        data_collator=default_data_collator,
        train_dataset=train_dataset,
        eval_dataset=eval_datasets(LANGUAGES[:2]),
        ldro_args=LDROArguments(method="dro"),
        task_names=LANGUAGES,
    )
    trainer.train()
    evaluations = [entry for entry in trainer.state.log_history if "eval_worst_perplexity" in entry]

    assert [entry["step"] for entry in evaluations] == [3, 6]
    assert trainer.state.best_metric == min(entry["eval_worst_perplexity"] for entry in evaluations)
