"""Task-weight logs, plots, result tables and model-card text."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Mapping


def write_json_atomic(path: str, payload: Any) -> None:
    """Write `payload` as JSON to `path` through a temporary file and os.replace.

    A reader (or a resume after a crash) sees either the old file or the complete new one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, indent=2, allow_nan=False)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def append_task_weights_line(
    path: str,
    step: int,
    weights: Mapping[str, float],
    losses: Mapping[str, float | None],
) -> None:
    """Append one `{"step", "weights", "losses"}` JSON line to `path` (non-finite losses as null)."""
    record = {
        "step": int(step),
        "weights": {name: float(value) for name, value in weights.items()},
        "losses": {name: _finite_or_none(value) for name, value in losses.items()},
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record, allow_nan=False) + "\n")


def read_task_weights(path: str) -> list[dict[str, Any]]:
    """Read a task_weights.jsonl file into a list of records, raising on a malformed line."""
    records = []
    with open(path, encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: invalid JSON ({error}).") from error
            for key in ("step", "weights", "losses"):
                if key not in record:
                    raise ValueError(f"{path}:{line_number}: record has no {key!r} field.")
            records.append(record)
    return records
