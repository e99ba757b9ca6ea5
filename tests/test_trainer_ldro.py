"""LDROTrainer with the Lookahead-DRO strategies (online and exact) on real multilingual text."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import default_data_collator

from hf_ldro.arguments import LDROArguments
from hf_ldro.trainer import TASK_WEIGHTING_STATE_NAME, LDROTrainer
from hf_ldro.weighting import ExactLookaheadDRO, LookaheadDRO
from test_trainer_data import LANGUAGES, eval_datasets, language_dataset, tiny_gpt2, training_arguments


@pytest.fixture(scope="module")
def train_dataset():
    return language_dataset(LANGUAGES, "train", blocks_per_language=8, masked_prefix=True)


def ldro_arguments(method, **overrides):
    values = dict(method=method, ldro_eta=1.0, ldro_lookahead_lr=1.0, ldro_update_interval=2)
    values.update(overrides)
    return LDROArguments(**values)


def make_trainer(tmp_path, train_dataset, ldro_args, **overrides):
    return LDROTrainer(
        tiny_gpt2(),
        training_arguments(tmp_path, **overrides),
        data_collator=default_data_collator,
        train_dataset=train_dataset,
        eval_dataset=eval_datasets(LANGUAGES),
        ldro_args=ldro_args,
        task_names=LANGUAGES,
    )


@pytest.mark.parametrize("method, strategy_class", [("ldro", LookaheadDRO), ("ldro_exact", ExactLookaheadDRO)])
def test_lookahead_training_keeps_simplex(tmp_path, train_dataset, method, strategy_class):
    trainer = make_trainer(tmp_path, train_dataset, ldro_arguments(method))
    result = trainer.train()
    metrics = trainer.evaluate()
    weights = trainer.weighting.weights

    assert isinstance(trainer.weighting, strategy_class)
    assert math.isfinite(result.training_loss)
    assert math.isfinite(metrics["eval_worst_perplexity"])
    assert bool((weights >= 0).all())
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-9)
    assert trainer.interaction_refresh_count == 3
    assert trainer.weighting.interaction_refreshes == 3


def test_online_ldro_weights_move(tmp_path, train_dataset):
    trainer = make_trainer(tmp_path, train_dataset, ldro_arguments("ldro"))
    trainer.train()
    uniform = torch.full((len(LANGUAGES),), 1.0 / len(LANGUAGES), dtype=torch.float64)

    assert float((trainer.weighting.weights - uniform).abs().max()) > 1e-3
    assert float(trainer.weighting.interaction.abs().max()) > 0


def test_resume_restores_interaction_matrix(tmp_path, train_dataset):
    ldro_args = ldro_arguments("ldro")
    full = make_trainer(tmp_path, train_dataset, ldro_args, save_strategy="steps", save_steps=3)
    full.train()
    checkpoint = tmp_path / "checkpoint-3"
    saved = json.loads((checkpoint / TASK_WEIGHTING_STATE_NAME).read_text())
    restored = make_trainer(tmp_path, train_dataset, ldro_args)
    restored.load_task_weighting_state(str(checkpoint))

    assert torch.allclose(
        restored.weighting.interaction, torch.tensor(saved["weighting"]["interaction"], dtype=torch.float64)
    )
    assert restored.weighting.num_updates == 3

    restored.train(resume_from_checkpoint=str(checkpoint))
    assert torch.allclose(restored.weighting.weights, full.weighting.weights, atol=1e-9)
    assert torch.allclose(restored.weighting.interaction, full.weighting.interaction, atol=1e-9)


def test_sketched_interaction_trains(tmp_path, train_dataset):
    ldro_args = ldro_arguments("ldro", sketch_dim=64, sketch_seed=3)
    trainer = make_trainer(tmp_path, train_dataset, ldro_args, max_steps=2)
    trainer.train()

    assert trainer._gradient_buffer.shape == (len(LANGUAGES), 64)
    assert bool(torch.isfinite(trainer.weighting.interaction).all())
    assert float(trainer.weighting.interaction.abs().max()) > 0
