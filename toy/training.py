"""Gradient descent on the weighted task losses of the outlier problem, with any weighting."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from hf_ldro.interaction import interaction_matrix
from hf_ldro.weighting import TaskWeighting

from .problem import OutlierProblem

logger = logging.getLogger(__name__)


@dataclass
class Trajectory:
    """Record of one run: model outputs, weights and noise-free losses at every step."""

    points: torch.Tensor  # [steps + 1, 2] model outputs f(theta), the start first
    weights: torch.Tensor  # [steps, N] weights used at each step
    losses: torch.Tensor  # [steps + 1, N] noise-free losses


def losses_and_gradients(
    problem: OutlierProblem, theta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the [N] task losses at theta and their [N, 2] gradients, one backward pass per task.

    A loop of torch.autograd.grad calls rather than torch.func.jacrev, whose first call costs
    seconds of set-up, more than a whole default run.
    """
    theta = theta.detach().requires_grad_(True)
    task_losses = problem.losses(theta)
    gradients = torch.stack(
        [torch.autograd.grad(loss, theta, retain_graph=True)[0] for loss in task_losses]
    )
    return task_losses.detach(), gradients


def train(
    problem: OutlierProblem,
    weighting: TaskWeighting,
    start: torch.Tensor,
    steps: int,
    learning_rate: float,
    noise_std: float = 0.0,
    seed: int = 0,
    log_every: int = 0,
    name: str = "",
) -> Trajectory:
    """Run `steps` of gradient descent on sum_i w_i l_i(theta), w from `weighting`.

    Each step follows Algorithm 3 of Michel, Ruder & Yogatama: refresh the interaction matrix when due (from the
    per-task gradients at the current theta, by torch autograd), update the weights from the
    losses, then step theta along the w-weighted gradient. With `noise_std` > 0 every observed
    loss and gradient entry gets independent N(0, noise_std^2) noise, which emulates minibatch
    stochasticity; the recorded losses stay noise-free.
    """
    generator = torch.Generator().manual_seed(seed)
    theta = start.detach().clone().to(torch.float64)

    points, weights, losses = [problem.predict(theta)], [], [problem.losses(theta)]
    for step in range(steps):
        observed_losses, gradients = losses_and_gradients(problem, theta)
        if noise_std > 0:
            observed_losses = observed_losses + noise_std * torch.randn(
                observed_losses.shape, generator=generator, dtype=torch.float64
            )
            gradients = gradients + noise_std * torch.randn(
                gradients.shape, generator=generator, dtype=torch.float64
            )

        if weighting.requires_interaction and weighting.interaction_due:
            weighting.set_interaction(interaction_matrix(gradients))
        step_weights = weighting.update(observed_losses)
        theta = theta - learning_rate * (step_weights @ gradients)

        with torch.no_grad():
            points.append(problem.predict(theta))
            losses.append(problem.losses(theta))
        weights.append(step_weights)
        if log_every and (step + 1) % log_every == 0:
            logger.info(
                "%s step %d/%d: outlier loss %.4f, cluster mean loss %.4f, outlier weight %.3f",
                name,
                step + 1,
                steps,
                float(losses[-1][0]),
                float(losses[-1][1:].mean()),
                float(step_weights[0]),
            )
    return Trajectory(torch.stack(points), torch.stack(weights), torch.stack(losses))
