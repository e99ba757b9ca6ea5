"""The tasks, the model and the best achievable point of the synthetic outlier problem.

Each task i is a point y_i in the plane with loss l_i(theta) = ||y_i - f(theta)||^2. The model is
f(r, phi) = y_out + (R + r^2) (cos phi, sin phi): it can never come closer than R to the outlier
y_out, so the outlier's loss is at least R^2 while the cluster's tasks can reach zero loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OutlierProblem:
    """Task points (the outlier first, then the cluster) and the forbidden radius R."""

    points: torch.Tensor  # [N, 2] float64; row 0 is the outlier
    radius: float

    @property
    def outlier(self) -> torch.Tensor:
        return self.points[0]

    @property
    def cluster(self) -> torch.Tensor:
        return self.points[1:]

    @property
    def task_names(self) -> list[str]:
        return ["outlier"] + [f"cluster_{i}" for i in range(len(self.points) - 1)]

    def predict(self, theta: torch.Tensor) -> torch.Tensor:
        """Return f(theta) = y_out + (R + r^2) (cos phi, sin phi) for theta = (r, phi)."""
        distance = self.radius + theta[0] ** 2
        return self.outlier + distance * torch.stack([torch.cos(theta[1]), torch.sin(theta[1])])

    def losses(self, theta: torch.Tensor) -> torch.Tensor:
        """Return the [N] task losses ||y_i - f(theta)||^2."""
        return ((self.points - self.predict(theta)) ** 2).sum(dim=1)

    def losses_at(self, point: torch.Tensor) -> torch.Tensor:
        """Return the [N] task losses of the model output `point` (a position in the plane)."""
        return ((self.points - point) ** 2).sum(dim=1)

    def theta_at(self, x: float, y: float) -> torch.Tensor:
        """Return the parameters (r, phi), r >= 0, whose output is the point (x, y)."""
        offset = torch.tensor([x, y], dtype=torch.float64) - self.outlier
        distance = float(offset.norm())
        if distance < self.radius:
            raise ValueError(
                f"The point ({x}, {y}) is {distance:.3f} from the outlier at "
                f"({float(self.outlier[0])}, {float(self.outlier[1])}), inside the forbidden disc "
                f"of radius {self.radius}: the model cannot output it. Pick a point at least "
                f"{self.radius} away."
            )
        angle = math.atan2(float(offset[1]), float(offset[0]))
        return torch.tensor([math.sqrt(distance - self.radius), angle], dtype=torch.float64)

    def optimum(self) -> torch.Tensor:
        """Return the point of the forbidden circle nearest the cluster's mean.

        There the outlier's loss is at its minimum R^2, and the cluster's mean loss is the lowest
        that any point with that outlier loss can reach. The reason: the mean squared distance to
        the cluster is the squared distance to its mean plus a constant.
        """
        direction = self.cluster.mean(dim=0) - self.outlier
        return self.outlier + self.radius * direction / direction.norm()


def make_problem(
    num_cluster_points: int = 10,
    cluster_std: float = 0.1,
    seed: int = 0,
    radius: float = 1.25,
    cluster_center: tuple[float, float] = (-1.0, 0.0),
    outlier: tuple[float, float] = (1.0, 0.0),
) -> OutlierProblem:
    """Draw the cluster from N(cluster_center, cluster_std^2 I) with `seed`; return the problem."""
    generator = torch.Generator().manual_seed(seed)
    offsets = cluster_std * torch.randn(
        num_cluster_points, 2, generator=generator, dtype=torch.float64
    )
    cluster = torch.tensor(cluster_center, dtype=torch.float64) + offsets
    points = torch.cat([torch.tensor([outlier], dtype=torch.float64), cluster])
    return OutlierProblem(points=points, radius=float(radius))
