"""Pareto frontier of (average, worst) accuracy and its plot."""

import itertools

import pytest

from hf_ldro.pareto import frontier_records, pareto_frontier, plot_pareto_frontiers


def _dominated(point, other):
    return other[0] >= point[0] and other[1] >= point[1] and tuple(other) != tuple(point)


def test_hand_made_frontier():
    points = [
        (0.50, 0.20),  # 0 frontier
        (0.40, 0.30),  # 1 frontier
        (0.40, 0.10),  # 2 dominated by 1
        (0.60, 0.10),  # 3 frontier
        (0.55, 0.05),  # 4 dominated by 3
        (0.30, 0.30),  # 5 dominated by 1 (same worst, lower average)
        (0.45, 0.20),  # 6 dominated by 0
    ]
    assert pareto_frontier(points) == [1, 0, 3]


def test_duplicates_keep_first():
    assert pareto_frontier([(0.1, 0.9), (0.5, 0.5), (0.5, 0.5)]) == [0, 1]


def test_frontier_matches_brute_force():
    grid = [(x / 4, y / 4) for x, y in itertools.product(range(5), repeat=2)]
    points = grid[::3] + [(0.33, 0.71), (0.9, 0.05), (0.71, 0.33)]
    brute = {
        i for i, p in enumerate(points) if not any(_dominated(p, q) for q in points)
    }
    assert set(pareto_frontier(points)) == brute


def test_frontier_sorted_by_average():
    points = [(0.9, 0.1), (0.1, 0.9), (0.5, 0.5)]
    frontier = pareto_frontier(points)
    averages = [points[i][0] for i in frontier]
    worsts = [points[i][1] for i in frontier]
    assert averages == sorted(averages)
    assert worsts == sorted(worsts, reverse=True)


def test_empty_and_invalid_points():
    assert pareto_frontier([]) == []
    with pytest.raises(ValueError, match="finite"):
        pareto_frontier([(0.1, float("nan"))])
    with pytest.raises(ValueError, match="pairs"):
        pareto_frontier([(0.1, 0.2, 0.3)])


def test_frontier_records_and_plot(tmp_path):
    records = [
        {"avg_accuracy": 0.5, "worst_accuracy": 0.2, "step": 1},
        {"avg_accuracy": 0.4, "worst_accuracy": 0.1, "step": 2},
    ]
    assert [r["step"] for r in frontier_records(records)] == [1]
    path = tmp_path / "pareto.png"
    plot_pareto_frontiers({"seed 0": {"static": records}, "seed 1": {"dro": records}}, str(path))
    assert path.stat().st_size > 1000
