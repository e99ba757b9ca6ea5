"""Two-player zero-sum matrix games: best response, value by linear programming, and the
maximum-entropy equilibrium.

Convention (the lookahead game of Michel, Ruder & Yogatama, "Balancing Average and Worst-Case
Accuracy in Multitask Learning"): the payoff matrix L has one row per task evaluated and one
column per task trained on. The column player w (training weights) minimises, the row player v
(evaluation weights) maximises, and both mix over the simplex:

    value = min_w max_v v^T L w = max_v min_w v^T L w   (von Neumann's minimax theorem).

Example:
    >>> import numpy as np
    >>> value, w, v = game_value(np.array([[1.0, 0.0], [0.0, 1.0]]))  # matching pennies
    >>> round(value, 6), np.round(w, 6).tolist()
    (0.5, [0.5, 0.5])
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve
from scipy.optimize import linprog
from scipy.special import logsumexp, softmax

logger = logging.getLogger(__name__)

# HiGHS feasibility tolerances, tighter than its defaults (1e-7), so that the reduced costs that
# prune columns in `max_entropy_equilibrium` are accurate well below its default `tol`.
_HIGHS_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


class GameSolution(NamedTuple):
    """Game value with one optimal mixed strategy for each player."""

    value: float
    w: np.ndarray
    v: np.ndarray


def as_payoff_matrix(payoff: Any) -> np.ndarray:
    """Convert `payoff` to a finite, non-empty 2-D float64 array, or raise a ValueError."""
    if hasattr(payoff, "detach"):  # a torch tensor, on any device
        payoff = payoff.detach().cpu().double().numpy()
    matrix = np.asarray(payoff, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(
            f"A payoff matrix must be 2-D with at least one row and one column, got shape "
            f"{matrix.shape}."
        )
    if not np.isfinite(matrix).all():
        row, col = np.argwhere(~np.isfinite(matrix))[0]
        raise ValueError(
            f"The payoff matrix has a non-finite entry {matrix[row, col]} at row {row}, column "
            f"{col}: the losses and interaction matrix that built it must be finite."
        )
    return matrix


def best_response(payoff: Any, w: Any) -> int:
    """Return the row i* = argmax_i (L w)_i, the maximiser's best pure reply to the mixture w.

    Ties go to the lowest row index.

    Example:
        >>> best_response([[1.0, 0.0], [0.0, 2.0]], [0.5, 0.5])
        1
    """
    matrix = as_payoff_matrix(payoff)
    if hasattr(w, "detach"):
        w = w.detach().cpu().double().numpy()
    strategy = np.asarray(w, dtype=np.float64)
    if strategy.shape != (matrix.shape[1],):
        raise ValueError(
            f"The strategy w has shape {strategy.shape} but the payoff matrix has "
            f"{matrix.shape[1]} columns: pass one weight per column."
        )
    return int(np.argmax(matrix @ strategy))


def _normalise(matrix: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Map the payoffs affinely onto [0, 1], a change that leaves the equilibria unchanged."""
    low, high = float(matrix.min()), float(matrix.max())
    span = high - low
    if span == 0.0:
        return np.zeros_like(matrix), low, 0.0
    return (matrix - low) / span, low, span


def _solve_minimiser_lp(matrix: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Solve min_{w, t} t  s.t.  L w <= t 1, 1^T w = 1, w >= 0. The row duals give v."""
    rows, cols = matrix.shape
    cost = np.zeros(cols + 1)
    cost[-1] = 1.0
    inequality = np.hstack([matrix, -np.ones((rows, 1))])
    equality = np.hstack([np.ones((1, cols)), np.zeros((1, 1))])
    bounds = [(0.0, None)] * cols + [(None, None)]
    result = linprog(
        cost,
        A_ub=inequality,
        b_ub=np.zeros(rows),
        A_eq=equality,
        b_eq=[1.0],
        bounds=bounds,
        method="highs",
        options=_HIGHS_OPTIONS,
    )
    if result.status != 0:
        raise RuntimeError(f"HiGHS failed on the {rows}x{cols} matrix game: {result.message}")

    # HiGHS reports the duals of the <= rows as non-positive marginals; their negation is an
    # optimal mixed strategy of the maximiser.
    v = np.clip(-result.ineqlin.marginals, 0.0, None)
    w = np.clip(result.x[:cols], 0.0, None)
    return float(result.x[-1]), w / w.sum(), v / v.sum()


def game_value(payoff: Any) -> GameSolution:
    """Solve min_w max_v v^T L w by linear programming (scipy's HiGHS).

    Returns:
        GameSolution(value, w, v): the value, an optimal strategy w of the column (minimising)
        player and an optimal strategy v of the row (maximising) player from the LP's duals. Both
        are basic solutions: when the game has several equilibria they are vertices of the
        optimal sets. `max_entropy_equilibrium` picks the centre of the minimiser's set instead.

    Raises:
        ValueError: the matrix is not finite and 2-D.
        RuntimeError: HiGHS failed, which a finite game should never cause.
    """
    matrix = as_payoff_matrix(payoff)
    normalised, low, span = _normalise(matrix)
    rows, cols = matrix.shape
    if span == 0.0:
        return GameSolution(low, np.full(cols, 1.0 / cols), np.full(rows, 1.0 / rows))
    value, w, v = _solve_minimiser_lp(normalised)
    return GameSolution(low + span * value, w, v)


def _minimise_entropy_dual(
    constraints: np.ndarray, bound: float, multipliers: np.ndarray, max_iter: int = 200
) -> tuple[np.ndarray, bool]:
    """Solve the dual of  max_w H(w)  s.t.  constraints @ w <= bound, w on the simplex.

    The dual is  min_{mu >= 0} bound * sum(mu) + logsumexp(-constraints^T mu), and the primal
    solution is w = softmax(-constraints^T mu). Projected Newton with Levenberg-Marquardt
    damping, because the Hessian is singular whenever the constraint rows are linearly dependent,
    as they are in low-rank games. Returns (mu, converged).
    """
    bounds = np.full(constraints.shape[0], bound)

    def dual(mu: np.ndarray) -> float:
        return float(bounds @ mu + logsumexp(-constraints.T @ mu))

    mu = multipliers
    current = dual(mu)
    damping = 1e-6
    for _ in range(max_iter):
        w = softmax(-constraints.T @ mu)
        row_payoffs = constraints @ w
        gradient = bounds - row_payoffs
        free = ~((mu <= 0.0) & (gradient > 0.0))
        if not free.any() or np.max(np.abs(gradient[free])) <= 1e-12:
            return mu, True

        free_rows = constraints[free]
        hessian = (free_rows * w) @ free_rows.T - np.outer(row_payoffs[free], row_payoffs[free])
        scale = max(float(np.max(np.diag(hessian))), 1e-300)
        identity = np.eye(hessian.shape[0])
        while True:
            try:
                factor = cho_factor(hessian + damping * scale * identity)
            except LinAlgError:
                damping *= 10.0
                continue
            candidate = mu.copy()
            candidate[free] = np.maximum(mu[free] - cho_solve(factor, gradient[free]), 0.0)
            candidate_value = dual(candidate)
            if candidate_value <= current + 1e-4 * gradient @ (candidate - mu):
                damping = max(damping / 10.0, 1e-12)
                break
            damping *= 10.0
            if damping > 1e12:  # no descent direction left at machine precision
                return mu, False
        mu, current = candidate, candidate_value
    return mu, False


def max_entropy_equilibrium(payoff: Any, tol: float = 1e-9) -> np.ndarray:
    """Return the minimiser's optimal strategy of maximum entropy.

    Among all w on the simplex with max_i (L w)_i <= value + tol (the optimal face, up to `tol`),
    return the one with the largest Shannon entropy. Lookahead DRO (Michel, Ruder & Yogatama,
    "Balancing Average and Worst-Case Accuracy in Multitask Learning") breaks ties between
    equilibria this way: it trains on as many tasks as it can without raising the worst-case
    lookahead loss. Redundant tasks thus get uniform weights.

    `tol` is relative to the payoff range max(L) - min(L), so the result does not change under
    L -> a L + b with a > 0. Columns whose reduced cost in the LP exceeds `tol` (columns that no
    optimal strategy plays) get weight exactly 0.

    Method: HiGHS gives the value and an optimal maximiser, whose reduced costs prune the
    columns. If the uniform strategy over the remaining columns is optimal it is the answer.
    Otherwise projected Newton maximises the entropy through its smooth dual, adding violated
    rows of L as constraints until none is violated, which keeps the Newton systems small. If
    that search fails (never seen in the tests), the LP's equilibrium is returned with a warning.

    Cost, measured on the project's 2-core CPU at load average 7.5 (timing loop of
    tests/test_games.py): a 40-task lookahead game takes a median 8 ms, of which the LP is 6 ms,
    and a random 40x40 game 15 ms. NOTE: random games of very low rank with many rows (rank 3,
    40x40) take about 100 ms, because the Newton Hessian is then singular and the damped steps
    progress slowly.

    Example:
        >>> L = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])  # every w is optimal
        >>> np.round(max_entropy_equilibrium(L), 6).tolist()
        [0.333333, 0.333333, 0.333333]
    """
    matrix = as_payoff_matrix(payoff)
    tol = float(tol)
    if not np.isfinite(tol) or tol <= 0.0:
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}.")
    cols = matrix.shape[1]
    normalised, _, span = _normalise(matrix)
    if span == 0.0:
        return np.full(cols, 1.0 / cols)

    value, lp_strategy, row_strategy = _solve_minimiser_lp(normalised)
    reduced_costs = row_strategy @ normalised - value
    playable = np.flatnonzero(reduced_costs <= tol)
    restricted = normalised[:, playable]
    bound = value + tol

    # Rows that stay below the bound everywhere on the simplex never constrain w. Start from the
    # rows the maximiser plays: they are tight on the whole optimal face.
    can_bind = restricted.max(axis=1) > bound
    working_rows = [int(i) for i in np.flatnonzero((row_strategy > 1e-12) & can_bind)]
    multipliers = np.zeros(len(working_rows))
    converged = True
    strategy = np.full(len(playable), 1.0 / len(playable))
    for _ in range(matrix.shape[0] + 1):
        if working_rows:
            multipliers, converged = _minimise_entropy_dual(
                restricted[working_rows], bound, multipliers
            )
            strategy = softmax(-restricted[working_rows].T @ multipliers)
        violation = restricted @ strategy - bound
        violation[working_rows] = -np.inf
        violated = [int(i) for i in np.argsort(-violation)[:3] if violation[i] > 1e-13]
        if not violated:
            break
        working_rows += violated
        multipliers = np.concatenate([multipliers, np.zeros(len(violated))])

    weights = np.zeros(cols)
    weights[playable] = strategy
    excess = float(np.max(normalised @ weights) - value)
    if excess > 10.0 * tol:
        logger.warning(
            "The maximum-entropy equilibrium search did not converge (Newton converged: %s, "
            "payoff excess %.3g of the payoff range); using the LP equilibrium instead.",
            converged,
            excess,
        )
        return lp_strategy
    return weights
