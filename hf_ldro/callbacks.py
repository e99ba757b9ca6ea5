"""Trainer callbacks used by LDROTrainer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from transformers import TrainerCallback

if TYPE_CHECKING:
    from .trainer import LDROTrainer


class TaskWeightUpdateCallback(TrainerCallback):
    """Update the task weights once per optimizer step, after the optimizer has stepped.

    `on_step_end` runs on every rank after each optimizer step and before the Trainer logs, saves
    or evaluates, so the logged and checkpointed weights are those the next step will use.
    """

    def __init__(self, trainer: "LDROTrainer"):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.finish_optimizer_step()
        return control
