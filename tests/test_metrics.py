"""Per-task loss aggregation, perplexity, relative perplexity and the summary table."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hf_ldro.metrics import (
    language_metrics,
    languages_in_metrics,
    per_example_loss_sums,
    per_task_sums,
    perplexity,
    perplexity_table,
    relative_perplexity,
    token_weighted_mean,
)


def test_causal_loss_sums_shift_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[1, 2, 3, 4], [0, -100, 2, -100]])
    sums, counts = per_example_loss_sums(logits, labels, shift_labels=True)
    expected_first = sum(
        float(F.cross_entropy(logits[0, t : t + 1], labels[0, t + 1 : t + 2])) for t in range(3)
    )
    expected_second = float(F.cross_entropy(logits[1, 1:2], labels[1, 2:3]))

    assert counts.tolist() == [3, 1]
    assert float(sums[0]) == pytest.approx(expected_first, rel=1e-6)
    assert float(sums[1]) == pytest.approx(expected_second, rel=1e-6)


def test_masked_loss_sums_do_not_shift():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 5)
    labels = torch.tensor([[-100, 4, -100]])
    sums, counts = per_example_loss_sums(logits, labels, shift_labels=False)

    assert counts.tolist() == [1]
    assert float(sums[0]) == pytest.approx(float(F.cross_entropy(logits[0, 1:2], labels[0, 1:2])))


def test_loss_sums_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        per_example_loss_sums(torch.zeros(2, 4, 5), torch.zeros(2, 3, dtype=torch.long), True)


def test_per_task_sums_add_by_task():
    sums, counts = per_task_sums(
        torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1, 2, 3]), torch.tensor([2, 0, 2]), 3
    )

    assert sums.tolist() == [2.0, 0.0, 5.0]
    assert counts.tolist() == [2, 0, 4]


def test_token_weighted_mean_differs_from_mean_of_means():
    # Batch 1: 1 token with loss 1; batch 2: 3 tokens with total loss 9.
    assert token_weighted_mean(1.0 + 9.0, 1 + 3) == 2.5
    assert (1.0 / 1 + 9.0 / 3) / 2 == 2.0


def test_token_weighted_mean_without_tokens_is_nan():
    assert math.isnan(token_weighted_mean(0.0, 0))


def test_perplexity_and_overflow():
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert perplexity(1e6) == float("inf")


def test_relative_perplexity_by_hand():
    assert relative_perplexity(15.0, 10.0) == pytest.approx(0.5)
    assert relative_perplexity(8.0, 10.0) == pytest.approx(-0.2)


def test_relative_perplexity_rejects_bad_reference():
    with pytest.raises(ValueError, match="reference perplexity"):
        relative_perplexity(3.0, 0.0)


def test_language_metrics_by_hand():
    loss_sums = {"en": 2 * math.log(4.0), "yo": 3 * math.log(10.0)}
    token_counts = {"en": 2, "yo": 3}
    metrics = language_metrics(loss_sums, token_counts, {"en": 2.0, "yo": 8.0})

    assert metrics["eval_en_loss"] == pytest.approx(math.log(4.0))
    assert metrics["eval_en_perplexity"] == pytest.approx(4.0)
    assert metrics["eval_yo_perplexity"] == pytest.approx(10.0)
    assert metrics["eval_avg_perplexity"] == pytest.approx(7.0)
    assert metrics["eval_worst_perplexity"] == pytest.approx(10.0)
    assert metrics["eval_worst_language"] == "yo"
    assert metrics["eval_en_relative_perplexity"] == pytest.approx(1.0)
    assert metrics["eval_yo_relative_perplexity"] == pytest.approx(0.25)
    assert metrics["eval_avg_relative_perplexity"] == pytest.approx(0.625)
    assert metrics["eval_worst_relative_perplexity"] == pytest.approx(1.0)
    assert metrics["eval_worst_relative_language"] == "en"
    assert metrics["eval_loss"] == pytest.approx((2 * math.log(4.0) + 3 * math.log(10.0)) / 5)


def test_language_metrics_without_reference_have_no_relative_keys():
    metrics = language_metrics({"en": 1.0}, {"en": 1}, prefix="test")

    assert "test_en_perplexity" in metrics
    assert not any("relative" in key for key in metrics)


def test_missing_reference_language_is_named():
    with pytest.raises(ValueError, match=r"\['yo'\]"):
        language_metrics({"en": 1.0, "yo": 1.0}, {"en": 1, "yo": 1}, {"en": 2.0})


def test_empty_language_is_rejected():
    with pytest.raises(ValueError, match="no labelled token"):
        language_metrics({"en": 0.0}, {"en": 0})


def test_summary_name_clash_is_rejected():
    with pytest.raises(ValueError, match="clash"):
        language_metrics({"worst": 1.0}, {"worst": 1})


def test_perplexity_table_lists_languages_and_worst():
    metrics = language_metrics(
        {"eng_Latn": 2 * math.log(4.0), "yor_Latn": 3 * math.log(10.0)},
        {"eng_Latn": 2, "yor_Latn": 3},
        {"eng_Latn": 2.0, "yor_Latn": 8.0},
    )
    table = perplexity_table(metrics)
    lines = table.splitlines()

    assert languages_in_metrics(metrics) == ["eng_Latn", "yor_Latn"]
    assert lines[0] == "| language | loss | perplexity | relative perplexity |"
    assert lines[2].startswith("| eng_Latn | 1.386 | 4.000 | 1.000 |")
    assert lines[-1] == "| worst (yor_Latn) |  | 10.000 | 1.000 (eng_Latn) |"


def test_perplexity_table_needs_language_metrics():
    with pytest.raises(ValueError, match="No per-language metrics"):
        perplexity_table({"eval_loss": 1.0})
