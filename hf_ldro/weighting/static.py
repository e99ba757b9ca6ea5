"""Static temperature mixing: w_i proportional to |D_i|^alpha."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .base import TaskWeighting, as_task_vector


class StaticMixing(TaskWeighting):
    """Fixed weights w_i proportional to |D_i|^alpha.

    alpha = 0 gives uniform weights, alpha = 1 weights proportional to dataset size, and
    alpha = 0.3 is the temperature used by mT5 and XLM-R. In language-model pretraining the weights
    are applied as data-sampling probabilities (`sampling_probabilities`).

    Example:
        >>> mixing = StaticMixing(["en", "yo"], dataset_sizes=[900, 100], alpha=1.0)
        >>> [round(w, 2) for w in mixing.weights.tolist()]
        [0.9, 0.1]
    """

    def __init__(self, task_names: Sequence[str], dataset_sizes: Any = None, alpha: float = 1.0):
        super().__init__(task_names)
        alpha = float(alpha)
        if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"mixing alpha must be in [0, 1], got {alpha!r}.")
        if dataset_sizes is None:
            if alpha != 0.0:
                raise ValueError(
                    f"StaticMixing with alpha={alpha} needs dataset_sizes (one size per task); "
                    "pass them or use alpha=0 for uniform weights."
                )
            dataset_sizes = [1.0] * self.num_tasks
        sizes = as_task_vector("dataset_sizes", dataset_sizes, self.num_tasks)
        if not bool(torch.isfinite(sizes).all()) or bool((sizes <= 0).any()):
            raise ValueError(
                f"dataset_sizes must be finite and > 0 for every task, got {sizes.tolist()}."
            )
        self.alpha = alpha
        self.dataset_sizes = sizes
        powered = sizes**alpha
        self._weights = powered / powered.sum()

    @property
    def sampling_probabilities(self) -> torch.Tensor:
        return self._weights.clone()

    def _compute_weights(self, loss_estimates: torch.Tensor) -> torch.Tensor:
        return self._weights

    def _extra_state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "dataset_sizes": self.dataset_sizes.tolist()}
