"""Two-process CPU DDP (gloo) against one process on the same global batches.

The test launches this file with torchrun; run as a script, it trains on one rank and writes what
the test compares.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import default_data_collator

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hf_ldro.trainer import TASK_WEIGHTS_LOG_NAME, LDROTrainer  # noqa: E402
from hf_ldro.weighting import OnlineDRO  # noqa: E402
from test_trainer_data import (  # noqa: E402
    LANGUAGES,
    language_dataset,
    require_ud_data,
    tiny_gpt2,
    training_arguments,
)

STEPS = 3


class RecordingDRO(OnlineDRO):
    """Online DRO that also requests an interaction matrix every 2 steps and records each one."""

    requires_interaction = True
    interaction_interval = 2

    def __init__(self, task_names):
        super().__init__(task_names, eta=0.5)
        self.matrices = []

    def set_interaction(self, matrix):
        self.matrices.append(torch.as_tensor(matrix).tolist())


def train(output_dir: str, per_device_batch_size: int) -> LDROTrainer:
    dataset = language_dataset(LANGUAGES, "train", blocks_per_language=8, masked_prefix=True)
    trainer = LDROTrainer(
        tiny_gpt2(),
        training_arguments(
            output_dir,
            per_device_train_batch_size=per_device_batch_size,
            max_steps=STEPS,
            optim="sgd",
            max_grad_norm=0.0,
            learning_rate=0.5,
        ),
        data_collator=default_data_collator,
        train_dataset=dataset,
        weighting=RecordingDRO(LANGUAGES),
    )
    trainer.train()
    return trainer


def summary(trainer: LDROTrainer) -> dict:
    return {
        "weights": trainer.weighting.weights.tolist(),
        "matrices": trainer.weighting.matrices,
        "parameters": {name: param.detach().reshape(-1).tolist() for name, param in trainer.model.named_parameters()},
    }


def worker(output_dir: str) -> None:
    trainer = train(output_dir, per_device_batch_size=4)
    rank = trainer.args.process_index
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w", encoding="utf-8") as stream:
        json.dump(summary(trainer), stream)


@pytest.mark.slow
def test_ddp_matches_single_process(tmp_path):
    require_ud_data()
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun not found next to the Python interpreter")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    ddp_dir = tmp_path / "ddp"
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", __file__, str(ddp_dir)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((ddp_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    single = summary(train(str(tmp_path / "single"), per_device_batch_size=8))
    log_lines = (ddp_dir / TASK_WEIGHTS_LOG_NAME).read_text().splitlines()

    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["matrices"] == ranks[1]["matrices"]
    assert len(ranks[0]["matrices"]) == 2
    assert len(log_lines) == STEPS
    assert torch.allclose(torch.tensor(ranks[0]["weights"]), torch.tensor(single["weights"]), atol=1e-6)
    for name, values in single["parameters"].items():
        assert torch.allclose(torch.tensor(ranks[0]["parameters"][name]), torch.tensor(values), atol=1e-5), name


if __name__ == "__main__":
    worker(sys.argv[1])
