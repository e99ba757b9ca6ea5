"""Run the synthetic outlier experiment: average, DRO, exact and online L-DRO, with and without
noise, and write summary.json, trajectories.png and weights.png.

The setting follows section 4 of Michel, Ruder & Yogatama, "Balancing Average and Worst-Case
Accuracy in Multitask Learning": tasks are points in the plane, most in a cluster around (-1, 0)
and one outlier at (1, 0), and the model f(r, phi) = y_out + (R + r^2)(cos phi, sin phi) with
R = 1.25 cannot come closer than R to the outlier. That section does not give the number of points,
their spread, the start point or the learning rates; the defaults here are this project's choice.

Usage:
    python -m toy.synthetic --output_dir runs/toy
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from hf_ldro.weighting import TaskWeighting, build_weighting

from .plots import plot_trajectories, plot_weights
from .problem import OutlierProblem, make_problem
from .training import Trajectory, train

logger = logging.getLogger(__name__)

METHODS = ("average", "dro", "ldro", "ldro_online")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _float_at_least(minimum: float, strict: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_small = value <= minimum if strict else value < minimum
        if not value == value or value == float("inf") or too_small:  # NaN fails value == value
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(
                f"expected a finite number {relation} {minimum}, got {text}"
            )
        return value

    return parse


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or abs(value) == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m toy.synthetic",
        description=(
            "Synthetic 2-D outlier experiment: compare average, DRO, exact and online L-DRO. "
            "Positions and losses are in the plane's units (loss = squared distance)."
        ),
    )
    parser.add_argument(
        "--output_dir", type=Path, required=True, help="Folder for summary.json and the PNGs."
    )
    parser.add_argument(
        "--start_x",
        type=_finite_float,
        default=0.0,
        help="x of the model's start point (default: 0.0).",
    )
    parser.add_argument(
        "--start_y",
        type=_finite_float,
        default=2.5,
        help="y of the model's start point (default: 2.5).",
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=200, help="Gradient steps per run (default: 200)."
    )
    parser.add_argument(
        "--learning_rate",
        type=_float_at_least(0.0, strict=True),
        default=0.05,
        help="Gradient-descent step size on the parameters (r, phi) (default: 0.05).",
    )
    parser.add_argument(
        "--dro_eta",
        type=_float_at_least(0.0, strict=False),
        default=1.0,
        help="DRO weight learning rate (default: 1.0).",
    )
    parser.add_argument(
        "--ldro_eta",
        type=_float_at_least(0.0, strict=False),
        default=1.0,
        help="Online L-DRO weight learning rate eta (default: 1.0).",
    )
    parser.add_argument(
        "--ldro_lookahead_lr",
        type=_float_at_least(0.0, strict=False),
        default=0.1,
        help="L-DRO lookahead learning rate lambda, for both variants (default: 0.1).",
    )
    parser.add_argument(
        "--ldro_update_interval",
        type=_positive_int,
        default=1,
        help="Steps between interaction-matrix refreshes, k (default: 1, every step).",
    )
    parser.add_argument(
        "--noise_std",
        type=_float_at_least(0.0, strict=False),
        default=0.1,
        help=(
            "Standard deviation of the Gaussian noise added to every observed loss and gradient "
            "entry in the *_noisy runs (default: 0.1; 0 skips the noisy runs)."
        ),
    )
    parser.add_argument(
        "--num_cluster_points",
        type=_positive_int,
        default=10,
        help="Tasks in the cluster (default: 10).",
    )
    parser.add_argument(
        "--cluster_std",
        type=_float_at_least(0.0, strict=False),
        default=0.1,
        help="Standard deviation of the cluster points around (-1, 0) (default: 0.1).",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Seed of the cluster points and of the noise (default: 0).",
    )
    parser.add_argument(
        "--log_every",
        type=int,
        default=100,
        help="Log the losses every N steps of each run; 0 logs only the ends (default: 100).",
    )
    return parser


def build_strategy(method: str, task_names: list[str], args: argparse.Namespace) -> TaskWeighting:
    """Return the hf_ldro weighting that implements `method` (one of `METHODS`)."""
    if method == "average":
        return build_weighting("static", task_names, mixing_alpha=0.0)
    if method == "dro":
        return build_weighting("dro", task_names, dro_eta=args.dro_eta)
    common = dict(
        ldro_lookahead_lr=args.ldro_lookahead_lr, ldro_update_interval=args.ldro_update_interval
    )
    if method == "ldro":
        return build_weighting("ldro_exact", task_names, **common)
    if method == "ldro_online":
        return build_weighting("ldro", task_names, ldro_eta=args.ldro_eta, **common)
    raise ValueError(f"Unknown toy method {method!r}: use one of {', '.join(METHODS)}.")


def summarize_point(problem: OutlierProblem, point: torch.Tensor) -> dict[str, float]:
    """Return the outlier loss, the cluster's mean loss, the worst and the average loss at `point`."""
    losses = problem.losses_at(point)
    return {
        "outlier_loss": float(losses[0]),
        "cluster_mean_loss": float(losses[1:].mean()),
        "worst_loss": float(losses.max()),
        "average_loss": float(losses.mean()),
    }


def run_all(args: argparse.Namespace) -> tuple[dict, OutlierProblem, dict[str, Trajectory]]:
    problem = make_problem(args.num_cluster_points, args.cluster_std, args.seed)
    start = problem.theta_at(args.start_x, args.start_y)
    noise_levels = [("", 0.0)] + ([("_noisy", args.noise_std)] if args.noise_std > 0 else [])

    summary: dict = {}
    runs: dict[str, Trajectory] = {}
    for suffix, noise_std in noise_levels:
        for method in METHODS:
            key = method + suffix
            weighting = build_strategy(method, problem.task_names, args)
            began = time.perf_counter()
            trajectory = train(
                problem,
                weighting,
                start,
                args.steps,
                args.learning_rate,
                noise_std=noise_std,
                seed=args.seed + 1,
                log_every=args.log_every,
                name=key,
            )
            seconds = time.perf_counter() - began
            runs[key] = trajectory
            final_point = trajectory.points[-1]
            summary[key] = {
                **summarize_point(problem, final_point),
                "final_point": final_point.tolist(),
                "final_weights": weighting.weight_dict(),
                "steps": args.steps,
                "seconds": round(seconds, 3),
            }
            logger.info(
                "%s done in %.1f s: outlier loss %.4f, cluster mean loss %.4f",
                key,
                seconds,
                summary[key]["outlier_loss"],
                summary[key]["cluster_mean_loss"],
            )

    optimum = problem.optimum()
    summary["optimum"] = {**summarize_point(problem, optimum), "point": optimum.tolist()}
    summary["config"] = {
        name: str(value) if isinstance(value, Path) else value for name, value in vars(args).items()
    }
    summary["config"]["task_points"] = problem.points.tolist()
    return summary, problem, runs


def main(argv: list[str] | None = None) -> dict:
    """Parse `argv`, run every method, write the outputs, print a table; return the summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = make_problem(args.num_cluster_points, args.cluster_std, args.seed)
    try:
        problem.theta_at(args.start_x, args.start_y)
    except ValueError as error:
        parser.error(f"--start_x/--start_y: {error}")

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    summary, problem, runs = run_all(args)

    (args.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    optimum = torch.tensor(summary["optimum"]["point"], dtype=torch.float64)
    plot_trajectories(args.output_dir / "trajectories.png", problem, runs, optimum)
    plot_weights(args.output_dir / "weights.png", runs)

    print(f"{'run':<20} {'outlier loss':>13} {'cluster mean':>13} {'worst':>8} {'average':>8}")
    for key in [*runs, "optimum"]:
        row = summary[key]
        print(
            f"{key:<20} {row['outlier_loss']:>13.4f} {row['cluster_mean_loss']:>13.4f} "
            f"{row['worst_loss']:>8.4f} {row['average_loss']:>8.4f}"
        )
    print(f"Wrote summary.json, trajectories.png and weights.png to {args.output_dir}")
    return summary


if __name__ == "__main__":
    main()
