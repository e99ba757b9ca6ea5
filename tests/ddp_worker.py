"""Tiny LDROTrainer jobs that tests/test_distributed.py runs under torchrun and in one process.

Under `torchrun --nproc_per_node 2 tests/ddp_worker.py OUTPUT_DIR CASE [CASE ...]` every rank
trains one tiny GPT-2 per case and saves `OUTPUT_DIR/<case>/rank<r>.pt` with what it saw and did:
the micro-batches it trained on, the task weights and loss estimates after every optimizer step,
the logged losses, the interaction matrices it received and its final parameters.
`replay_single_process` then trains one process on the union of the ranks' micro-batches, step by
step, so the two runs can be compared whatever order the data loaders chose.

A case name is `<data>-<method>`: data `map` (a `datasets.Dataset` sharded by accelerate),
`mapaccumulate` (the same with 2 micro-batches of 2 rows per optimizer step instead of 1 of 4) or
`stream` (a `TaskStratifiedStream` that shards documents itself), method `dro`, `ldro`, or
`ldrosketch` (L-DRO with task gradients projected to 256 dimensions before the all-reduce).
This module holds no tests.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset
from transformers import TrainerCallback, default_data_collator

TESTS_DIR = Path(__file__).resolve().parent
# torchrun puts only this folder on sys.path; the repository root makes hf_ldro importable from a
# checkout that is not pip-installed.
sys.path[:0] = [str(TESTS_DIR.parent), str(TESTS_DIR)]

from hf_ldro.arguments import LDROArguments, weighting_from_arguments  # noqa: E402
from hf_ldro.data import InMemorySource, TaskStratifiedStream, byte_level_tokenizer  # noqa: E402
from hf_ldro.trainer import LDROTrainer  # noqa: E402
from hf_ldro.weighting import OnlineDRO  # noqa: E402
from test_trainer_data import (  # noqa: E402
    BLOCK_SIZE,
    DATA_DIR,
    LANGUAGES,
    language_dataset,
    tiny_gpt2,
    training_arguments,
)

CASES = ("map-dro", "map-ldro", "map-ldrosketch", "mapaccumulate-ldro", "stream-dro", "stream-ldro")
PER_DEVICE_BATCH_SIZE = 4
STEPS = 6
REFRESH_INTERVAL = 2
STREAM_DOCUMENTS_PER_LANGUAGE = 60


class InteractionDRO(OnlineDRO):
    """Online DRO that also requests an interaction matrix every REFRESH_INTERVAL steps.

    Its weights ignore the matrices; it exercises the distributed per-task gradients with a
    strategy that exists independently of L-DRO.
    """

    requires_interaction = True
    interaction_interval = REFRESH_INTERVAL

    def set_interaction(self, matrix) -> None:
        self.interaction = torch.as_tensor(matrix)


def build_weighting(method: str, ldro_args: LDROArguments):
    if method == "dro":
        return InteractionDRO(LANGUAGES, eta=ldro_args.dro_eta)
    return weighting_from_arguments(ldro_args, LANGUAGES)


def method_arguments(method: str) -> LDROArguments:
    """Return step sizes large enough that the weights move visibly within a few steps."""
    if method == "dro":
        return LDROArguments(method="dro", dro_eta=0.5)
    if method in ("ldro", "ldrosketch"):
        return LDROArguments(
            method="ldro",
            ldro_eta=0.5,
            ldro_lookahead_lr=0.5,
            ldro_update_interval=REFRESH_INTERVAL,
            sketch_dim=256 if method == "ldrosketch" else 0,
        )
    raise ValueError(f"Unknown method {method!r} in the case name: use dro, ldro or ldrosketch.")


def read_documents(language: str, count: int) -> list[str]:
    """Return the first `count` training documents of one UD language."""
    documents = []
    with gzip.open(DATA_DIR / language / "train.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            documents.append(json.loads(line)["text"])
            if len(documents) == count:
                break
    return documents


def stream_sources() -> dict[str, InMemorySource]:
    return {
        language: InMemorySource(language, read_documents(language, STREAM_DOCUMENTS_PER_LANGUAGE))
        for language in LANGUAGES
    }


def accumulation_steps(case: str) -> int:
    return 2 if case.startswith("mapaccumulate-") else 1


def build_train_dataset(data: str, per_device_batch_size: int):
    if data in ("map", "mapaccumulate"):
        # 12 blocks per language fill exactly STEPS global batches of 2 x 4 rows; every row's
        # label mask differs, so per-task token counts differ between ranks.
        return language_dataset(LANGUAGES, "train", blocks_per_language=12, masked_prefix=True)
    if data == "stream":
        return TaskStratifiedStream(
            stream_sources(), byte_level_tokenizer(), BLOCK_SIZE, per_device_batch_size, task_names=LANGUAGES
        )
    raise ValueError(f"Unknown data {data!r} in the case name: use map, mapaccumulate or stream.")


class RecordingLDROTrainer(LDROTrainer):
    """LDROTrainer that keeps a copy of every micro-batch it trains on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recorded_batches: list[dict[str, torch.Tensor]] = []

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.recorded_batches.append(
            {key: torch.as_tensor(inputs[key]).detach().cpu().clone() for key in ("input_ids", "labels", "task_ids")}
        )
        return super().training_step(model, inputs, num_items_in_batch)


class TrajectoryRecorder(TrainerCallback):
    """Record the weights after every optimizer step and every logged training loss.

    Added after LDROTrainer's own callback, so `on_step_end` sees the weights it just updated.
    """

    def __init__(self, trainer: LDROTrainer):
        self.trainer = trainer
        self.weights: list[list[float]] = []
        self.loss_estimates: list[list[float]] = []
        self.logged_losses: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.weights.append(self.trainer.weighting.weights.tolist())
        self.loss_estimates.append(self.trainer.weighting.loss_estimates.tolist())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logged_losses.append(float(logs["loss"]))


def record_interactions(weighting) -> list[torch.Tensor]:
    """Wrap `weighting.set_interaction` so each matrix it receives is also kept; return the list."""
    matrices: list[torch.Tensor] = []
    original = weighting.set_interaction

    def set_interaction(matrix):
        matrices.append(torch.as_tensor(matrix).detach().cpu().clone())
        return original(matrix)

    weighting.set_interaction = set_interaction
    return matrices


def train_case(case: str, output_dir: str, train_dataset, per_device_batch_size: int) -> dict[str, Any]:
    """Train one case and return its record (see the module docstring)."""
    method = case.split("-", 1)[1]
    ldro_args = method_arguments(method)
    weighting = build_weighting(method, ldro_args)
    matrices = record_interactions(weighting) if weighting.requires_interaction else []
    trainer = RecordingLDROTrainer(
        tiny_gpt2(),
        training_arguments(
            output_dir,
            per_device_train_batch_size=per_device_batch_size,
            gradient_accumulation_steps=accumulation_steps(case),
            max_steps=STEPS,
            optim="sgd",
            learning_rate=0.5,
            max_grad_norm=0.0,
        ),
        data_collator=default_data_collator,
        train_dataset=train_dataset,
        weighting=weighting,
        ldro_args=ldro_args,
    )
    recorder = TrajectoryRecorder(trainer)
    trainer.add_callback(recorder)
    trainer.train()
    return {
        "rank": trainer.args.process_index,
        "world_size": trainer.args.world_size,
        "batches": trainer.recorded_batches,
        "weights": recorder.weights,
        "loss_estimates": recorder.loss_estimates,
        "logged_losses": recorder.logged_losses,
        "matrices": matrices,
        "parameters": {name: param.detach().cpu().clone() for name, param in trainer.model.named_parameters()},
    }


class ReplayDataset(IterableDataset):
    """Yield recorded examples in a fixed order (a plain IterableDataset: no shuffling, no sharding)."""

    def __init__(self, examples: list[dict[str, torch.Tensor]]):
        self.examples = examples

    def __iter__(self):
        return iter(self.examples)


def union_of_rank_batches(rank_records: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
    """Return the examples of micro-batch 0 of rank 0, of rank 1, ..., micro-batch 1 of rank 0, ..."""
    examples = []
    num_micro_batches = len(rank_records[0]["batches"])
    for index in range(num_micro_batches):
        for record in rank_records:
            batch = record["batches"][index]
            for row in range(batch["input_ids"].shape[0]):
                examples.append({key: value[row] for key, value in batch.items()})
    return examples


def replay_single_process(case: str, output_dir: str, rank_records: list[dict[str, Any]]) -> dict[str, Any]:
    """Train one process on the union of the ranks' micro-batches, as large as all of them together.

    Micro-batch m of the single process holds micro-batch m of every rank, so with gradient
    accumulation the interaction refresh (on a step's first micro-batch) sees the same examples.
    """
    micro_batch_size = sum(record["batches"][0]["input_ids"].shape[0] for record in rank_records)
    dataset = ReplayDataset(union_of_rank_batches(rank_records))
    return train_case(case, output_dir, dataset, per_device_batch_size=micro_batch_size)


def main(output_dir: str, cases: list[str]) -> None:
    for case in cases:
        data = case.split("-", 1)[0]
        case_dir = os.path.join(output_dir, case)
        micro_batch_size = PER_DEVICE_BATCH_SIZE // accumulation_steps(case)
        record = train_case(case, case_dir, build_train_dataset(data, micro_batch_size), micro_batch_size)
        torch.save(record, os.path.join(case_dir, f"rank{record['rank']}.pt"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
