"""Tests of the synthetic 2-D experiment in toy/: geometry, default outcome, outputs, CLI."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from hf_ldro.weighting import ExactLookaheadDRO, LookaheadDRO, OnlineDRO, StaticMixing
from toy.problem import make_problem
from toy.synthetic import build_parser, build_strategy, main

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_KEYS = ["average", "dro", "ldro", "ldro_online"]
ALL_KEYS = RUN_KEYS + [key + "_noisy" for key in RUN_KEYS]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("toy")
    summary = main(["--output_dir", str(output_dir), "--log_every", "0"])
    return output_dir, summary


def relative_gap(value: float, reference: float) -> float:
    return abs(value - reference) / reference


# ---- geometry --------------------------------------------------------------------------------


def test_outlier_loss_never_below_radius_squared():
    problem = make_problem()
    generator = torch.Generator().manual_seed(0)
    for theta in 3 * torch.randn(200, 2, generator=generator, dtype=torch.float64):
        assert float(problem.losses(theta)[0]) >= 1.25**2 - 1e-12


def test_theta_at_round_trip():
    problem = make_problem()
    for x, y in [(0.0, 2.5), (-1.0, 0.0), (3.0, -2.0), (1.0, 1.25)]:
        theta = problem.theta_at(x, y)
        torch.testing.assert_close(
            problem.predict(theta), torch.tensor([x, y], dtype=torch.float64)
        )


def test_theta_at_rejects_forbidden_point():
    with pytest.raises(ValueError, match="inside the forbidden disc of radius 1.25"):
        make_problem().theta_at(0.5, 0.0)


def test_optimum_on_circle_facing_cluster():
    problem = make_problem()
    optimum = problem.optimum()
    assert float((optimum - problem.outlier).norm()) == pytest.approx(1.25)
    assert float(optimum[0]) < 0.0  # on the cluster's side of the circle


def test_cluster_is_seeded():
    assert torch.equal(make_problem(seed=3).points, make_problem(seed=3).points)
    assert not torch.equal(make_problem(seed=3).points, make_problem(seed=4).points)


def test_methods_use_library_strategies():
    problem = make_problem()
    args = build_parser().parse_args(["--output_dir", "unused"])
    assert isinstance(build_strategy("average", problem.task_names, args), StaticMixing)
    assert isinstance(build_strategy("dro", problem.task_names, args), OnlineDRO)
    assert isinstance(build_strategy("ldro", problem.task_names, args), ExactLookaheadDRO)
    assert isinstance(build_strategy("ldro_online", problem.task_names, args), LookaheadDRO)


# ---- the default run -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["ldro", "ldro_online"])
def test_ldro_reaches_optimum(default_run, key):
    _, summary = default_run
    optimum = summary["optimum"]
    assert relative_gap(summary[key]["outlier_loss"], optimum["outlier_loss"]) <= 0.01
    assert relative_gap(summary[key]["cluster_mean_loss"], optimum["cluster_mean_loss"]) <= 0.01


def test_dro_stuck_on_circle(default_run):
    _, summary = default_run
    assert summary["dro"]["cluster_mean_loss"] >= 1.05 * summary["optimum"]["cluster_mean_loss"]
    assert relative_gap(summary["dro"]["outlier_loss"], 1.25**2) <= 0.01  # it did reach the circle


def test_average_neglects_outlier(default_run):
    _, summary = default_run
    assert summary["average"]["outlier_loss"] > 3.0


def test_optimum_values(default_run):
    _, summary = default_run
    assert summary["optimum"]["outlier_loss"] == pytest.approx(1.25**2)
    assert summary["optimum"]["cluster_mean_loss"] < summary["dro"]["cluster_mean_loss"]


def test_summary_fields(default_run):
    output_dir, summary = default_run
    written = json.loads((output_dir / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    for key in ALL_KEYS:
        run = written[key]
        for field in ("outlier_loss", "cluster_mean_loss", "worst_loss", "average_loss"):
            assert math.isfinite(run[field]), (key, field)
        assert len(run["final_point"]) == 2
        assert run["steps"] == 200
        assert run["worst_loss"] >= run["outlier_loss"]


def test_noisy_runs_differ(default_run):
    _, summary = default_run
    for key in RUN_KEYS:
        assert summary[key]["final_point"] != summary[key + "_noisy"]["final_point"], key


@pytest.mark.parametrize("name", ["trajectories.png", "weights.png"])
def test_figures_written(default_run, name):
    output_dir, _ = default_run
    with Image.open(output_dir / name) as image:
        assert image.format == "PNG"
        assert image.width > 1000
        assert image.height > 400


# ---- command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps", "0"], "--steps: expected an integer >= 1, got 0"),
        (["--learning_rate", "-0.1"], "--learning_rate: expected a finite number > 0.0, got -0.1"),
        (["--dro_eta", "nan"], "--dro_eta: expected a finite number >= 0.0, got nan"),
        (["--noise_std", "abc"], "--noise_std: expected a number, got 'abc'"),
        (["--start_x", "0.5", "--start_y", "0"], "inside the forbidden disc"),
    ],
)
def test_bad_flags_rejected(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(tmp_path), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_module_help_lists_units():
    result = subprocess.run(
        [sys.executable, "-m", "toy.synthetic", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert "--noise_std" in text
    assert "loss = squared distance" in text
    assert "step size on the parameters (r, phi)" in text


def test_short_run_without_noise(tmp_path):
    summary = main(
        ["--output_dir", str(tmp_path), "--steps", "5", "--noise_std", "0", "--log_every", "1"]
    )
    assert set(summary) == set(RUN_KEYS) | {"optimum", "config"}
    assert summary["ldro"]["steps"] == 5
