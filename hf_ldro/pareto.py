"""Pareto frontiers of (average, worst) task accuracy, and plots in the style of Michel et al.

Michel, Ruder & Yogatama ("Balancing Average and Worst-Case Accuracy in Multitask Learning",
figures 3 to 5) evaluate every method periodically and compare the Pareto frontier of all its
checkpoints and hyperparameter settings in the plane x = average accuracy, y = worst-task
accuracy; a frontier further up and to the right is better on both.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def pareto_frontier(points: Sequence[Sequence[float]]) -> list[int]:
    """Return the indices of the points not dominated by any other point, maximising both coordinates.

    A point dominates another when it is at least as large in both coordinates and larger in one.
    Among identical points only the first (lowest index) is kept. The indices are sorted by the
    first coordinate, ascending, so the frontier's second coordinate descends along them.

    Example:
        >>> pareto_frontier([(0.5, 0.2), (0.4, 0.3), (0.4, 0.1), (0.6, 0.1)])
        [1, 0, 3]
    """
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        return []
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"points must be a sequence of (x, y) pairs, got an array of shape {array.shape}.")
    if not np.isfinite(array).all():
        row = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise ValueError(f"Point {row} is {array[row].tolist()}: every coordinate must be finite.")

    # Sweep from the largest x down, breaking ties by larger y, then lower index. A point is on
    # the frontier exactly when its y beats every y seen so far.
    order = sorted(range(len(array)), key=lambda i: (-array[i, 0], -array[i, 1], i))
    frontier, best_y = [], -math.inf
    for index in order:
        if array[index, 1] > best_y:
            frontier.append(index)
            best_y = array[index, 1]
    return frontier[::-1]


def frontier_records(records: Sequence[Mapping], x_key: str = "avg_accuracy", y_key: str = "worst_accuracy") -> list[Mapping]:
    """Return the records (dicts) on the Pareto frontier of (record[x_key], record[y_key])."""
    indices = pareto_frontier([(record[x_key], record[y_key]) for record in records])
    return [records[i] for i in indices]


def plot_pareto_frontiers(
    panels: Mapping[str, Mapping[str, Sequence[Mapping]]],
    path: str,
    x_key: str = "avg_accuracy",
    y_key: str = "worst_accuracy",
    title: str | None = None,
) -> None:
    """Draw one panel per entry of `panels` and save the figure to `path`.

    Args:
        panels: {panel title: {method: records}}, each record a mapping with x_key and y_key (for
            example one evaluation of one run). Every record is drawn as a faint dot; each
            method's frontier as a step line with markers, the shape of the region its
            checkpoints attain.
        path: output image file (the format follows the extension).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    methods = sorted({method for by_method in panels.values() for method in by_method})
    colours = {method: plt.get_cmap("tab10")(i % 10) for i, method in enumerate(methods)}

    # Distinct markers keep methods whose frontiers coincide (e.g. after a very short run) visible.
    marker_cycle = ("o", "s", "^", "D", "v", "P", "X", "*")
    markers = {method: marker_cycle[i % len(marker_cycle)] for i, method in enumerate(methods)}
    values_nonnegative = all(
        record[key] >= 0
        for by_method in panels.values()
        for records in by_method.values()
        for record in records
        for key in (x_key, y_key)
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False, sharey=True)

    for axis, (panel_title, by_method) in zip(axes[0], panels.items()):
        for method in methods:
            records = list(by_method.get(method, []))
            if not records:
                continue
            xs = [record[x_key] for record in records]
            ys = [record[y_key] for record in records]
            axis.scatter(xs, ys, s=8, alpha=0.25, color=colours[method], linewidths=0)
            frontier = frontier_records(records, x_key, y_key)
            axis.step(
                [record[x_key] for record in frontier],
                [record[y_key] for record in frontier],
                where="pre",
                marker=markers[method],
                markersize=5,
                markerfacecolor="none",
                color=colours[method],
                label=method,
            )
        if values_nonnegative:
            axis.set_ylim(bottom=0.0)
        axis.set_title(panel_title)
        axis.set_xlabel("average task accuracy")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("worst task accuracy")
    handles, labels = [], []
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    # One legend for all panels, below them, so that it hides no point.
    figure.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), fontsize="small", frameon=False)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
