"""Common base for online task-weighting strategies.

A strategy keeps a weight vector on the probability simplex over N named tasks. At every optimizer
step the caller passes the per-task losses observed in that step (and which tasks were present);
the strategy merges them into its per-task loss estimates and recomputes the weights. Strategies
depend on torch only, so any training loop can use them.
"""

from __future__ import annotations

import abc
import math
from typing import Any, Mapping, Sequence

import torch


class NonFiniteLossError(ValueError):
    """A loss passed to a strategy was NaN or infinite; the strategy's state is left unchanged."""


def check_task_names(task_names: Sequence[str]) -> list[str]:
    """Validate a task list: non-empty, strings, no duplicates. Returns it as a list."""
    names = list(task_names)
    if not names:
        raise ValueError("task_names is empty: pass at least one task name.")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"Invalid task name {name!r}: task names must be non-empty strings.")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Duplicate task names {duplicates}: every task must appear once.")
    return names


def check_nonnegative(name: str, value: float) -> float:
    """Raise a ValueError naming `name` unless `value` is a finite number >= 0."""
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return value


def as_task_vector(name: str, values: Any, num_tasks: int, dtype=torch.float64) -> torch.Tensor:
    """Convert `values` to a 1-D tensor of length `num_tasks`, raising a ValueError naming `name`."""
    tensor = torch.as_tensor(values, dtype=dtype).detach().cpu().reshape(-1)
    if tensor.numel() != num_tasks:
        raise ValueError(
            f"{name} has {tensor.numel()} entries but there are {num_tasks} tasks: "
            f"pass one value per task, in task order."
        )
    return tensor


class TaskWeighting(abc.ABC):
    """Base class of every weighting strategy.

    Contract for subclasses: implement `_compute_weights(loss_estimates)`, which returns the new
    weight vector (float64, length N, on the simplex) from the current per-task loss estimates, and
    optionally `_extra_state()` / `_load_extra_state()` for anything else to checkpoint.

    Attributes read by trainers:
        requires_interaction: True when the strategy needs an interaction matrix (`set_interaction`).
        interaction_interval: refresh period k in optimizer steps, for strategies that need one.
        sampling_probabilities: for strategies applied as data-sampling probabilities (static
            mixing), the probability of sampling each task; None for strategies applied as loss
            weights.
    """

    requires_interaction: bool = False
    interaction_interval: int = 0

    def __init__(self, task_names: Sequence[str]):
        self.task_names = check_task_names(task_names)
        num_tasks = len(self.task_names)
        self._weights = torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)

        # NaN marks a task whose loss was never observed; it is never treated as loss 0.
        self._loss_estimates = torch.full((num_tasks,), float("nan"), dtype=torch.float64)
        self.num_updates = 0

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def weights(self) -> torch.Tensor:
        """Current weights, a float64 copy on the simplex."""
        return self._weights.clone()

    @property
    def loss_estimates(self) -> torch.Tensor:
        """Last observed loss per task (NaN for a task never observed)."""
        return self._loss_estimates.clone()

    @property
    def sampling_probabilities(self) -> torch.Tensor | None:
        return None

    def weight_dict(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(self.task_names, self._weights)}

    def loss_dict(self) -> dict[str, float]:
        return {name: float(l) for name, l in zip(self.task_names, self._loss_estimates)}

    def update(self, losses: Any, present: Any = None) -> torch.Tensor:
        """Merge the losses observed at one optimizer step and recompute the weights.

        Args:
            losses: one loss per task (length N); entries of absent tasks are ignored.
            present: boolean mask of the tasks observed in this step; default all.

        Returns:
            The new weights (float64 copy).

        Raises:
            NonFiniteLossError: a present task's loss is NaN or inf. Nothing is updated.
            ValueError: wrong vector length.
        """
        losses = as_task_vector("losses", losses, self.num_tasks)
        if present is None:
            present = torch.ones(self.num_tasks, dtype=torch.bool)
        else:
            present = as_task_vector("present", present, self.num_tasks, dtype=torch.bool)

        bad = [
            f"{self.task_names[i]}={float(losses[i])}"
            for i in range(self.num_tasks)
            if present[i] and not math.isfinite(float(losses[i]))
        ]
        if bad:
            raise NonFiniteLossError(
                f"Non-finite task loss ({', '.join(bad)}): the weight update was not applied. "
                "Check the learning rate and the data of these tasks."
            )
        if not bool(present.any()):
            return self.weights

        estimates = self._loss_estimates.clone()
        estimates[present] = losses[present]
        self._loss_estimates = estimates

        # A task never observed yet is given the mean of the observed estimates, so it is neither
        # favoured (as loss 0 would be under DRO) nor ignored.
        filled = estimates.clone()
        unseen = torch.isnan(filled)
        if bool(unseen.any()):
            filled[unseen] = filled[~unseen].mean()

        new_weights = self._compute_weights(filled)
        if not bool(torch.isfinite(new_weights).all()):
            raise FloatingPointError(
                f"{type(self).__name__} produced non-finite weights {new_weights.tolist()} from "
                f"loss estimates {filled.tolist()}; the previous weights are kept."
            )
        self._weights = new_weights.to(torch.float64)
        self.num_updates += 1
        return self.weights

    @abc.abstractmethod
    def _compute_weights(self, loss_estimates: torch.Tensor) -> torch.Tensor:
        """Return the new weights from complete (no NaN) per-task loss estimates."""

    def state_dict(self) -> dict[str, Any]:
        state = {
            "strategy": type(self).__name__,
            "task_names": list(self.task_names),
            "weights": self._weights.tolist(),
            "loss_estimates": [None if math.isnan(x) else x for x in self._loss_estimates.tolist()],
            "num_updates": self.num_updates,
        }
        state.update(self._extra_state())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["task_names"]) != self.task_names:
            raise ValueError(
                f"The saved task weights are for tasks {list(state['task_names'])} but this "
                f"strategy has tasks {self.task_names}: use the same task list (and order) as the "
                "run that wrote the state."
            )
        if state.get("strategy", type(self).__name__) != type(self).__name__:
            raise ValueError(
                f"The saved task weights come from {state['strategy']} but this strategy is "
                f"{type(self).__name__}: resume with the same method."
            )
        self._weights = torch.tensor(state["weights"], dtype=torch.float64)
        self._loss_estimates = torch.tensor(
            [float("nan") if x is None else x for x in state["loss_estimates"]], dtype=torch.float64
        )
        self.num_updates = int(state["num_updates"])
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        weights = ", ".join(f"{n}={w:.4f}" for n, w in self.weight_dict().items())
        return f"{type(self).__name__}({weights})"
