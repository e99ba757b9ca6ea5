"""Figures of the synthetic experiment: trajectories in the plane and weights over steps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or expected
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .problem import OutlierProblem  # noqa: E402
from .training import Trajectory  # noqa: E402

COLORS = {
    "average": "tab:green",
    "dro": "tab:purple",
    "ldro": "tab:blue",
    "ldro_online": "tab:cyan",
}
LABELS = {
    "average": "average",
    "dro": "DRO",
    "ldro": "L-DRO (exact)",
    "ldro_online": "L-DRO (online)",
}

# The three panels of Figure 2 of Michel, Ruder & Yogatama: baselines, L-DRO, L-DRO under noise.
PANELS = (
    ("(a) average and DRO", ("average", "dro")),
    ("(b) exact and online L-DRO", ("ldro", "ldro_online")),
    ("(c) L-DRO with noisy losses and gradients", ("ldro_noisy", "ldro_online_noisy")),
)


def _draw_problem(axis, problem: OutlierProblem, optimum: torch.Tensor) -> None:
    outlier = problem.outlier.tolist()
    axis.add_patch(
        plt.Circle(outlier, problem.radius, color="0.85", zorder=0, label="forbidden disc")
    )
    cluster = problem.cluster.numpy()
    axis.scatter(
        cluster[:, 0],
        cluster[:, 1],
        s=25,
        color="gold",
        edgecolor="0.3",
        zorder=3,
        label="cluster tasks",
    )
    axis.scatter(
        [outlier[0]],
        [outlier[1]],
        s=60,
        color="red",
        edgecolor="0.3",
        zorder=3,
        label="outlier task",
    )
    axis.scatter(
        [float(optimum[0])],
        [float(optimum[1])],
        marker="*",
        s=160,
        color="black",
        zorder=4,
        label="optimum",
    )


def plot_trajectories(
    path: Path, problem: OutlierProblem, runs: dict[str, Trajectory], optimum: torch.Tensor
) -> None:
    """Write one panel per group of `PANELS`, each with the tasks and one line per run."""
    figure, axes = plt.subplots(1, len(PANELS), figsize=(5.2 * len(PANELS), 5.0))
    for axis, (title, keys) in zip(axes, PANELS):
        _draw_problem(axis, problem, optimum)
        for key in keys:
            if key not in runs:
                continue
            method = key.removesuffix("_noisy")
            points = runs[key].points.numpy()
            axis.plot(
                points[:, 0],
                points[:, 1],
                color=COLORS[method],
                lw=1.8,
                label=LABELS[method],
                zorder=2,
            )
            axis.scatter([points[-1, 0]], [points[-1, 1]], color=COLORS[method], s=30, zorder=5)
        start = next(iter(runs.values())).points[0]
        axis.scatter(
            [float(start[0])],
            [float(start[1])],
            marker="s",
            color="0.2",
            s=30,
            zorder=5,
            label="start",
        )
        axis.set_title(title)
        axis.set_xlim(-1.8, 2.6)
        axis.set_ylim(-1.6, 2.8)
        axis.set_aspect("equal")
        axis.set_xlabel("x")
        axis.set_ylabel("y")
        axis.legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_weights(path: Path, runs: dict[str, Trajectory]) -> None:
    """Write the outlier's weight and the cluster's total weight over steps, one panel per run."""
    keys = list(runs)
    columns = 4
    rows = (len(keys) + columns - 1) // columns
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.0 * columns, 3.0 * rows), squeeze=False, sharey=True
    )
    for axis, key in zip(axes.flat, keys):
        weights = runs[key].weights.numpy()
        axis.plot(weights[:, 0], color="red", label="outlier")
        axis.plot(weights[:, 1:].sum(axis=1), color="goldenrod", label="cluster (sum)")
        method = key.removesuffix("_noisy")
        axis.set_title(LABELS[method] + (", noisy" if key.endswith("_noisy") else ""))
        axis.set_xlabel("step")
        axis.set_ylim(-0.03, 1.03)
    for axis in axes[:, 0]:
        axis.set_ylabel("weight")
    for axis in list(axes.flat)[len(keys) :]:
        axis.axis("off")
    axes[0, 0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
