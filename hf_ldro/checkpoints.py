"""Complete-checkpoint markers, so that resuming never picks a folder whose saving was interrupted.

transformers (5.x) writes `checkpoint-<step>` folders in place, file by file, and its
`get_last_checkpoint` returns the highest-numbered folder whether or not every file was written. A
process killed while saving leaves such a folder behind. `LDROTrainer` writes
`hf_ldro_checkpoint.json` last, after every other file of the checkpoint (all ranks), with the
name and size of each file. A folder counts as complete only when that marker exists and every
listed file has its recorded size, which also catches a file truncated after the fact.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .reporting import write_json_atomic

logger = logging.getLogger(__name__)

CHECKPOINT_COMPLETE_NAME = "hf_ldro_checkpoint.json"
MARKER_FORMAT_VERSION = 1
TEMPORARY_PREFIX = ".tmp-"
_CHECKPOINT_FOLDER = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


class IncompleteCheckpointError(ValueError):
    """A checkpoint folder is incomplete (interrupted save, missing or truncated file)."""


def _checkpoint_files(checkpoint_dir: Path) -> dict[str, int]:
    files = {}
    for path in sorted(checkpoint_dir.rglob("*")):
        if not path.is_file() or path.name == CHECKPOINT_COMPLETE_NAME:
            continue
        if path.name.startswith(TEMPORARY_PREFIX):
            continue
        files[path.relative_to(checkpoint_dir).as_posix()] = path.stat().st_size
    return files


def unmark_checkpoint(checkpoint_dir: str | os.PathLike) -> None:
    """Remove the marker before a folder is (re)written, so a half-rewritten folder is not complete."""
    marker = Path(checkpoint_dir) / CHECKPOINT_COMPLETE_NAME
    if marker.is_file():
        marker.unlink()


def mark_checkpoint_complete(checkpoint_dir: str | os.PathLike, global_step: int | None = None) -> Path:
    """Write the marker listing every file of `checkpoint_dir` with its size; call it last.

    The marker is written through a temporary file and `os.replace`, so it is either absent or
    complete. Returns the marker's path.
    """
    checkpoint_dir = Path(checkpoint_dir)
    marker: dict[str, Any] = {
        "format_version": MARKER_FORMAT_VERSION,
        "global_step": global_step,
        "files": _checkpoint_files(checkpoint_dir),
    }
    path = checkpoint_dir / CHECKPOINT_COMPLETE_NAME
    write_json_atomic(str(path), marker)
    return path


def checkpoint_problem(checkpoint_dir: str | os.PathLike) -> str | None:
    """Return why `checkpoint_dir` is not a complete checkpoint, or None when it is complete."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return f"{checkpoint_dir} is not a folder"
    marker_path = checkpoint_dir / CHECKPOINT_COMPLETE_NAME
    if not marker_path.is_file():
        return (
            f"{marker_path.name} is missing, so saving {checkpoint_dir.name} did not finish (or the "
            "folder was not written by LDROTrainer)"
        )
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        files = dict(marker["files"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        return f"{marker_path} is unreadable ({error})"
    for name, size in files.items():
        path = checkpoint_dir / name
        if not path.is_file():
            return f"{path} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{path} has {actual} bytes but {size} were written (truncated or replaced)"
    return None


def check_checkpoint_complete(checkpoint_dir: str | os.PathLike) -> None:
    """Raise IncompleteCheckpointError, naming the problem and the fix, unless the folder is complete."""
    problem = checkpoint_problem(checkpoint_dir)
    if problem is not None:
        raise IncompleteCheckpointError(
            f"Cannot resume from {checkpoint_dir}: {problem}. Resume from an earlier checkpoint "
            "(or pass --resume_from_checkpoint true to pick the last complete one); if you are sure "
            "the folder is complete, mark it with "
            "hf_ldro.checkpoints.mark_checkpoint_complete(path)."
        )


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """Return the `checkpoint-<step>` folders of `output_dir`, by step, the newest last."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    folders = [
        (int(match.group(1)), path)
        for path in output_dir.iterdir()
        if path.is_dir() and (match := _CHECKPOINT_FOLDER.match(path.name))
    ]
    return [path for _, path in sorted(folders)]


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """Return the highest-step complete checkpoint folder of `output_dir`, or None.

    Every newer incomplete folder is skipped with a warning that gives the reason, and is left
    in place.
    """
    for folder in reversed(checkpoint_folders(output_dir)):
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder)
        logger.warning("Skipping incomplete checkpoint %s: %s.", folder, problem)
    return None


def discard_task_weight_records_after(path: str | os.PathLike, step: int) -> int:
    """Drop the records of a task_weights.jsonl file logged after `step`; return how many.

    A resumed run continues from `step`, so records that the interrupted run wrote after it
    belong to a trajectory that is being replaced. A last line cut off by a kill is dropped
    too. The file is rewritten atomically; nothing is done when no record is dropped.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record_step = int(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            dropped += 1
            continue
        if record_step <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        temporary = path.with_name(TEMPORARY_PREFIX + path.name)
        temporary.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(temporary, path)
        logger.info(
            "Dropped %d record(s) after step %d from %s: training continues from step %d.",
            dropped,
            step,
            path,
            step,
        )
    return dropped


def checkpoint_task_names(checkpoint_dir: str | os.PathLike, state_name: str) -> list[str] | None:
    """Return the task names stored in a checkpoint's task-weighting state, None if it has none."""
    path = Path(checkpoint_dir) / state_name
    if not path.is_file():
        return None
    return list(json.loads(path.read_text(encoding="utf-8")).get("task_names", []))


def checkpoint_global_step(checkpoint_dir: str | os.PathLike) -> int:
    """Return the global step of a checkpoint from its trainer_state.json (else from its name)."""
    state_path = Path(checkpoint_dir) / "trainer_state.json"
    if state_path.is_file():
        return int(json.loads(state_path.read_text(encoding="utf-8"))["global_step"])
    match = _CHECKPOINT_FOLDER.match(Path(checkpoint_dir).name)
    if match is None:
        raise IncompleteCheckpointError(
            f"{checkpoint_dir} has no trainer_state.json and is not named "
            f"{PREFIX_CHECKPOINT_DIR}-<step>: pass a checkpoint folder written by the Trainer."
        )
    return int(match.group(1))


# Config fields that fix the kind of model or the shape of its weights. Model types name them
# differently (GPT-2: n_embd, n_layer; BERT-like: hidden_size, num_hidden_layers), so each is
# compared only when both configs have it.
MODEL_SHAPE_CONFIG_FIELDS = (
    "model_type",
    "vocab_size",
    "n_positions",
    "max_position_embeddings",
    "n_embd",
    "hidden_size",
    "n_layer",
    "num_hidden_layers",
    "n_head",
    "num_attention_heads",
)

# Hyperparameters recorded in the weighting state of every strategy that has them
# (hf_ldro.weighting): step size, lookahead learning rate, interaction interval, mixing exponent.
WEIGHTING_HYPERPARAMETERS = ("eta", "lookahead_lr", "update_interval", "alpha")


def checkpoint_config_differences(
    checkpoint_dir: str | os.PathLike, config: Any
) -> list[tuple[str, Any, Any]]:
    """Return (field, saved value, new value) for each model-shape field that `config` changes.

    `config` is the `PretrainedConfig` of the run that resumes. The checkpoint's weights load
    only into a model of the same type and sizes, so any difference makes resuming fail.
    Returns an empty list when the checkpoint has no config.json.
    """
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        return []
    saved = json.loads(path.read_text(encoding="utf-8"))
    new = config.to_dict()
    return [
        (name, saved[name], new[name])
        for name in MODEL_SHAPE_CONFIG_FIELDS
        if name in saved and name in new and saved[name] != new[name]
    ]


def checkpoint_weighting_state(checkpoint_dir: str | os.PathLike, state_name: str) -> dict[str, Any] | None:
    """Return the weighting strategy's saved state (`strategy`, hyperparameters, weights), or None."""
    path = Path(checkpoint_dir) / state_name
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("weighting")


def changed_weighting_settings(
    saved_state: dict[str, Any], new_state: dict[str, Any]
) -> list[tuple[str, Any, Any]]:
    """Return (hyperparameter, saved value, new value) for each weighting hyperparameter that changed.

    Both arguments are `TaskWeighting.state_dict()` results. A hyperparameter missing from
    either state is not compared.
    """
    return [
        (name, saved_state[name], new_state[name])
        for name in WEIGHTING_HYPERPARAMETERS
        if name in saved_state and name in new_state and saved_state[name] != new_state[name]
    ]
