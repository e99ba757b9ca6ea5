"""Sketched interaction matrices collected by LDROTrainer, against the exact ones.

Both trainers start from the same tiny GPT-2 and refresh on the same batch of real UD text, so the
only difference is the random projection that `LDROArguments.sketch_dim` applies to every task
gradient before the all-reduce.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import default_data_collator

from hf_ldro.arguments import LDROArguments
from hf_ldro.trainer import LDROTrainer
from test_trainer_data import LANGUAGES, language_dataset, tiny_gpt2, training_arguments

SKETCH_DIM = 8192
FAILURE_PROBABILITY = 0.01


@pytest.fixture(scope="module")
def train_dataset():
    return language_dataset(LANGUAGES, "train", blocks_per_language=4, masked_prefix=True)


def refreshed_interaction(tmp_path, train_dataset, **ldro_overrides) -> tuple[torch.Tensor, LDROTrainer]:
    """Return the interaction matrix of one refresh on the first 8 rows, and the trainer."""
    ldro_args = LDROArguments(method="ldro", ldro_update_interval=1, **ldro_overrides)
    trainer = LDROTrainer(
        tiny_gpt2(seed=0),
        training_arguments(tmp_path),
        data_collator=default_data_collator,
        train_dataset=train_dataset,
        ldro_args=ldro_args,
        task_names=LANGUAGES,
    )
    batch = default_data_collator([train_dataset[index] for index in range(8)])
    trainer.refresh_interaction(trainer.model, batch)
    return trainer.weighting.interaction.clone(), trainer


def johnson_lindenstrauss_epsilon(num_tasks: int, sketch_dim: int) -> float:
    """Return eps such that all N^2 inner products of unit vectors keep within eps w.p. >= 1 - delta.

    Johnson-Lindenstrauss with r >= 8 ln(m / delta) / eps^2 for m = N^2 pairs.
    """
    return math.sqrt(8 * math.log(num_tasks**2 / FAILURE_PROBABILITY) / sketch_dim)


def test_sketch_buffer_has_sketch_width(tmp_path, train_dataset):
    _, trainer = refreshed_interaction(tmp_path, train_dataset, sketch_dim=SKETCH_DIM)

    # The all-reduce runs on this buffer, so DDP traffic is N x r, not N x d.
    assert tuple(trainer._gradient_buffer.shape) == (len(LANGUAGES), SKETCH_DIM)


def test_sketched_matrix_within_jl_bound(tmp_path, train_dataset):
    exact, _ = refreshed_interaction(tmp_path / "exact", train_dataset)
    sketched, _ = refreshed_interaction(tmp_path / "sketch", train_dataset, sketch_dim=SKETCH_DIM, sketch_seed=0)
    # A_ij = g_i . (g_j / ||g_j||), so its error scales with ||g_i|| = A_ii.
    row_norms = torch.diagonal(exact).unsqueeze(1)
    relative_error = float(((sketched - exact).abs() / row_norms).max())

    assert float(row_norms.min()) > 0
    assert relative_error <= johnson_lindenstrauss_epsilon(len(LANGUAGES), SKETCH_DIM)


def test_sketched_matrix_differs_from_exact(tmp_path, train_dataset):
    # Guards the bound above against a sketch that is silently not applied.
    exact, _ = refreshed_interaction(tmp_path / "exact", train_dataset)
    sketched, _ = refreshed_interaction(tmp_path / "sketch", train_dataset, sketch_dim=SKETCH_DIM)

    assert not torch.allclose(sketched, exact, rtol=1e-6, atol=0)


def test_sketch_of_parameter_subset_in_bfloat16(tmp_path, train_dataset):
    subset = r"^transformer\.h\.1\."
    exact, _ = refreshed_interaction(tmp_path / "exact", train_dataset, interaction_parameters=subset)
    sketched, trainer = refreshed_interaction(
        tmp_path / "sketch",
        train_dataset,
        interaction_parameters=subset,
        sketch_dim=SKETCH_DIM,
        gradient_buffer_dtype="bfloat16",
    )
    row_norms = torch.diagonal(exact).unsqueeze(1)
    relative_error = float(((sketched - exact).abs() / row_norms).max())
    # bfloat16 keeps 8 significant bits: its rounding adds about 2^-8 relative error per entry.
    tolerance = johnson_lindenstrauss_epsilon(len(LANGUAGES), SKETCH_DIM) + 2**-8

    assert trainer._gradient_buffer.dtype == torch.bfloat16
    assert all(name.startswith("transformer.h.1.") for name, _ in trainer._interaction_parameters)
    assert relative_error <= tolerance
