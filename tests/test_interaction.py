"""Tests of hf_ldro.interaction: exact interaction matrices and the random gradient sketch."""

import math

import pytest
import torch

from hf_ldro.interaction import (
    SKETCH_DISTRIBUTIONS,
    GradientSketch,
    gram_matrix,
    interaction_matrix,
)


def structured_gradients(num_tasks: int = 6, dim: int = 6000, seed: int = 0) -> torch.Tensor:
    """Gradients with known structure: shared and private directions, norms from 0.1 to 10."""
    generator = torch.Generator().manual_seed(seed)
    shared = torch.randn(2, dim, generator=generator, dtype=torch.float64)
    private = torch.randn(num_tasks, dim, generator=generator, dtype=torch.float64)
    mixing = torch.randn(num_tasks, 2, generator=generator, dtype=torch.float64)
    norms = torch.logspace(-1, 1, num_tasks, dtype=torch.float64)
    gradients = mixing @ shared + 0.5 * private
    return gradients / gradients.norm(dim=1, keepdim=True) * norms.unsqueeze(1)


def test_matches_definition():
    gradients = structured_gradients()
    expected = torch.empty(6, 6, dtype=torch.float64)
    for i in range(6):
        for j in range(6):
            expected[i, j] = gradients[i] @ gradients[j] / gradients[j].norm()
    torch.testing.assert_close(interaction_matrix(gradients), expected)


def test_zero_gradient_gives_zero_column():
    gradients = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
    interaction = interaction_matrix(gradients)
    assert bool(torch.isfinite(interaction).all())
    assert interaction[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert interaction[1].tolist() == [0.0, 0.0, 0.0]


def test_all_zero_gradients_give_zero_matrix():
    assert interaction_matrix(torch.zeros(3, 5)).abs().sum().item() == 0.0


@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_storage_computed_in_float64(storage):
    stored = structured_gradients(dim=3000).to(storage)
    interaction = interaction_matrix(stored)
    assert interaction.dtype == torch.float32
    expected = interaction_matrix(stored.double()).float()
    torch.testing.assert_close(interaction, expected, rtol=0, atol=0)


def test_float64_gradients_give_float64_matrix():
    assert interaction_matrix(structured_gradients()).dtype == torch.float64


def test_float32_compute_dtype():
    gradients = structured_gradients()
    interaction = interaction_matrix(gradients.float(), dtype=torch.float32)
    assert interaction.dtype == torch.float32
    torch.testing.assert_close(
        interaction.double(), interaction_matrix(gradients), rtol=1e-5, atol=1e-5
    )


def test_gram_spans_several_chunks():
    # 2^20 + 3 columns: the chunked product must add every chunk.
    gradients = torch.ones(2, (1 << 20) + 3, dtype=torch.float32)
    assert gram_matrix(gradients)[0, 1].item() == float((1 << 20) + 3)


def test_rejects_non_matrix_input():
    with pytest.raises(ValueError, match=r"\[num_tasks, dim\] tensor, got shape \(5,\)"):
        interaction_matrix(torch.ones(5))


def test_rejects_integer_compute_dtype():
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        interaction_matrix(torch.ones(2, 3), dtype=torch.int64)


# ---- sketch ----------------------------------------------------------------------------------


@pytest.mark.parametrize("distribution", SKETCH_DISTRIBUTIONS)
def test_sketched_interaction_close_to_exact(distribution):
    # Johnson-Lindenstrauss: with r >= 8 ln(m / delta) / eps^2, the m = N^2 pairwise inner
    # products of unit vectors are preserved within eps with probability >= 1 - delta. The error
    # of A_ij = g_i . (g_j / ||g_j||) then scales with ||g_i||, so it is compared row by row.
    gradients = structured_gradients()
    dim_out = 2048
    sketch = GradientSketch(
        gradients.shape[1], dim_out, seed=1, dtype=torch.float64, distribution=distribution
    )
    exact = interaction_matrix(gradients)
    sketched = interaction_matrix(sketch.project(gradients))
    epsilon = math.sqrt(8 * math.log(36 / 0.01) / dim_out)
    row_norms = gradients.norm(dim=1, keepdim=True)
    assert float(((sketched - exact).abs() / row_norms).max()) <= epsilon


@pytest.mark.parametrize("distribution", SKETCH_DISTRIBUTIONS)
def test_sketch_error_shrinks_with_dimension(distribution):
    gradients = structured_gradients()
    exact = interaction_matrix(gradients)
    errors = []
    for dim_out in (64, 4096):
        total = 0.0
        for seed in range(3):
            sketch = GradientSketch(6000, dim_out, seed, distribution=distribution)
            sketched = interaction_matrix(sketch.project(gradients.float()))
            total += float((sketched - exact).abs().mean())
        errors.append(total)
    # The error scales as 1 / sqrt(r): 64 times more dimensions should cut it about 8 times.
    assert errors[1] < errors[0] / 3


@pytest.mark.parametrize("distribution", SKETCH_DISTRIBUTIONS)
def test_same_seed_same_projection(distribution):
    vector = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    first = GradientSketch(10_000, 32, seed=7, distribution=distribution).project(vector)
    second = GradientSketch(10_000, 32, seed=7, distribution=distribution).project(vector)
    other = GradientSketch(10_000, 32, seed=8, distribution=distribution).project(vector)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("distribution", SKETCH_DISTRIBUTIONS)
def test_cached_and_regenerated_projections_agree(distribution):
    vector = torch.randn(9_000, generator=torch.Generator().manual_seed(1))
    cached = GradientSketch(9_000, 16, seed=3, distribution=distribution)
    uncached = GradientSketch(9_000, 16, seed=3, distribution=distribution, cache_bytes=0)
    expected = cached.project(vector)
    assert torch.equal(cached.project(vector), expected)  # from the cache
    assert torch.equal(uncached.project(vector), expected)
    assert uncached._cache is None


def test_sketch_is_linear():
    sketch = GradientSketch(5_000, 64, seed=0, dtype=torch.float64, distribution="gaussian")
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 5_000, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(sketch.project(2 * x - y), 2 * sketch.project(x) - sketch.project(y))


def test_stack_projects_row_by_row():
    sketch = GradientSketch(3_000, 16, seed=0)
    stack = torch.randn(4, 3_000, generator=torch.Generator().manual_seed(3))
    projected = sketch.project(stack)
    assert projected.shape == (4, 16)
    torch.testing.assert_close(projected[2], sketch.project(stack[2]))


def test_projection_dtype_and_low_precision_input():
    sketch = GradientSketch(2_000, 8, seed=0, dtype=torch.bfloat16)
    projected = sketch.project(torch.ones(2_000, dtype=torch.float16))
    assert projected.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim_in=0, dim_out=4), "dim_in must be an integer >= 1, got 0"),
        (dict(dim_in=10, dim_out=0), "dim_out must be an integer >= 1, got 0"),
        (dict(dim_in=10, dim_out=4, distribution="srht"), "Unknown sketch distribution 'srht'"),
        (dict(dim_in=10, dim_out=4, dtype=torch.int32), "floating dtype"),
    ],
)
def test_sketch_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradientSketch(**kwargs)


def test_sketch_rejects_wrong_length():
    with pytest.raises(ValueError, match=r"length 100 .* got shape \(99,\)"):
        GradientSketch(100, 4).project(torch.ones(99))
