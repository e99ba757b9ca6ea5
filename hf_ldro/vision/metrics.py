"""Per-task accuracy of multitask classifiers, with the average and the worst task.

Logits have one column per class and labels are class indices, both numbered task by task (see
`hf_ldro.vision.models`), so a label also gives the example's task. Two ways to turn logits into a
prediction:

    task: argmax over the classes of the example's own task only. Every test example belongs to
        one known task, so this measures the n-way task the model was set, whichever output layer
        it has. It is the default, and the only meaningful choice for per-task heads.
    all: argmax over every class of every task (the shared softmax's 100-way prediction on
        CIFAR-100); an example counts as correct only if the top class is its own class. With
        per-task heads this compares scores of independently normalised heads, so use it only
        with the shared head.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

ACCURACY_SCOPES = ("task", "all")


def task_of_labels(labels: np.ndarray, num_classes_per_task: Sequence[int]) -> np.ndarray:
    """Return the task id of each class index (classes numbered task by task)."""
    boundaries = np.cumsum(num_classes_per_task)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= boundaries[-1]):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise ValueError(f"label {int(bad)} is out of range: there are {int(boundaries[-1])} classes in all.")
    return np.searchsorted(boundaries, labels, side="right")


def per_task_accuracy(
    logits: np.ndarray,
    labels: np.ndarray,
    num_classes_per_task: Sequence[int],
    scope: str = "task",
) -> np.ndarray:
    """Return one accuracy per task (NaN for a task with no example).

    Args:
        logits: (N, sum(num_classes_per_task)) scores, columns numbered task by task.
        labels: (N,) class index of each example.
        num_classes_per_task: class count of each task, in task-id order.
        scope: "task" or "all", see the module docstring.
    """
    if scope not in ACCURACY_SCOPES:
        raise ValueError(f"Invalid accuracy scope {scope!r}: use one of {list(ACCURACY_SCOPES)}.")
    logits = np.asarray(logits)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    sizes = np.asarray(num_classes_per_task, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[1] != sizes.sum():
        raise ValueError(
            f"logits have shape {logits.shape} but the tasks have {int(sizes.sum())} classes in all: "
            "expected (examples, total classes)."
        )
    if len(labels) != len(logits):
        raise ValueError(f"{len(logits)} logit rows but {len(labels)} labels: pass one label per example.")

    task_ids = task_of_labels(labels, sizes)
    if scope == "task":
        column_tasks = np.repeat(np.arange(len(sizes)), sizes)
        in_task = column_tasks[None, :] == task_ids[:, None]
        scores = np.where(in_task, logits.astype(np.float64), -np.inf)
    else:
        scores = logits
    correct = scores.argmax(axis=1) == labels

    accuracy = np.full(len(sizes), np.nan)
    for task in range(len(sizes)):
        mask = task_ids == task
        if mask.any():
            accuracy[task] = correct[mask].mean()
    return accuracy


def summarize_accuracy(accuracy: np.ndarray, task_names: Sequence[str]) -> dict:
    """Return {"task_accuracy": {task: acc}, "avg_accuracy", "worst_accuracy", "worst_task"}.

    Tasks with no evaluation example (NaN) are left out of the average and the worst.
    """
    observed = {name: float(acc) for name, acc in zip(task_names, accuracy) if not np.isnan(acc)}
    if not observed:
        raise ValueError("No task has an evaluation example: the evaluation set is empty.")
    worst_task = min(observed, key=observed.get)
    return {
        "task_accuracy": observed,
        "avg_accuracy": float(np.mean(list(observed.values()))),
        "worst_accuracy": observed[worst_task],
        "worst_task": worst_task,
    }


def make_compute_metrics(task_names: Sequence[str], num_classes_per_task: Sequence[int], scope: str = "task"):
    """Build a `Trainer` `compute_metrics` function reporting per-task, average and worst accuracy.

    Returned keys: `accuracy_<task>` for each task with examples, `avg_accuracy` and
    `worst_accuracy` (flat floats, as the Trainer's log expects).
    """
    task_names = list(task_names)

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        labels = eval_prediction.label_ids
        if isinstance(labels, (tuple, list)):
            labels = labels[0]
        accuracy = per_task_accuracy(logits, labels, num_classes_per_task, scope=scope)
        summary = summarize_accuracy(accuracy, task_names)
        metrics = {f"accuracy_{name}": acc for name, acc in summary["task_accuracy"].items()}
        metrics["avg_accuracy"] = summary["avg_accuracy"]
        metrics["worst_accuracy"] = summary["worst_accuracy"]
        return metrics

    return compute_metrics
