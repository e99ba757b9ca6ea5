"""PCGrad (Yu et al., 2020, "Gradient Surgery for Multi-Task Learning") as a baseline.

For every task i, PCGrad takes the other tasks j in random order and, whenever the (running)
projected gradient of task i conflicts with the original gradient of task j
(g_i . g_j < 0), removes the component of g_i along g_j:

    g_i <- g_i - (g_i . g_j / ||g_j||^2) g_j

The update direction is the (weighted) sum of the projected gradients. Only the parameters that
all tasks share are projected. A task-specific parameter (a per-task output layer) receives the
sum of the task gradients unchanged, and that sum is its own task's gradient.

`project_conflicting` is the pure projection on a (tasks x parameters) matrix; `PCGradTrainer`
applies it inside the Hugging Face `Trainer`, with task gradients computed by
`hf_ldro.task_gradients.collect_task_gradients` (one forward/backward per task on that task's
share of the batch).
"""

from __future__ import annotations

import torch

from .task_gradients import collect_task_gradients, select_parameters
from .trainer import LDROTrainer


def projection_coefficients(gram: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Return the (N, N) matrix C with projected g_i = sum_k C[i, k] g_k, from the Gram matrix.

    Every quantity PCGrad needs is an inner product of task gradients: with the projected g_i
    written as sum_k C[i, k] g_k, its dot product with g_j is (C[i] @ gram)[j]. So the projections
    cost O(N^3) operations on the (N, N) Gram matrix instead of O(N^2 d) on the gradients.
    """
    gram = gram.detach().to(torch.float64).cpu()
    num_tasks = gram.shape[0]
    coefficients = torch.eye(num_tasks, dtype=torch.float64)
    gram_rows = gram.tolist()
    for i in range(num_tasks):
        row = coefficients[i].tolist()
        for j in torch.randperm(num_tasks, generator=generator).tolist():
            squared_norm = gram_rows[j][j]
            if j == i or squared_norm == 0:
                continue
            dot = sum(c * g for c, g in zip(row, gram_rows[j]))
            if dot < 0:
                row[j] -= dot / squared_norm
        coefficients[i] = torch.tensor(row, dtype=torch.float64)
    return coefficients


def project_conflicting_gradients(grads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Return the (N, d) PCGrad-projected task gradients (before summing).

    Args:
        grads: (N, d) task gradients, one row per task. A zero row is never projected onto.
        generator: random generator for the order of the other tasks (one permutation per task).
    """
    _check_matrix(grads)
    gram = grads.to(torch.float64) @ grads.to(torch.float64).T
    coefficients = projection_coefficients(gram, generator).to(grads.device)
    return (coefficients @ grads.to(torch.float64)).to(grads.dtype)


def _check_matrix(grads: torch.Tensor) -> None:
    if grads.dim() != 2:
        raise ValueError(f"grads must be a (tasks, parameters) matrix, got shape {tuple(grads.shape)}.")


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
    _check_matrix(grads)
    num_tasks = grads.shape[0]
    if weights is None:
        weights = torch.ones(num_tasks, dtype=torch.float64)
    weights = torch.as_tensor(weights, dtype=torch.float64).detach().cpu().reshape(-1)
    if weights.numel() != num_tasks:
        raise ValueError(f"{weights.numel()} weights for {num_tasks} task gradients: pass one weight per task.")
    gram = grads.to(torch.float64) @ grads.to(torch.float64).T
    combination = weights @ projection_coefficients(gram, generator)
    return (combination.to(grads.device, grads.dtype) @ grads)


class PCGradTrainer(LDROTrainer):
    """`LDROTrainer` whose update direction is PCGrad's combination of the per-task gradients.

    Each training step first runs `LDROTrainer`'s step, which records the per-task losses (for
    the logs and the weighting strategy) and accumulates the weighted gradient. It then computes
    every task's gradient on that task's share of the micro-batch (`collect_task_gradients`),
    projects the shared parameters' gradients with `project_conflicting`, and replaces the
    micro-batch's contribution to `.grad` by sum_i w_i g_i^PC, with w the strategy's weights.
    With uniform weights (`method="static"`, `mixing_alpha=0`) this is Yu et al.'s sum divided by
    N, so the same learning rate gives steps of the same scale as static mixing.

    Parameters listed by the model's `task_specific_parameter_names()` (per-task output layers)
    are not projected: they receive sum_i w_i g_i, which is their own task's weighted gradient.

    Cost: one ordinary step plus one forward and backward per task present in the batch.

    Args:
        pcgrad_seed: seed of the random task order of the projections; default `args.seed`.
        Everything else as for `LDROTrainer`.
    """

    def __init__(self, *args, pcgrad_seed: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        seed = self.args.seed if pcgrad_seed is None else pcgrad_seed
        self.pcgrad_generator = torch.Generator().manual_seed(int(seed))
        self._pcgrad_parameters: list[tuple[str, torch.nn.Parameter]] | None = None
        self._shared_mask: torch.Tensor | None = None
        # Conflicting task pairs (g_i . g_j < 0 on the shared parameters) and task pairs seen,
        # in total and since the last log.
        self.conflict_count = 0
        self.pair_count = 0
        self._logged_counts = (0, 0)

    def _prepare_pcgrad(self) -> None:
        if self._pcgrad_parameters is not None:
            return
        model = self.accelerator.unwrap_model(self.model)
        self._pcgrad_parameters = select_parameters(model)
        specific = set(getattr(model, "task_specific_parameter_names", lambda: [])())
        unknown = specific - {name for name, _ in self._pcgrad_parameters}
        if unknown:
            raise ValueError(
                f"task_specific_parameter_names() lists {sorted(unknown)}, which are not trainable "
                "parameters of the model: return names from model.named_parameters()."
            )
        self._shared_mask = torch.cat(
            [
                torch.full((param.numel(),), name not in specific, dtype=torch.bool)
                for name, param in self._pcgrad_parameters
            ]
        )
        if not bool(self._shared_mask.any()):
            raise ValueError("Every parameter is task-specific: PCGrad needs shared parameters to project.")

    def _task_loss(self, model: torch.nn.Module, sub_batch: dict) -> torch.Tensor:
        # Outside the weighted step, compute_loss returns the plain mean loss of the sub-batch.
        # The sub-batch contains one task's examples only, so this is that task's loss.
        with self.compute_loss_context_manager():
            return self.compute_loss(model, sub_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self._prepare_pcgrad()
        params = [param for _, param in self._pcgrad_parameters]
        accumulated = [None if param.grad is None else param.grad.detach().clone() for param in params]

        loss = super().training_step(model, inputs, num_items_in_batch)

        batch = self._prepare_inputs(inputs)
        task_ids = self._task_ids_of(batch)
        batch = {key: value for key, value in batch.items() if key != self.task_column}
        model.train()
        grads = collect_task_gradients(model, batch, task_ids, self.num_tasks, self._task_loss, params)

        grads = grads.to(torch.float32)
        shared = self._shared_mask.to(grads.device)
        weights = self.weighting.weights.to(device=grads.device, dtype=torch.float32)
        direction = weights @ grads
        shared_grads = grads[:, shared]
        direction[shared] = project_conflicting(shared_grads, self.pcgrad_generator, weights=weights)
        gram = shared_grads @ shared_grads.T
        present = shared_grads.abs().sum(dim=1) > 0
        pairs = torch.triu(present.unsqueeze(0) & present.unsqueeze(1), diagonal=1)
        self.conflict_count += int(((gram < 0) & pairs).sum())
        self.pair_count += int(pairs.sum())

        # NOTE: with gradient accumulation each micro-batch is projected on its own and the
        # directions are averaged; PCGrad is not applied to the accumulated step gradient.
        direction /= self.args.gradient_accumulation_steps
        offset = 0
        for param, previous in zip(params, accumulated):
            size = param.numel()
            update = direction[offset : offset + size].view_as(param).to(param.dtype)
            param.grad = update.clone() if previous is None else previous + update
            offset += size
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add `pcgrad_conflict_fraction`, the share of task pairs in conflict since the last log."""
        if "loss" in logs and self.is_in_train:
            conflicts = self.conflict_count - self._logged_counts[0]
            pairs = self.pair_count - self._logged_counts[1]
            if pairs:
                logs = {**logs, "pcgrad_conflict_fraction": conflicts / pairs}
            self._logged_counts = (self.conflict_count, self.pair_count)
        super().log(logs, start_time)
