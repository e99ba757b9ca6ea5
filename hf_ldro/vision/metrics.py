"""Per-task accuracy of multitask classifiers, with the average and the worst task.

Logits have one column per class in task-major order (see `hf_ldro.vision.models`). Two ways to
turn them into a prediction:

    task: argmax over the example's own task's classes only. The task of a test example is known
        (every example belongs to one task), so this measures the n-way task the model was set,
        whichever output layer it has. It is the default, and the only meaningful choice for
        per-task heads.
    all: argmax over every class of every task (the shared softmax's 100-way prediction on
        CIFAR-100); an example counts as correct only if the top class is its own class. With
        per-task heads this equals "task", because the other tasks' columns hold the minimum.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

ACCURACY_SCOPES = ("task", "all")


def per_task_accuracy(
    logits: np.ndarray,
    labels: np.ndarray,
    task_ids: np.ndarray,
    num_classes_per_task: Sequence[int],
    scope: str = "task",
) -> np.ndarray:
    """Return one accuracy per task (NaN for a task with no example).

    Args:
        logits: (N, sum(num_classes_per_task)) scores in task-major class order.
        labels: (N,) class rank of each example within its task.
        task_ids: (N,) task id of each example.
        num_classes_per_task: class count of each task, in task-id order.
        scope: "task" or "all", see the module docstring.
    """
    if scope not in ACCURACY_SCOPES:
        raise ValueError(f"Invalid accuracy scope {scope!r}: use one of {list(ACCURACY_SCOPES)}.")
    logits = np.asarray(logits)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    task_ids = np.asarray(task_ids).reshape(-1).astype(np.int64)
    sizes = np.asarray(num_classes_per_task, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    if logits.ndim != 2 or logits.shape[1] != sizes.sum():
        raise ValueError(
            f"logits have shape {logits.shape} but the tasks have {int(sizes.sum())} classes in all: "
            "expected (examples, total classes)."
        )
    if not len(labels) == len(task_ids) == len(logits):
        raise ValueError(
            f"{len(logits)} logit rows, {len(labels)} labels and {len(task_ids)} task ids: "
            "pass one of each per example."
        )

    targets = offsets[task_ids] + labels
    if scope == "task":
        columns = np.arange(logits.shape[1])
        start = offsets[task_ids][:, None]
        in_task = (columns >= start) & (columns < start + sizes[task_ids][:, None])
        scores = np.where(in_task, logits.astype(np.float64), -np.inf)
    else:
        scores = logits
    correct = scores.argmax(axis=1) == targets

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

    The Trainer must pass labels and task ids as label ids, i.e. run with
    `TrainingArguments(label_names=["labels", "task_ids"])`. Returned keys: `accuracy_<task>` for
    each task, `avg_accuracy`, `worst_accuracy` (flat floats, as the Trainer's log expects).
    """
    task_names = list(task_names)

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        label_ids = eval_prediction.label_ids
        if not isinstance(label_ids, (tuple, list)) or len(label_ids) != 2:
            raise ValueError(
                "compute_metrics needs (labels, task_ids) as label ids: set "
                'TrainingArguments(label_names=["labels", "task_ids"]).'
            )
        labels, task_ids = label_ids
        accuracy = per_task_accuracy(logits, labels, task_ids, num_classes_per_task, scope=scope)
        summary = summarize_accuracy(accuracy, task_names)
        metrics = {f"accuracy_{name}": acc for name, acc in summary["task_accuracy"].items()}
        metrics["avg_accuracy"] = summary["avg_accuracy"]
        metrics["worst_accuracy"] = summary["worst_accuracy"]
        return metrics

    return compute_metrics
