"""Token-weighted per-task losses, perplexity and relative perplexity.

Conventions follow Michel, Ruder & Yogatama, "Balancing Average and Worst-Case Accuracy in
Multitask Learning". The perplexity of a language is exp of its token-weighted mean cross-entropy
over the whole evaluation set. The relative perplexity is (ppl - ppl_ref) / ppl_ref, with ppl_ref
the perplexity of a reference (usually monolingual) model on the same set. Summaries report the
unweighted mean over languages ("avg") and the maximum ("worst"), and name the worst language.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
"""Label value that marks a position without a target, as in transformers."""

SUMMARY_NAMES = ("avg", "worst")


def per_example_loss_sums(
    logits: torch.Tensor, labels: torch.Tensor, shift_labels: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute each example's summed cross-entropy and its number of labelled tokens.

    Args:
        logits: [B, T, V] model outputs.
        labels: [B, T] targets, IGNORE_INDEX where there is none.
        shift_labels: True for causal LMs, where position t predicts label t + 1 (the same shift that
            transformers' causal-LM loss applies); False for masked LMs, where position t predicts
            label t.

    Returns:
        (loss_sums, token_counts), both [B]: float32 sums (differentiable) and int64 counts.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits have shape {tuple(logits.shape)} but labels have shape {tuple(labels.shape)}: "
            "expected logits [batch, length, vocab] and labels [batch, length]."
        )
    if shift_labels:
        logits = logits[:, :-1, :]
        labels = labels[:, 1:]
    vocab_size = logits.shape[-1]
    token_losses = F.cross_entropy(
        logits.reshape(-1, vocab_size).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(labels.shape)
    labelled = labels != IGNORE_INDEX
    loss_sums = (token_losses * labelled).sum(dim=1)
    token_counts = labelled.sum(dim=1)
    return loss_sums, token_counts


def per_task_sums(
    example_loss_sums: torch.Tensor,
    example_token_counts: torch.Tensor,
    task_ids: torch.Tensor,
    num_tasks: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add up per-example (loss sum, token count) by task.

    Returns:
        (loss_sums [N], token_counts [N]) on the device of the inputs; loss_sums keeps the autograd
        graph, token_counts is int64.
    """
    task_ids = task_ids.reshape(-1).long()
    loss_sums = torch.zeros(num_tasks, dtype=example_loss_sums.dtype, device=example_loss_sums.device)
    loss_sums = loss_sums.index_add(0, task_ids, example_loss_sums)
    token_counts = torch.zeros(num_tasks, dtype=torch.long, device=example_token_counts.device)
    token_counts = token_counts.index_add(0, task_ids, example_token_counts.long())
    return loss_sums, token_counts


def token_weighted_mean(loss_sum: float, token_count: int) -> float:
    """Return loss_sum / token_count; NaN when there are no tokens."""
    if token_count <= 0:
        return float("nan")
    return float(loss_sum) / float(token_count)


def perplexity(mean_loss: float) -> float:
    """Return exp(mean_loss), or inf where it overflows."""
    try:
        return math.exp(mean_loss)
    except OverflowError:
        return float("inf")


def relative_perplexity(model_perplexity: float, reference_perplexity: float) -> float:
    """Return (ppl - ppl_ref) / ppl_ref; 0 means as good as the reference, > 0 worse."""
    if not reference_perplexity > 0 or not math.isfinite(reference_perplexity):
        raise ValueError(
            f"reference perplexity must be finite and > 0, got {reference_perplexity!r}."
        )
    return (model_perplexity - reference_perplexity) / reference_perplexity


def check_language_names(languages: Sequence[str]) -> None:
    """Raise a ValueError for a language name that would collide with a summary metric key."""
    clashing = [name for name in languages if name in SUMMARY_NAMES]
    if clashing:
        raise ValueError(
            f"Evaluation set name(s) {clashing} clash with the summary metrics "
            f"{list(SUMMARY_NAMES)}: rename these evaluation sets."
        )


def language_metrics(
    loss_sums: Mapping[str, float],
    token_counts: Mapping[str, int],
    reference_perplexities: Mapping[str, float] | None = None,
    prefix: str = "eval",
) -> dict[str, float | str]:
    """Build the per-language and summary metrics from per-language (loss sum, token count).

    Keys, for each language L: `{prefix}_L_loss`, `{prefix}_L_perplexity`, and with references
    `{prefix}_L_relative_perplexity`. Summaries: `{prefix}_loss` (token-weighted over all
    languages), `{prefix}_avg_perplexity`, `{prefix}_worst_perplexity`, `{prefix}_worst_language`
    and with references `{prefix}_avg_relative_perplexity`, `{prefix}_worst_relative_perplexity`,
    `{prefix}_worst_relative_language`.

    Raises:
        ValueError: a language without labelled tokens, mismatched keys, or a language missing from
            `reference_perplexities`.
    """
    languages = list(loss_sums)
    if not languages:
        raise ValueError("No evaluation sets: pass at least one language.")
    check_language_names(languages)
    if set(token_counts) != set(languages):
        raise ValueError(
            f"loss_sums has languages {sorted(loss_sums)} but token_counts has "
            f"{sorted(token_counts)}: pass both for the same languages."
        )
    empty = [name for name in languages if token_counts[name] <= 0]
    if empty:
        raise ValueError(
            f"Evaluation set(s) {empty} contain no labelled token (every label is "
            f"{IGNORE_INDEX}): check their labels."
        )
    if reference_perplexities is not None:
        missing = [name for name in languages if name not in reference_perplexities]
        if missing:
            raise ValueError(
                f"reference perplexities are missing language(s) {missing}: give a reference "
                "perplexity for every evaluation set, or none at all."
            )

    metrics: dict[str, float | str] = {}
    perplexities: dict[str, float] = {}
    relatives: dict[str, float] = {}
    for name in languages:
        mean_loss = token_weighted_mean(loss_sums[name], token_counts[name])
        perplexities[name] = perplexity(mean_loss)
        metrics[f"{prefix}_{name}_loss"] = mean_loss
        metrics[f"{prefix}_{name}_perplexity"] = perplexities[name]
        if reference_perplexities is not None:
            relatives[name] = relative_perplexity(
                perplexities[name], float(reference_perplexities[name])
            )
            metrics[f"{prefix}_{name}_relative_perplexity"] = relatives[name]

    metrics[f"{prefix}_loss"] = token_weighted_mean(
        sum(float(loss_sums[name]) for name in languages),
        sum(int(token_counts[name]) for name in languages),
    )
    worst = max(languages, key=lambda name: perplexities[name])
    metrics[f"{prefix}_avg_perplexity"] = sum(perplexities.values()) / len(languages)
    metrics[f"{prefix}_worst_perplexity"] = perplexities[worst]
    metrics[f"{prefix}_worst_language"] = worst
    if reference_perplexities is not None:
        worst_relative = max(languages, key=lambda name: relatives[name])
        metrics[f"{prefix}_avg_relative_perplexity"] = sum(relatives.values()) / len(languages)
        metrics[f"{prefix}_worst_relative_perplexity"] = relatives[worst_relative]
        metrics[f"{prefix}_worst_relative_language"] = worst_relative
    return metrics


def languages_in_metrics(metrics: Mapping[str, object], prefix: str = "eval") -> list[str]:
    """Return the languages that have a `{prefix}_<language>_loss` key, in key order."""
    head, tail = f"{prefix}_", "_loss"
    return [
        key[len(head) : -len(tail)]
        for key in metrics
        if key.startswith(head) and key.endswith(tail) and key != f"{prefix}{tail}"
    ]


def _format_number(value: object) -> str:
    if isinstance(value, str):
        return value
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.3f}"


def perplexity_table(metrics: Mapping[str, object], prefix: str = "eval") -> str:
    """Format the output of `language_metrics` as a markdown table.

    One row per language (loss, perplexity and, where present, relative perplexity), then the
    average and worst rows; the worst row names its language.
    """
    languages = languages_in_metrics(metrics, prefix)
    if not languages:
        raise ValueError(
            f"No per-language metrics with prefix {prefix!r} (keys like '{prefix}_<lang>_loss') "
            f"in {sorted(metrics)}: pass the metrics returned by LDROTrainer.evaluate."
        )
    has_relative = f"{prefix}_avg_relative_perplexity" in metrics
    header = ["language", "loss", "perplexity"] + (["relative perplexity"] if has_relative else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in languages:
        row = [
            name,
            _format_number(metrics[f"{prefix}_{name}_loss"]),
            _format_number(metrics[f"{prefix}_{name}_perplexity"]),
        ]
        if has_relative:
            row.append(_format_number(metrics[f"{prefix}_{name}_relative_perplexity"]))
        lines.append("| " + " | ".join(row) + " |")

    average = ["average", "", _format_number(metrics[f"{prefix}_avg_perplexity"])]
    worst = [
        f"worst ({metrics[f'{prefix}_worst_language']})",
        "",
        _format_number(metrics[f"{prefix}_worst_perplexity"]),
    ]
    if has_relative:
        average.append(_format_number(metrics[f"{prefix}_avg_relative_perplexity"]))
        worst.append(
            f"{_format_number(metrics[f'{prefix}_worst_relative_perplexity'])} "
            f"({metrics[f'{prefix}_worst_relative_language']})"
        )
    lines.append("| " + " | ".join(average) + " |")
    lines.append("| " + " | ".join(worst) + " |")
    return "\n".join(lines)
