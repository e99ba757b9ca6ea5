"""LDROArguments: the task-weighting options of LDROTrainer, parseable by HfArgumentParser."""

from __future__ import annotations

import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .weighting import TaskWeighting, build_weighting

WEIGHTING_METHODS = ("static", "dro", "baselined_dro", "ldro", "ldro_exact")
LM_OBJECTIVES = ("auto", "causal", "masked")
GRADIENT_BUFFER_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_task_mapping(name: str, value: dict | str | None) -> dict[str, float] | None:
    """Read a {task: number} mapping given as a dict, a JSON file path or an inline JSON object."""
    if value is None or isinstance(value, dict):
        return value
    if os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as handle:
                mapping = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name}: {value} is not valid JSON ({error}).") from error
    else:
        try:
            mapping = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{name}={value!r} is neither an existing JSON file nor an inline JSON object "
                'such as \'{"eng_Latn": 3.1, "yor_Latn": 4.2}\'.'
            ) from error
    if not isinstance(mapping, dict):
        raise ValueError(f"{name} must be a JSON object {{task: number}}, got {type(mapping).__name__}.")
    return {str(task): float(number) for task, number in mapping.items()}


_SCALAR_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _accepted_types(annotation: Any) -> tuple[type, ...] | None:
    """Return the scalar types (and None) a field accepts, or None for fields left unchecked.

    Fields that also accept a list or a mapping are left to their own conversion, because
    subclasses may replace such a value by a parsed form before this check runs.
    """
    members = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if not all(member is type(None) or member in _SCALAR_TYPE_NAMES for member in members):
        return None
    return tuple(members)


def _has_accepted_type(value: Any, accepted: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in accepted
    if isinstance(value, int) and float in accepted:
        return True
    return isinstance(value, accepted)


def check_argument_types(arguments: Any) -> None:
    """Raise ValueError for a dataclass field whose value has the wrong type.

    HfArgumentParser converts command-line strings by the annotation, but `parse_dict` (a JSON
    config) passes values through unchanged, so `"ldro_update_interval": "fifty"` would reach
    the range checks as a string. An integer is accepted where a float is expected.
    """
    hints = typing.get_type_hints(type(arguments))
    for argument_field in fields(arguments):
        accepted = _accepted_types(hints.get(argument_field.name))
        value = getattr(arguments, argument_field.name)
        if accepted is None or _has_accepted_type(value, accepted):
            continue
        expected = " or ".join(_SCALAR_TYPE_NAMES.get(kind, "null") for kind in accepted)
        raise ValueError(
            f"{argument_field.name}={value!r} has type {type(value).__name__}, but "
            f"{argument_field.name} must be {expected}: fix the value."
        )


@dataclass
class LDROArguments:
    """Options of the task weighting and of the per-task gradients it needs.

    Combine with TrainingArguments in one `HfArgumentParser((..., TrainingArguments, LDROArguments))`;
    no field name clashes with TrainingArguments.
    """

    method: str = field(
        default="ldro",
        metadata={
            "help": "Task-weighting method: static (|D_i|^alpha mixing), dro (online DRO), "
            "baselined_dro (DRO on loss minus a reference loss), ldro (online Lookahead-DRO), "
            "ldro_exact (Lookahead-DRO solved as a zero-sum game every step).",
            "choices": list(WEIGHTING_METHODS),
        },
    )
    mixing_alpha: float = field(
        default=0.3,
        metadata={"help": "Static mixing exponent alpha: w_i proportional to |D_i|^alpha, in [0, 1]."},
    )
    dataset_sizes: dict | str | None = field(
        default=None,
        metadata={
            "help": "Size of each task's training data, as a JSON file or inline JSON object "
            "{task: size} (tokens or examples; only ratios matter). Needed by static mixing with "
            "alpha > 0."
        },
    )
    dro_eta: float = field(
        default=1e-2, metadata={"help": "Step size of the DRO and baselined DRO weight update."}
    )
    reference_losses: dict | str | None = field(
        default=None,
        metadata={
            "help": "Reference loss of every task (nats per token) for baselined_dro, as a JSON "
            "file or inline JSON object {task: loss}."
        },
    )
    ldro_eta: float = field(default=1e-2, metadata={"help": "Step size of the L-DRO weight update."})
    ldro_lookahead_lr: float = field(
        default=1e-2,
        metadata={
            "help": "Lookahead learning rate lambda of L-DRO: L_ij = l_i - lambda * A_ij with A "
            "the gradient interaction matrix."
        },
    )
    ldro_update_interval: int = field(
        default=100,
        metadata={"help": "Refresh the interaction matrix every this many optimizer steps (k)."},
    )
    interaction_parameters: str | None = field(
        default=None,
        metadata={
            "help": "Regular expression on parameter names (re.search) selecting the parameters "
            "whose gradients form the interaction matrix; default all trainable parameters."
        },
    )
    gradient_buffer_dtype: str = field(
        default="float32",
        metadata={
            "help": "dtype of the N x d per-task gradient buffer.",
            "choices": list(GRADIENT_BUFFER_DTYPES),
        },
    )
    gradient_buffer_device: str | None = field(
        default=None,
        metadata={
            "help": "Device of the per-task gradient buffer (e.g. cpu to spare accelerator "
            "memory); default the training device."
        },
    )
    sketch_dim: int = field(
        default=0,
        metadata={
            "help": "Project each task gradient to this many dimensions with a fixed random "
            "sketch before the all-reduce and the interaction matrix; 0 keeps exact gradients."
        },
    )
    sketch_seed: int = field(default=0, metadata={"help": "Seed of the random sketch matrix."})
    max_consecutive_nonfinite: int = field(
        default=10,
        metadata={
            "help": "Stop training with an error after this many consecutive optimizer steps "
            "whose task loss was NaN or infinite (each such step skips the weight update)."
        },
    )
    task_column: str = field(
        default="task_ids",
        metadata={"help": "Batch column with each example's task index (0 .. N-1)."},
    )
    lm_objective: str = field(
        default="auto",
        metadata={
            "help": "How labels align with logits: causal (position t predicts label t+1), "
            "masked (position t predicts label t), or auto (from the model class).",
            "choices": list(LM_OBJECTIVES),
        },
    )

    def __post_init__(self) -> None:
        check_argument_types(self)
        if self.method not in WEIGHTING_METHODS:
            raise ValueError(f"method={self.method!r} is unknown: use one of {list(WEIGHTING_METHODS)}.")
        if self.lm_objective not in LM_OBJECTIVES:
            raise ValueError(
                f"lm_objective={self.lm_objective!r} is unknown: use one of {list(LM_OBJECTIVES)}."
            )
        if self.gradient_buffer_dtype not in GRADIENT_BUFFER_DTYPES:
            raise ValueError(
                f"gradient_buffer_dtype={self.gradient_buffer_dtype!r} is unknown: use one of "
                f"{list(GRADIENT_BUFFER_DTYPES)}."
            )
        if not (math.isfinite(self.mixing_alpha) and 0.0 <= self.mixing_alpha <= 1.0):
            raise ValueError(f"mixing_alpha must be in [0, 1], got {self.mixing_alpha!r}.")
        for name in ("dro_eta", "ldro_eta", "ldro_lookahead_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        if self.ldro_update_interval < 1:
            raise ValueError(f"ldro_update_interval must be >= 1, got {self.ldro_update_interval}.")
        if self.sketch_dim < 0:
            raise ValueError(f"sketch_dim must be >= 0 (0 = no sketch), got {self.sketch_dim}.")
        if self.max_consecutive_nonfinite < 1:
            raise ValueError(
                f"max_consecutive_nonfinite must be >= 1, got {self.max_consecutive_nonfinite}."
            )
        if self.interaction_parameters is not None:
            try:
                re.compile(self.interaction_parameters)
            except re.error as error:
                raise ValueError(
                    f"interaction_parameters={self.interaction_parameters!r} is not a valid "
                    f"regular expression: {error}."
                ) from error
        self.dataset_sizes = load_task_mapping("dataset_sizes", self.dataset_sizes)
        self.reference_losses = load_task_mapping("reference_losses", self.reference_losses)
        if self.method == "baselined_dro" and self.reference_losses is None:
            raise ValueError(
                "method=baselined_dro needs reference_losses: pass a JSON file or object "
                "{task: reference loss}."
            )

    @property
    def buffer_dtype(self) -> torch.dtype:
        return GRADIENT_BUFFER_DTYPES[self.gradient_buffer_dtype]

    def to_dict(self) -> dict[str, Any]:
        """Return the options as a JSON-serialisable dict (for logs and model cards)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def weighting_from_arguments(ldro_args: LDROArguments, task_names: list[str]) -> TaskWeighting:
    """Build the TaskWeighting strategy that `ldro_args` describes for `task_names`."""
    dataset_sizes = ldro_args.dataset_sizes
    if dataset_sizes is not None:
        missing = [name for name in task_names if name not in dataset_sizes]
        if missing:
            raise ValueError(
                f"dataset_sizes is missing task(s) {missing}: give a size for every task."
            )
        dataset_sizes = [dataset_sizes[name] for name in task_names]

    return build_weighting(
        ldro_args.method,
        task_names,
        dataset_sizes=dataset_sizes,
        mixing_alpha=ldro_args.mixing_alpha,
        dro_eta=ldro_args.dro_eta,
        reference_losses=ldro_args.reference_losses,
        ldro_eta=ldro_args.ldro_eta,
        ldro_lookahead_lr=ldro_args.ldro_lookahead_lr,
        ldro_update_interval=ldro_args.ldro_update_interval,
    )
