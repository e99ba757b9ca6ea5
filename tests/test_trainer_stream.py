"""LDROTrainer reading a TaskStratifiedStream: per-rank DataLoader, static sampling, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import default_data_collator

from hf_ldro.arguments import LDROArguments
from hf_ldro.data import InMemorySource, TaskStratifiedStream, byte_level_tokenizer
from hf_ldro.trainer import TASK_WEIGHTING_STATE_NAME, LDROTrainer
from hf_ldro.weighting import StaticMixing
from test_trainer_data import (
    BLOCK_SIZE,
    LANGUAGES,
    read_texts,
    require_ud_data,
    tiny_gpt2,
    training_arguments,
)


@pytest.fixture(scope="module")
def documents():
    require_ud_data()
    return {name: read_texts(name, "train", max_characters=6000) for name in LANGUAGES}


def make_stream(documents, sampling_probabilities=None):
    sources = [InMemorySource(name, documents[name]) for name in LANGUAGES]
    return TaskStratifiedStream(
        sources,
        byte_level_tokenizer(),
        block_size=BLOCK_SIZE,
        batch_size=8,
        task_names=LANGUAGES,
        sampling_probabilities=sampling_probabilities,
    )


class BatchRecorder(LDROTrainer):
    """LDROTrainer that records the input_ids of every training micro-batch."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.seen_batches = getattr(self, "seen_batches", [])
        self.seen_batches.append(inputs["input_ids"].clone())
        return super().training_step(model, inputs, num_items_in_batch)


def make_trainer(output_dir, stream, trainer_class=LDROTrainer, weighting=None, **overrides):
    return trainer_class(
        tiny_gpt2(),
        training_arguments(output_dir, **overrides),
        data_collator=default_data_collator,
        train_dataset=stream,
        weighting=weighting,
        ldro_args=LDROArguments(method="dro", dro_eta=0.5),
        task_names=None if weighting is not None else LANGUAGES,
    )


def test_stream_batches_are_stratified(tmp_path, documents):
    trainer = make_trainer(tmp_path, make_stream(documents))
    batch = next(iter(trainer.get_train_dataloader()))

    assert isinstance(trainer.get_train_dataloader(), torch.utils.data.DataLoader)
    assert sorted(batch["task_ids"].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert not trainer.applies_weights_by_sampling


def test_stream_resume_is_exact(tmp_path, documents):
    full = make_trainer(
        tmp_path / "full", make_stream(documents), trainer_class=BatchRecorder,
        save_strategy="steps", save_steps=3,
    )
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    resumed = make_trainer(tmp_path / "full", make_stream(documents), trainer_class=BatchRecorder)
    resumed.train(resume_from_checkpoint=str(checkpoint))

    assert (checkpoint / "task_stream_state_rank0.json").is_file()
    assert len(resumed.seen_batches) == 3
    for after_resume, uninterrupted in zip(resumed.seen_batches, full.seen_batches[3:]):
        assert torch.equal(after_resume, uninterrupted)
    assert torch.allclose(resumed.weighting.weights, full.weighting.weights, atol=1e-9)
    for (name, p_full), (_, p_resumed) in zip(
        full.model.named_parameters(), resumed.model.named_parameters()
    ):
        assert torch.allclose(p_full, p_resumed, atol=1e-6), name


def test_static_sampling_uses_plain_mean(tmp_path, documents):
    mixing = StaticMixing(LANGUAGES, dataset_sizes=[8, 4, 2, 1], alpha=0.5)
    stream = make_stream(documents, sampling_probabilities=mixing.sampling_probabilities.tolist())
    trainer = make_trainer(tmp_path, stream, weighting=mixing, max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    saved = json.loads((tmp_path / "checkpoint-2" / TASK_WEIGHTING_STATE_NAME).read_text())

    assert trainer.applies_weights_by_sampling
    assert saved["weighting"]["weights"] == pytest.approx(mixing.weights.tolist())
