"""Tests of hf_ldro.games: LP value, duality, best response and the maximum-entropy equilibrium."""


import numpy as np
import pytest
from scipy.optimize import linprog

from hf_ldro.games import best_response, game_value, max_entropy_equilibrium


def maximiser_value(payoff: np.ndarray) -> float:
    """Solve the row player's LP on its own: max s  s.t.  L^T v >= s 1, v on the simplex."""
    rows, cols = payoff.shape
    cost = np.zeros(rows + 1)
    cost[-1] = -1.0
    inequality = np.hstack([-payoff.T, np.ones((cols, 1))])
    equality = np.hstack([np.ones((1, rows)), np.zeros((1, 1))])
    result = linprog(
        cost,
        A_ub=inequality,
        b_ub=np.zeros(cols),
        A_eq=equality,
        b_eq=[1.0],
        bounds=[(0.0, None)] * rows + [(None, None)],
        method="highs",
    )
    assert result.status == 0, result.message
    return float(result.x[-1])


def entropy(w: np.ndarray) -> float:
    positive = w[w > 0]
    return float(-(positive * np.log(positive)).sum())


def random_games(count: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        rows, cols = rng.integers(1, 13, size=2)
        yield rng.normal(size=(rows, cols)) * rng.choice([0.01, 1.0, 100.0])


def lookahead_game(rng, num_tasks: int, grad_dim: int, lookahead_lr: float) -> np.ndarray:
    gradients = rng.normal(size=(num_tasks, grad_dim))
    interaction = gradients @ gradients.T / np.linalg.norm(gradients, axis=1)[None, :]
    losses = rng.uniform(2.0, 3.0, size=num_tasks)
    return losses[:, None] - lookahead_lr * interaction


def test_duality_gap_on_random_games():
    for payoff in random_games(300, seed=0):
        value, w, v = game_value(payoff)
        scale = max(1.0, float(np.abs(payoff).max()))
        assert float(np.max(payoff @ w) - np.min(v @ payoff)) <= 1e-6 * scale
        assert abs(float(np.max(payoff @ w)) - value) <= 1e-6 * scale


def test_value_matches_maximiser_lp():
    for payoff in random_games(300, seed=1):
        value, _, _ = game_value(payoff)
        scale = max(1.0, float(np.abs(payoff).max()))
        assert value == pytest.approx(maximiser_value(payoff), abs=1e-7 * scale)


def test_strategies_are_distributions():
    for payoff in random_games(100, seed=2):
        _, w, v = game_value(payoff)
        assert w.shape == (payoff.shape[1],)
        assert v.shape == (payoff.shape[0],)
        assert w.min() >= 0
        assert v.min() >= 0
        assert w.sum() == pytest.approx(1.0)
        assert v.sum() == pytest.approx(1.0)


def test_two_by_two_closed_form():
    # Without a saddle point, a 2x2 game [[a, b], [c, d]] has value (ad - bc) / (a + d - b - c).
    rng = np.random.default_rng(3)
    checked = 0
    while checked < 100:
        a, b, c, d = rng.normal(size=4)
        payoff = np.array([[a, b], [c, d]])
        # Saddle point test: max over rows of the row minima equals min over columns of maxima.
        if np.max(payoff.min(axis=1)) == pytest.approx(np.min(payoff.max(axis=0))):
            continue
        value, w, _ = game_value(payoff)
        assert value == pytest.approx((a * d - b * c) / (a + d - b - c), abs=1e-9)
        assert w[0] == pytest.approx((d - b) / (a + d - b - c), abs=1e-7)
        checked += 1


def test_best_response_picks_worst_row():
    payoff = np.array([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    assert best_response(payoff, [1.0, 0.0]) == 0
    assert best_response(payoff, [0.0, 1.0]) == 1
    assert best_response(payoff, [0.5, 0.5]) == 1


def test_redundant_columns_give_uniform_weights():
    rng = np.random.default_rng(4)
    for cols in (2, 5, 40):
        column = rng.normal(size=(7, 1))
        payoff = np.repeat(column, cols, axis=1)
        np.testing.assert_allclose(
            max_entropy_equilibrium(payoff), np.full(cols, 1.0 / cols), atol=1e-9
        )


def test_dominant_column_is_played_pure():
    rng = np.random.default_rng(5)
    for _ in range(20):
        payoff = rng.normal(size=(6, 6))
        best = int(rng.integers(6))
        payoff[:, best] = payoff.min(axis=1) - 0.1  # strictly smaller in every row
        expected = np.zeros(6)
        expected[best] = 1.0
        np.testing.assert_allclose(max_entropy_equilibrium(payoff), expected, atol=1e-8)


def test_duplicate_optimal_columns_share_weight():
    # Columns 0 and 1 are the same optimal column; column 2 is strictly worse.
    payoff = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 2.0]])
    np.testing.assert_allclose(max_entropy_equilibrium(payoff), [0.5, 0.5, 0.0], atol=1e-8)


def test_binding_inequality_on_the_face():
    # Row 0 is constant (value 0); row 1 is 2 w0 - w1, so the optimal face is w0 <= 1/3 and the
    # most uniform point on it is (1/3, 2/3).
    payoff = np.array([[0.0, 0.0], [2.0, -1.0]])
    np.testing.assert_allclose(max_entropy_equilibrium(payoff), [1 / 3, 2 / 3], atol=1e-7)


def test_slack_inequality_gives_uniform():
    # Row 1 is w0 - w1 <= 0 on the face; uniform weights satisfy it.
    payoff = np.array([[0.0, 0.0], [1.0, -1.0]])
    np.testing.assert_allclose(max_entropy_equilibrium(payoff), [0.5, 0.5], atol=1e-8)


def test_max_entropy_strategy_is_optimal_and_no_less_spread():
    rng = np.random.default_rng(6)
    games = list(random_games(100, seed=7))
    games += [rng.normal(size=(9, 3)) @ rng.normal(size=(3, 9)) for _ in range(20)]  # low rank
    games += [lookahead_game(rng, 11, 2, 0.5) for _ in range(20)]  # rank 2, like the toy
    games += [rng.integers(-2, 3, size=(8, 8)).astype(float) for _ in range(20)]  # many ties
    for payoff in games:
        value, lp_w, _ = game_value(payoff)
        w = max_entropy_equilibrium(payoff)
        span = max(float(payoff.max() - payoff.min()), 1e-300)
        assert w.min() >= 0
        assert w.sum() == pytest.approx(1.0)
        assert float(np.max(payoff @ w)) <= value + 1e-8 * span
        assert entropy(w) >= entropy(lp_w) - 1e-7


def test_max_entropy_invariant_under_affine_payoff_change():
    rng = np.random.default_rng(8)
    for _ in range(20):
        payoff = rng.integers(-2, 3, size=(6, 6)).astype(float)
        reference = max_entropy_equilibrium(payoff)
        np.testing.assert_allclose(
            max_entropy_equilibrium(3.0 * payoff - 7.0), reference, atol=1e-6
        )


def test_max_entropy_follows_column_permutation():
    rng = np.random.default_rng(9)
    for _ in range(20):
        payoff = rng.integers(-2, 3, size=(6, 6)).astype(float)
        order = rng.permutation(6)
        reference = max_entropy_equilibrium(payoff)
        np.testing.assert_allclose(
            max_entropy_equilibrium(payoff[:, order]), reference[order], atol=1e-6
        )


@pytest.mark.parametrize("bad", [np.array([[1.0, np.nan]]), np.array([[np.inf]])])
def test_non_finite_payoff_rejected(bad):
    with pytest.raises(ValueError, match="non-finite entry"):
        game_value(bad)
    with pytest.raises(ValueError, match="non-finite entry"):
        max_entropy_equilibrium(bad)


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((0, 2)), np.zeros((2, 2, 2))])
def test_non_matrix_payoff_rejected(bad):
    with pytest.raises(ValueError, match="2-D"):
        game_value(bad)


def test_best_response_rejects_wrong_strategy_length():
    with pytest.raises(ValueError, match="3 columns"):
        best_response(np.zeros((2, 3)), [0.5, 0.5])


@pytest.mark.parametrize("tol", [0.0, -1e-3, float("nan")])
def test_invalid_tolerance_rejected(tol):
    with pytest.raises(ValueError, match="tol"):
        max_entropy_equilibrium(np.eye(2), tol=tol)


def test_constant_game_returns_uniform():
    value, w, v = game_value(np.full((3, 4), 2.5))
    assert value == 2.5
    np.testing.assert_allclose(w, np.full(4, 0.25))
    np.testing.assert_allclose(max_entropy_equilibrium(np.full((3, 4), 2.5)), np.full(4, 0.25))
