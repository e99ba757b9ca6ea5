"""LDROTrainer for classification: one target per example instead of one per token.

`LDROTrainer` computes each task's loss as sum(per-example loss sums) / sum(per-example target
counts) over the task's examples, through its `example_loss_sums` / `example_target_counts`
extension points, whose defaults are token cross-entropy. For a classifier every example has one
target, so the task loss is the mean cross-entropy of the task's examples.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..pcgrad import PCGradTrainer
from ..trainer import LDROTrainer


def _logits_of(outputs: Any) -> torch.Tensor:
    if isinstance(outputs, dict):
        return outputs["logits"]
    if hasattr(outputs, "logits"):
        return outputs.logits
    return outputs[0]


class ClassificationLossMixin:
    """Per-example cross-entropy with one target per example, for `LDROTrainer` subclasses.

    When the model has a `per_example_loss(logits, labels)` method, that method computes the loss
    (`MultitaskCNN`'s per-task heads restrict the softmax to the label's task). Otherwise the loss
    is the cross-entropy over all logit columns.
    """

    def example_target_counts(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.ones(labels.reshape(-1).shape[0], dtype=torch.long, device=labels.device)

    def example_loss_sums(self, outputs: Any, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = _logits_of(outputs)
        labels = labels.reshape(-1)
        if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
            raise ValueError(
                f"A classifier's logits must have shape [batch, classes] and labels [batch]; got "
                f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)}."
            )
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "per_example_loss"):
            losses = model.per_example_loss(logits, labels)
        else:
            losses = nn.functional.cross_entropy(logits.float(), labels.long(), reduction="none")
        return losses, self.example_target_counts(labels)


class MultitaskClassificationTrainer(ClassificationLossMixin, LDROTrainer):
    """`LDROTrainer` (static mixing, DRO, L-DRO) for classifiers; same arguments as `LDROTrainer`."""


class MultitaskClassificationPCGradTrainer(ClassificationLossMixin, PCGradTrainer):
    """`PCGradTrainer` for classifiers; same arguments as `PCGradTrainer`."""
