"""Lookahead DRO (Michel, Ruder & Yogatama, "Balancing Average and Worst-Case Accuracy in
Multitask Learning"), online and exact.

Both build the lookahead matrix L_ij = l_i - lambda * A_ij from the current losses l and the
interaction matrix A (A_ij = g_i . g_j / ||g_j||, see `hf_ldro.interaction`): entry (i, j) is the
first-order estimate of task i's loss after a step of length lambda along task j's normalised
gradient. Row i is the task evaluated (maximising player v), column j the task trained on
(minimising player w).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from ..games import max_entropy_equilibrium
from .base import TaskWeighting, check_nonnegative


def lookahead_matrix(
    losses: torch.Tensor, interaction: torch.Tensor, lookahead_lr: float
) -> torch.Tensor:
    """Return L = l 1^T - lambda * A, so L_ij = l_i - lambda * A_ij.

    Example:
        >>> lookahead_matrix(torch.tensor([1.0, 2.0]), torch.eye(2), 0.5).tolist()
        [[0.5, 1.0], [2.0, 1.5]]
    """
    return losses.unsqueeze(1) - lookahead_lr * interaction


def check_update_interval(update_interval: Any) -> int:
    """Return the interaction refresh period k as an int, or raise a ValueError naming it."""
    if (
        isinstance(update_interval, bool)
        or int(update_interval) != update_interval
        or update_interval < 1
    ):
        raise ValueError(
            f"L-DRO interaction update interval k must be an integer >= 1, got {update_interval!r}."
        )
    return int(update_interval)


class _LookaheadBase(TaskWeighting):
    """Shared state of the lookahead strategies: lambda, the refresh period k and the matrix A."""

    requires_interaction = True

    def __init__(self, task_names: Sequence[str], lookahead_lr: float, update_interval: int):
        super().__init__(task_names)
        self.lookahead_lr = check_nonnegative(
            "L-DRO lookahead learning rate (lambda)", lookahead_lr
        )
        self.interaction_interval = check_update_interval(update_interval)

        # A = 0 until the first refresh (Algorithm 3 of the paper): L then has equal columns.
        self.interaction = torch.zeros(self.num_tasks, self.num_tasks, dtype=torch.float64)
        self.interaction_refreshes = 0

    @property
    def interaction_due(self) -> bool:
        """True when the caller should call `set_interaction` before the next `update`.

        Counts updates as Algorithm 3 counts steps: refresh before updates 0, k, 2k, ...
        """
        return self.num_updates % self.interaction_interval == 0

    def _check_interaction(self, matrix: Any) -> torch.Tensor:
        if hasattr(matrix, "detach"):
            matrix = matrix.detach().cpu()
        matrix = torch.as_tensor(matrix, dtype=torch.float64).cpu()
        expected = (self.num_tasks, self.num_tasks)
        if tuple(matrix.shape) != expected:
            raise ValueError(
                f"The interaction matrix has shape {tuple(matrix.shape)} but there are "
                f"{self.num_tasks} tasks: pass an {expected[0]} x {expected[1]} matrix in task order."
            )
        if not bool(torch.isfinite(matrix).all()):
            row, col = torch.nonzero(~torch.isfinite(matrix))[0].tolist()
            raise ValueError(
                f"The interaction matrix has a non-finite entry {float(matrix[row, col])} at "
                f"({self.task_names[row]}, {self.task_names[col]}): a task gradient was NaN or "
                "inf. The matrix was not stored."
            )
        return matrix.clone()

    def set_interaction(self, matrix: Any) -> None:
        """Store a new [N, N] interaction matrix A (any array-like or tensor, on any device).

        Raises:
            ValueError: wrong shape, or a NaN/inf entry. The previous matrix is kept.
        """
        self.interaction = self._check_interaction(matrix)
        self.interaction_refreshes += 1

    def lookahead(self, loss_estimates: torch.Tensor) -> torch.Tensor:
        """Return the lookahead matrix L for the given per-task losses and the stored A."""
        return lookahead_matrix(loss_estimates, self.interaction, self.lookahead_lr)

    def _extra_state(self) -> dict[str, Any]:
        return {
            "lookahead_lr": self.lookahead_lr,
            "update_interval": self.interaction_interval,
            "interaction": self.interaction.tolist(),
            "interaction_refreshes": self.interaction_refreshes,
        }

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.interaction = self._check_interaction(state["interaction"])
        self.interaction_refreshes = int(state.get("interaction_refreshes", 0))


class LookaheadDRO(_LookaheadBase):
    """Online L-DRO (Algorithms 2 and 3 of Michel, Ruder & Yogatama, "Balancing Average and
    Worst-Case Accuracy in Multitask Learning").

    At every update, i* = argmax_i (L w)_i is the task with the worst lookahead loss (the best
    response to the current w), then w_j <- w_j exp(-eta L_{i* j}), renormalised. Because l_{i*}
    is the same for every j it cancels in the normalisation: the step raises the weight of the
    tasks whose gradients most decrease the worst task's loss. The weights are kept as
    log-weights, so large eta * L products cannot overflow. The caller refreshes A with
    `set_interaction` every `interaction_interval` updates (`interaction_due` tells when).

    Args:
        task_names: the N tasks, in the order of every loss vector and matrix.
        eta: weight learning rate (>= 0); 0 keeps the weights uniform.
        lookahead_lr: lambda (>= 0), the step length of the one-step lookahead.
        update_interval: k (integer >= 1), the interaction refresh period in updates.

    Example:
        >>> ldro = LookaheadDRO(["en", "yo"], eta=1.0, lookahead_lr=1.0, update_interval=10)
        >>> ldro.set_interaction([[1.0, 0.0], [0.0, 1.0]])  # independent tasks
        >>> w = ldro.update([1.0, 3.0])
        >>> bool(w[1] > w[0])  # only the worst task's own gradient helps it
        True
    """

    def __init__(
        self,
        task_names: Sequence[str],
        eta: float = 1e-2,
        lookahead_lr: float = 1e-2,
        update_interval: int = 100,
    ):
        super().__init__(task_names, lookahead_lr, update_interval)
        self.eta = check_nonnegative("L-DRO eta", eta)
        self._log_weights = torch.log(self._weights)
        self.last_best_response: int | None = None

    def _compute_weights(self, loss_estimates: torch.Tensor) -> torch.Tensor:
        lookahead = self.lookahead(loss_estimates)
        worst = int(torch.argmax(lookahead @ self._weights))
        self.last_best_response = worst
        log_weights = self._log_weights - self.eta * lookahead[worst]
        self._log_weights = torch.log_softmax(log_weights, dim=0)
        return self._log_weights.exp()

    def _extra_state(self) -> dict[str, Any]:
        state = super()._extra_state()
        state.update(eta=self.eta, log_weights=self._log_weights.tolist())
        return state

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        super()._load_extra_state(state)
        self._log_weights = torch.tensor(state["log_weights"], dtype=torch.float64)


class ExactLookaheadDRO(_LookaheadBase):
    """Exact L-DRO (Algorithm 1 of Michel, Ruder & Yogatama, "Balancing Average and Worst-Case
    Accuracy in Multitask Learning").

    Every update sets w to the maximum-entropy Nash equilibrium of min_w max_v v^T L w
    (`hf_ldro.games.max_entropy_equilibrium`). It reacts fully to the noise of every batch, which
    the paper found unstable with stochastic losses; the online `LookaheadDRO` is the practical
    variant. Costs one LP and a small entropy maximisation per update.

    Args:
        task_names: the N tasks.
        lookahead_lr: lambda (>= 0).
        update_interval: k (integer >= 1), the interaction refresh period in updates. Algorithm 1
            recomputes the gradients at every step, which is k = 1.
        tol: payoff tolerance of the optimal face, relative to the range of L.

    Example:
        >>> exact = ExactLookaheadDRO(["en", "yo"], lookahead_lr=0.1, update_interval=1)
        >>> [round(w, 3) for w in exact.update([2.0, 2.0]).tolist()]  # A = 0, equal losses
        [0.5, 0.5]
    """

    def __init__(
        self,
        task_names: Sequence[str],
        lookahead_lr: float = 1e-2,
        update_interval: int = 1,
        tol: float = 1e-9,
    ):
        super().__init__(task_names, lookahead_lr, update_interval)
        self.tol = float(tol)
        if not math.isfinite(self.tol) or self.tol <= 0:
            raise ValueError(f"ExactLookaheadDRO tol must be a finite number > 0, got {tol!r}.")

    def _compute_weights(self, loss_estimates: torch.Tensor) -> torch.Tensor:
        weights = max_entropy_equilibrium(self.lookahead(loss_estimates).numpy(), tol=self.tol)
        return torch.as_tensor(weights, dtype=torch.float64)

    def _extra_state(self) -> dict[str, Any]:
        state = super()._extra_state()
        state["tol"] = self.tol
        return state
