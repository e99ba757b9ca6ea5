"""PCGrad (Yu et al., 2020, "Gradient Surgery for Multi-Task Learning") as a baseline.

For every task i, PCGrad takes the other tasks j in random order and, whenever the (running)
projected gradient of task i conflicts with the original gradient of task j
(g_i . g_j < 0), removes the component of g_i along g_j:

    g_i <- g_i - (g_i . g_j / ||g_j||^2) g_j

The update direction is the (weighted) sum of the projected gradients. Only the parameters that
all tasks share are projected; a task-specific parameter (a per-task output layer) receives the
sum of the task gradients unchanged, which is its own task's gradient.

`project_conflicting` is the pure projection on a (tasks x parameters) matrix; `PCGradTrainer`
applies it inside the Hugging Face `Trainer`, with task gradients computed by
`hf_ldro.task_gradients.collect_task_gradients` (one forward/backward per task on that task's
share of the batch).
"""

from __future__ import annotations

import torch


def project_conflicting_gradients(grads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Return the (N, d) PCGrad-projected task gradients (before summing).

    Args:
        grads: (N, d) task gradients, one row per task. A zero row is never projected onto.
        generator: random generator for the order of the other tasks (one permutation per task).
    """
    if grads.dim() != 2:
        raise ValueError(f"grads must be a (tasks, parameters) matrix, got shape {tuple(grads.shape)}.")
    num_tasks = grads.shape[0]
    original = grads.to(torch.float64) if grads.dtype != torch.float64 else grads
    squared_norms = (original * original).sum(dim=1)
    projected = original.clone()
    for i in range(num_tasks):
        for j in torch.randperm(num_tasks, generator=generator).tolist():
            if j == i or squared_norms[j] == 0:
                continue
            dot = projected[i] @ original[j]
            if dot < 0:
                projected[i] -= (dot / squared_norms[j]) * original[j]
    return projected.to(grads.dtype)


def project_conflicting(
    grads: torch.Tensor,
    generator: torch.Generator | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return the PCGrad update direction: sum_i weights_i * projected g_i, a (d,) tensor.

    `weights` defaults to ones (the sum of Yu et al.). Because projection commutes with positive
    scaling of g_i, weighting after projecting equals projecting weighted gradients.

    Example:
        >>> g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> project_conflicting(g, torch.Generator().manual_seed(0))
        tensor([0.5000, 1.5000])
    """
    projected = project_conflicting_gradients(grads, generator)
    if weights is None:
        return projected.sum(dim=0)
    weights = torch.as_tensor(weights, dtype=projected.dtype, device=projected.device).reshape(-1)
    if weights.numel() != grads.shape[0]:
        raise ValueError(f"{weights.numel()} weights for {grads.shape[0]} task gradients: pass one weight per task.")
    return weights @ projected
