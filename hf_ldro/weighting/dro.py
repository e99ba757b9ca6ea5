"""Online DRO (Sagawa et al., 2020) and baselined DRO (Oren et al., 2019)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from .base import TaskWeighting, as_task_vector, check_nonnegative


class OnlineDRO(TaskWeighting):
    """Exponentiated-gradient ascent on the task losses: w_i <- w_i exp(eta l_i), renormalised.

    The weights are kept as log-weights so that large eta * loss products cannot overflow.
    eta = 0 keeps uniform weights.

    Example:
        >>> dro = OnlineDRO(["en", "yo"], eta=0.1)
        >>> w = dro.update([1.0, 3.0])
        >>> bool(w[1] > w[0])
        True
    """

    def __init__(self, task_names: Sequence[str], eta: float = 1e-2):
        super().__init__(task_names)
        self.eta = check_nonnegative("DRO eta", eta)
        self._log_weights = torch.log(self._weights)

    def _excess_losses(self, loss_estimates: torch.Tensor) -> torch.Tensor:
        return loss_estimates

    def _compute_weights(self, loss_estimates: torch.Tensor) -> torch.Tensor:
        log_weights = self._log_weights + self.eta * self._excess_losses(loss_estimates)
        self._log_weights = torch.log_softmax(log_weights, dim=0)
        return self._log_weights.exp()

    def _extra_state(self) -> dict[str, Any]:
        return {"eta": self.eta, "log_weights": self._log_weights.tolist()}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self._log_weights = torch.tensor(state["log_weights"], dtype=torch.float64)


class BaselinedDRO(OnlineDRO):
    """Online DRO on the excess loss l_i - ref_i, with ref_i a per-task reference loss.

    The reference is usually the validation loss of a monolingual model of task i, so a task that
    is naturally hard (high entropy) is not up-weighted for that reason alone.
    """

    def __init__(self, task_names: Sequence[str], reference_losses: Any, eta: float = 1e-2):
        super().__init__(task_names, eta=eta)
        if isinstance(reference_losses, Mapping):
            missing = [name for name in self.task_names if name not in reference_losses]
            if missing:
                raise ValueError(
                    f"reference losses are missing tasks {missing}: give a reference loss for "
                    "every task (for example from a monolingual run's reference.json)."
                )
            reference_losses = [reference_losses[name] for name in self.task_names]
        reference = as_task_vector("reference_losses", reference_losses, self.num_tasks)
        if not bool(torch.isfinite(reference).all()):
            raise ValueError(f"reference losses must be finite, got {reference.tolist()}.")
        self.reference_losses = reference

    def _excess_losses(self, loss_estimates: torch.Tensor) -> torch.Tensor:
        return loss_estimates - self.reference_losses

    def _extra_state(self) -> dict[str, Any]:
        state = super()._extra_state()
        state["reference_losses"] = self.reference_losses.tolist()
        return state
