"""Tests of the task-weighting strategies: update rules, the L-DRO sanity cases, state, errors."""

import json
import math

import numpy as np
import pytest
import torch

from hf_ldro.interaction import interaction_matrix
from hf_ldro.weighting import (
    METHODS,
    BaselinedDRO,
    ExactLookaheadDRO,
    LookaheadDRO,
    NonFiniteLossError,
    OnlineDRO,
    StaticMixing,
    build_weighting,
)

TASKS = ["en", "fr", "de", "yo"]


def orthonormal_gradients(num_tasks: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, num_tasks, generator=generator, dtype=torch.float64))
    return q.T.contiguous()


def converged_worst_task_setup(seed: int = 0):
    """Task 0 has the highest loss and a zero gradient; the others interact mildly."""
    generator = torch.Generator().manual_seed(seed)
    gradients = torch.randn(len(TASKS), 8, generator=generator, dtype=torch.float64)
    gradients[0] = 0.0
    losses = torch.tensor([3.0, 1.0, 1.5, 2.0], dtype=torch.float64)
    return interaction_matrix(gradients), losses


# ---- sanity cases of Michel, Ruder & Yogatama, "Balancing Average and Worst-Case Accuracy ..." --


def test_independent_tasks_exact_picks_worst_task():
    exact = ExactLookaheadDRO(TASKS, lookahead_lr=0.1, update_interval=1)
    exact.set_interaction(interaction_matrix(orthonormal_gradients(4)))
    weights = exact.update([1.0, 2.5, 1.5, 2.0])
    np.testing.assert_allclose(weights.numpy(), [0.0, 1.0, 0.0, 0.0], atol=1e-8)


def test_independent_tasks_online_converges_to_worst_task():
    online = LookaheadDRO(TASKS, eta=1.0, lookahead_lr=0.1, update_interval=1000)
    online.set_interaction(interaction_matrix(orthonormal_gradients(4)))
    for _ in range(300):
        weights = online.update([1.0, 2.5, 1.5, 2.0])
    assert online.last_best_response == 1
    assert float(weights[1]) > 0.99


def test_redundant_tasks_exact_gives_uniform():
    gradients = torch.tensor([[1.0, 2.0, -1.0]]).repeat(len(TASKS), 1)  # all aligned
    exact = ExactLookaheadDRO(TASKS, lookahead_lr=0.1)
    exact.set_interaction(interaction_matrix(gradients))
    weights = exact.update([1.0, 2.5, 1.5, 2.0])
    np.testing.assert_allclose(weights.numpy(), np.full(4, 0.25), atol=1e-9)


def test_redundant_tasks_online_stays_uniform():
    gradients = torch.tensor([[1.0, 2.0, -1.0]]).repeat(len(TASKS), 1)
    online = LookaheadDRO(TASKS, eta=1.0, lookahead_lr=0.1)
    online.set_interaction(interaction_matrix(gradients))
    rng = np.random.default_rng(0)
    for _ in range(200):
        weights = online.update(rng.uniform(0.5, 3.0, size=4))
    np.testing.assert_allclose(weights.numpy(), np.full(4, 0.25), atol=1e-12)


def test_converged_worst_task_exact_gives_uniform():
    interaction, losses = converged_worst_task_setup()
    exact = ExactLookaheadDRO(TASKS, lookahead_lr=0.1)
    exact.set_interaction(interaction)
    weights = exact.update(losses)
    np.testing.assert_allclose(weights.numpy(), np.full(4, 0.25), atol=1e-9)


def test_converged_worst_task_online_stays_uniform():
    interaction, losses = converged_worst_task_setup()
    online = LookaheadDRO(TASKS, eta=1.0, lookahead_lr=0.1)
    online.set_interaction(interaction)
    for _ in range(200):
        weights = online.update(losses)
    assert online.last_best_response == 0
    np.testing.assert_allclose(weights.numpy(), np.full(4, 0.25), atol=1e-12)


def test_converged_worst_task_dro_abandons_others():
    # The failure L-DRO fixes: DRO keeps up-weighting the task it cannot improve.
    _, losses = converged_worst_task_setup()
    dro = OnlineDRO(TASKS, eta=1.0)
    for _ in range(50):
        weights = dro.update(losses)
    assert float(weights[0]) > 0.99


# ---- online L-DRO update rule ----------------------------------------------------------------


def test_online_step_matches_formula():
    rng = np.random.default_rng(1)
    losses = rng.uniform(1.0, 3.0, size=4)
    interaction = rng.normal(size=(4, 4))
    eta, lookahead_lr = 0.3, 0.2
    online = LookaheadDRO(TASKS, eta=eta, lookahead_lr=lookahead_lr)
    online.set_interaction(interaction)
    first = online.update(losses).numpy()
    second = online.update(losses).numpy()

    lookahead = losses[:, None] - lookahead_lr * interaction

    def step(weights):
        worst = int(np.argmax(lookahead @ weights))
        updated = weights * np.exp(-eta * lookahead[worst])
        return updated / updated.sum()

    expected_first = step(np.full(4, 0.25))
    np.testing.assert_allclose(first, expected_first, rtol=1e-12)
    np.testing.assert_allclose(second, step(expected_first), rtol=1e-12)


def test_zero_interaction_keeps_uniform_weights():
    online = LookaheadDRO(TASKS, eta=1.0, lookahead_lr=0.5)
    for losses in ([1.0, 2.0, 3.0, 4.0], [4.0, 1.0, 1.0, 1.0]):
        weights = online.update(losses)
    np.testing.assert_allclose(weights.numpy(), np.full(4, 0.25), atol=1e-12)


def test_large_eta_does_not_overflow():
    online = LookaheadDRO(TASKS, eta=1e6, lookahead_lr=1.0)
    online.set_interaction(np.eye(4))
    for _ in range(10):
        weights = online.update([1.0, 5.0, 1.0, 1.0])
    assert bool(torch.isfinite(weights).all())
    assert float(weights.sum()) == pytest.approx(1.0)


def test_interaction_due_every_k_updates():
    online = LookaheadDRO(TASKS, update_interval=3)
    due = []
    for _ in range(7):
        due.append(online.interaction_due)
        online.update([1.0, 1.0, 1.0, 1.0])
    assert due == [True, False, False, True, False, False, True]


def test_absent_task_keeps_its_last_loss():
    online = LookaheadDRO(TASKS, eta=0.1)
    online.update([1.0, 2.0, 3.0, 4.0])
    online.update([5.0, 0.0, 0.0, 0.0], present=[True, False, False, False])
    assert online.loss_estimates.tolist() == [5.0, 2.0, 3.0, 4.0]


def test_interaction_accepts_float32_tensor():
    exact = ExactLookaheadDRO(TASKS)
    exact.set_interaction(torch.eye(4, dtype=torch.float32))
    assert exact.interaction.dtype == torch.float64
    assert exact.interaction_refreshes == 1


# ---- state -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        lambda: LookaheadDRO(TASKS, eta=0.5, lookahead_lr=0.3, update_interval=2),
        lambda: ExactLookaheadDRO(TASKS, lookahead_lr=0.3, update_interval=2),
    ],
)
def test_state_dict_round_trip(factory):
    rng = np.random.default_rng(2)
    original = factory()
    original.set_interaction(rng.normal(size=(4, 4)))
    for _ in range(3):
        original.update(rng.uniform(1.0, 3.0, size=4))

    state = json.loads(json.dumps(original.state_dict()))  # checkpoints store it as JSON
    restored = factory()
    restored.load_state_dict(state)

    assert torch.equal(restored.weights, original.weights)
    assert torch.equal(restored.interaction, original.interaction)
    assert restored.num_updates == original.num_updates
    losses = rng.uniform(1.0, 3.0, size=4)
    torch.testing.assert_close(restored.update(losses), original.update(losses), rtol=0, atol=1e-12)


def test_load_state_rejects_other_tasks():
    state = LookaheadDRO(TASKS).state_dict()
    with pytest.raises(ValueError, match="same task list"):
        LookaheadDRO(["en", "fr", "de", "sw"]).load_state_dict(state)


def test_load_state_rejects_other_method():
    state = LookaheadDRO(TASKS).state_dict()
    with pytest.raises(ValueError, match="same method"):
        ExactLookaheadDRO(TASKS).load_state_dict(state)


def test_load_state_rejects_bad_interaction_shape():
    state = LookaheadDRO(TASKS).state_dict()
    state["interaction"] = [[0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="shape"):
        LookaheadDRO(TASKS).load_state_dict(state)


# ---- input errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eta=-0.1), "eta must be a finite number >= 0, got -0.1"),
        (dict(eta=float("nan")), "eta must be a finite number >= 0, got nan"),
        (dict(lookahead_lr=-1.0), r"\(lambda\) must be a finite number >= 0, got -1.0"),
        (dict(update_interval=0), "integer >= 1, got 0"),
        (dict(update_interval=2.5), "integer >= 1, got 2.5"),
        (dict(update_interval=True), "integer >= 1, got True"),
    ],
)
def test_invalid_ldro_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LookaheadDRO(TASKS, **kwargs)


@pytest.mark.parametrize("tol", [0.0, -1.0, float("inf")])
def test_invalid_exact_tolerance(tol):
    with pytest.raises(ValueError, match="tol must be a finite number > 0"):
        ExactLookaheadDRO(TASKS, tol=tol)


def test_interaction_wrong_shape_rejected():
    online = LookaheadDRO(TASKS)
    with pytest.raises(ValueError, match=r"shape \(3, 3\) but there are 4 tasks"):
        online.set_interaction(np.eye(3))


def test_interaction_nan_rejected_and_previous_kept():
    online = LookaheadDRO(TASKS)
    online.set_interaction(np.eye(4))
    bad = np.eye(4)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"non-finite entry nan at \(fr, de\)"):
        online.set_interaction(bad)
    assert torch.equal(online.interaction, torch.eye(4, dtype=torch.float64))
    assert online.interaction_refreshes == 1


def test_losses_wrong_length_rejected():
    with pytest.raises(ValueError, match="losses has 3 entries but there are 4 tasks"):
        LookaheadDRO(TASKS).update([1.0, 2.0, 3.0])


@pytest.mark.parametrize("strategy_class", [LookaheadDRO, ExactLookaheadDRO])
def test_nan_loss_leaves_state_unchanged(strategy_class):
    strategy = strategy_class(TASKS)
    strategy.set_interaction(np.eye(4))
    strategy.update([1.0, 2.0, 3.0, 4.0])
    before = strategy.state_dict()
    with pytest.raises(NonFiniteLossError, match="yo=nan"):
        strategy.update([1.0, 2.0, 3.0, math.nan])
    assert strategy.state_dict() == before


# ---- static mixing and DRO -------------------------------------------------------------------


def test_static_mixing_temperature():
    mixing = StaticMixing(["a", "b"], dataset_sizes=[900, 100], alpha=0.5)
    np.testing.assert_allclose(mixing.weights.numpy(), [30 / 40, 10 / 40])
    np.testing.assert_allclose(mixing.update([5.0, 1.0]).numpy(), [30 / 40, 10 / 40])


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_static_mixing_rejects_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be in"):
        StaticMixing(["a", "b"], dataset_sizes=[1, 2], alpha=alpha)


def test_static_mixing_rejects_wrong_sizes_length():
    with pytest.raises(ValueError, match="dataset_sizes has 3 entries but there are 2 tasks"):
        StaticMixing(["a", "b"], dataset_sizes=[1, 2, 3])


def test_online_dro_step_matches_formula():
    dro = OnlineDRO(["a", "b"], eta=0.5)
    weights = dro.update([1.0, 3.0]).numpy()
    expected = np.exp(0.5 * np.array([1.0, 3.0]))
    np.testing.assert_allclose(weights, expected / expected.sum())


def test_baselined_dro_uses_excess_loss():
    dro = BaselinedDRO(["a", "b"], reference_losses={"a": 0.0, "b": 2.5}, eta=1.0)
    weights = dro.update([1.0, 3.0]).numpy()
    expected = np.exp(np.array([1.0, 0.5]))
    np.testing.assert_allclose(weights, expected / expected.sum())


def test_baselined_dro_rejects_wrong_reference_length():
    with pytest.raises(ValueError, match="reference_losses has 1 entries but there are 2 tasks"):
        BaselinedDRO(["a", "b"], reference_losses=[1.0])


# ---- build_weighting -------------------------------------------------------------------------


def test_build_weighting_covers_every_method():
    built = {
        method: build_weighting(
            method, TASKS, dataset_sizes=[4, 3, 2, 1], reference_losses=[1.0, 1.0, 1.0, 1.0]
        )
        for method in METHODS
    }
    assert isinstance(built["static"], StaticMixing)
    assert isinstance(built["dro"], OnlineDRO)
    assert isinstance(built["baselined_dro"], BaselinedDRO)
    assert isinstance(built["ldro"], LookaheadDRO)
    assert isinstance(built["ldro_exact"], ExactLookaheadDRO)


def test_build_weighting_passes_ldro_hyperparameters():
    online = build_weighting(
        "ldro", TASKS, ldro_eta=0.2, ldro_lookahead_lr=0.3, ldro_update_interval=7
    )
    assert (online.eta, online.lookahead_lr, online.interaction_interval) == (0.2, 0.3, 7)
    assert online.requires_interaction


def test_build_weighting_unknown_method_lists_choices():
    with pytest.raises(ValueError, match="static, dro, baselined_dro, ldro, ldro_exact"):
        build_weighting("doremi", TASKS)


def test_build_weighting_baselined_needs_references():
    with pytest.raises(ValueError, match="reference losses"):
        build_weighting("baselined_dro", TASKS)
