"""Task-weighting strategies: static mixing, online DRO, baselined DRO and Lookahead DRO."""

from __future__ import annotations

from typing import Any, Sequence

from .base import NonFiniteLossError, TaskWeighting
from .dro import BaselinedDRO, OnlineDRO
from .lookahead import ExactLookaheadDRO, LookaheadDRO, lookahead_matrix
from .static import StaticMixing

METHODS = ("static", "dro", "baselined_dro", "ldro", "ldro_exact")


def build_weighting(
    method: str,
    task_names: Sequence[str],
    *,
    dataset_sizes: Any = None,
    mixing_alpha: float = 1.0,
    dro_eta: float = 1e-2,
    reference_losses: Any = None,
    ldro_eta: float = 1e-2,
    ldro_lookahead_lr: float = 1e-2,
    ldro_update_interval: int = 100,
) -> TaskWeighting:
    """Build the strategy named `method` (one of `METHODS`) with its hyperparameters.

    Each method reads only its own arguments: `dataset_sizes` and `mixing_alpha` for "static",
    `dro_eta` for "dro" and "baselined_dro" (which also needs `reference_losses`), `ldro_eta`,
    `ldro_lookahead_lr` and `ldro_update_interval` for "ldro", and the last two for "ldro_exact".

    Example:
        >>> build_weighting("ldro", ["en", "yo"], ldro_eta=0.1)
        LookaheadDRO(en=0.5000, yo=0.5000)
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(
            f"Unknown weighting method {method!r}: choose one of {', '.join(METHODS)}."
        )
    if method == "static":
        return StaticMixing(task_names, dataset_sizes=dataset_sizes, alpha=mixing_alpha)
    if method == "dro":
        return OnlineDRO(task_names, eta=dro_eta)
    if method == "baselined_dro":
        if reference_losses is None:
            raise ValueError(
                "method 'baselined_dro' needs reference losses (one per task, e.g. from "
                "monolingual runs' reference.json files)."
            )
        return BaselinedDRO(task_names, reference_losses, eta=dro_eta)
    if method == "ldro":
        return LookaheadDRO(
            task_names,
            eta=ldro_eta,
            lookahead_lr=ldro_lookahead_lr,
            update_interval=ldro_update_interval,
        )
    if method == "ldro_exact":
        return ExactLookaheadDRO(
            task_names, lookahead_lr=ldro_lookahead_lr, update_interval=ldro_update_interval
        )
    raise AssertionError(f"METHODS lists {method!r} but build_weighting does not build it.")


__all__ = [
    "METHODS",
    "TaskWeighting",
    "NonFiniteLossError",
    "StaticMixing",
    "OnlineDRO",
    "BaselinedDRO",
    "LookaheadDRO",
    "ExactLookaheadDRO",
    "lookahead_matrix",
    "build_weighting",
]
