"""PCGrad's gradient projection on hand-made conflicting gradients."""

import pytest
import torch

from hf_ldro.pcgrad import project_conflicting, project_conflicting_gradients


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_two_conflicting_gradients_closed_form():
    g1 = torch.tensor([1.0, 0.0])
    g2 = torch.tensor([-1.0, 1.0])
    projected = project_conflicting_gradients(torch.stack([g1, g2]), _generator())
    # g1 - (g1.g2 / |g2|^2) g2 = (1, 0) + 0.5 (-1, 1); g2 - (g2.g1 / |g1|^2) g1 = (0, 1).
    torch.testing.assert_close(projected[0], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(projected[1], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(project_conflicting(torch.stack([g1, g2]), _generator()), torch.tensor([0.5, 1.5]))


def test_projection_removes_conflict_with_each_original():
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    projected = project_conflicting_gradients(grads, _generator())
    assert float(projected[0] @ grads[1]) >= -1e-6
    assert float(projected[1] @ grads[0]) >= -1e-6


def test_non_conflicting_gradients_unchanged():
    grads = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0], [2.0, 1.0, 1.0]])
    torch.testing.assert_close(project_conflicting_gradients(grads, _generator()), grads)
    torch.testing.assert_close(project_conflicting(grads, _generator()), grads.sum(0))


def test_orthogonal_conflicts_fully_removed():
    # Task 0 conflicts with tasks 1 and 2, whose gradients are orthogonal to each other: after
    # both projections (in either order) task 0's gradient is orthogonal to both.
    grads = torch.tensor([[-1.0, -1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for seed in range(4):
        projected = project_conflicting_gradients(grads, _generator(seed))
        torch.testing.assert_close(projected[0], torch.tensor([0.0, 0.0, 1.0]))


def test_order_matters_for_non_orthogonal_conflicts():
    # Projecting g0 = (1, 0, 0) against g1 = (-1, 1, 0) then g2 = (-1, 0, 1) gives
    # (0.25, 0.5, 0.25); the other order gives (0.25, 0.25, 0.5).
    grads = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])
    results = {
        tuple(round(x, 6) for x in project_conflicting_gradients(grads, _generator(seed))[0].tolist())
        for seed in range(20)
    }
    assert results == {(0.25, 0.5, 0.25), (0.25, 0.25, 0.5)}


def test_zero_gradient_never_projected_onto():
    grads = torch.tensor([[1.0, -1.0], [0.0, 0.0]])
    torch.testing.assert_close(project_conflicting_gradients(grads, _generator()), grads)


def test_weights_scale_projected_gradients():
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    weighted = project_conflicting(grads, _generator(), weights=torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(weighted, torch.tensor([0.25, 0.75]))


def test_wrong_weight_count_rejected():
    with pytest.raises(ValueError, match="3 weights for 2"):
        project_conflicting(torch.eye(2), _generator(), weights=torch.ones(3))


def _naive_pcgrad(grads, generator):
    """Yu et al.'s loop, written directly on the gradient vectors."""
    projected = grads.clone().double()
    original = grads.double()
    for i in range(len(grads)):
        for j in torch.randperm(len(grads), generator=generator).tolist():
            if j == i or float(original[j] @ original[j]) == 0:
                continue
            dot = projected[i] @ original[j]
            if dot < 0:
                projected[i] -= dot / (original[j] @ original[j]) * original[j]
    return projected


def test_matches_direct_loop_on_random_gradients():
    grads = torch.randn(7, 50, generator=_generator(3), dtype=torch.float64)
    expected = _naive_pcgrad(grads, _generator(11))
    projected = project_conflicting_gradients(grads, _generator(11))
    torch.testing.assert_close(projected, expected)
    torch.testing.assert_close(project_conflicting(grads, _generator(11)), expected.sum(0))
