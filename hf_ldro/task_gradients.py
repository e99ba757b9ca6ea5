"""Per-task gradients from one batch, for interaction matrices and gradient-surgery methods.

Task i's gradient is computed on task i's share of the batch only (one forward and one backward
per task present), so collecting all N gradients costs about one training step of arithmetic, not
N. The gradients go into a separate (N x d) buffer through `torch.autograd.grad`, so the
parameters' `.grad` fields are never read or written and gradient accumulation in progress is
left as it was.
"""

from __future__ import annotations

import contextlib
import re
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .distributed import all_reduce_sum, is_distributed

TaskLossFn = Callable[[nn.Module, dict], torch.Tensor]


class Sketch(Protocol):
    """A fixed linear map R^d -> R^r applied to a flat gradient (for example a random projection)."""

    dim_out: int

    def project(self, flat: torch.Tensor) -> torch.Tensor: ...


def select_parameters(
    model: nn.Module, name_pattern: str | None = None
) -> list[tuple[str, nn.Parameter]]:
    """Return the trainable (name, parameter) pairs whose name matches `name_pattern` (re.search).

    None selects every trainable parameter. Parameters shared between modules appear once.

    Raises:
        ValueError: no trainable parameter matches; the message lists some parameter names.
    """
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    if name_pattern is not None:
        pattern = re.compile(name_pattern)
        selected = [(name, param) for name, param in named if pattern.search(name)]
    else:
        selected = named
    if not selected:
        examples = ", ".join(name for name, _ in named[:8])
        raise ValueError(
            f"No trainable parameter name matches {name_pattern!r}. Parameter names look like: "
            f"{examples}. Fix the regular expression (it is applied with re.search)."
        )
    return selected


def gradient_dimension(parameters: Iterable[torch.Tensor]) -> int:
    """Return the total number of entries of `parameters` (d of the flat gradient)."""
    return sum(param.numel() for param in parameters)


def allocate_gradient_buffer(
    num_tasks: int,
    dim: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Allocate the zeroed (num_tasks x dim) buffer that `collect_task_gradients` fills."""
    return torch.zeros(num_tasks, dim, dtype=dtype, device=device)


def _task_sub_batch(batch: Mapping[str, object], mask: torch.Tensor) -> dict:
    batch_size = mask.shape[0]
    sub_batch = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch_size:
            sub_batch[key] = value[mask]
        else:
            sub_batch[key] = value
    return sub_batch


def _write_flat(row: torch.Tensor, grads_and_sizes: Sequence[tuple[torch.Tensor | None, int]]) -> None:
    offset = 0
    for grad_or_none, size in grads_and_sizes:
        if grad_or_none is None:
            row[offset : offset + size].zero_()
        else:
            row[offset : offset + size].copy_(grad_or_none.reshape(-1))
        offset += size


def _all_reduce_rows(buffer: torch.Tensor, staging_device: torch.device) -> None:
    """Sum `buffer` over ranks, one row at a time through `staging_device` if the backend needs it."""
    if not is_distributed():
        return
    backend = dist.get_backend()
    if backend == "nccl" and buffer.device.type != "cuda":
        for row in buffer:
            staged = row.to(staging_device)
            all_reduce_sum(staged)
            row.copy_(staged)
    else:
        all_reduce_sum(buffer)


def collect_task_gradients(
    model: nn.Module,
    batch: Mapping[str, object],
    task_ids: torch.Tensor,
    num_tasks: int,
    loss_fn: TaskLossFn,
    parameters: Sequence[torch.Tensor] | Sequence[tuple[str, torch.Tensor]],
    buffer: torch.Tensor | None = None,
    sketch: Sketch | None = None,
    return_present: bool = False,
    average_over_ranks: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Compute each task's gradient of `loss_fn` on that task's examples of `batch`.

    For every task present in `task_ids`, runs `loss_fn(model, sub_batch)` on the examples of that
    task and differentiates it with `torch.autograd.grad` with respect to `parameters`. The
    sub-batch indexes every tensor of `batch` whose first dimension is the batch size, and passes
    other values through.
    When `model` has `no_sync` (DistributedDataParallel), the forward passes run under it so DDP
    neither expects nor triggers a gradient all-reduce. Parameters that do not take part in the
    loss get a zero gradient.

    With several ranks, rows are summed over ranks and, with `average_over_ranks`, divided by the
    number of ranks on which the task was present, so every rank returns the same matrix. A
    `loss_fn` that divides each task's loss sum by the task's token count over all ranks passes
    `average_over_ranks=False`: the summed row is then exactly the gradient of the task's mean
    loss over the global batch. With a `sketch`, each flat gradient is projected before the
    all-reduce, so the traffic is N x r instead of N x d.

    Args:
        model: the (possibly DDP-wrapped) model, in the mode the caller wants (usually train).
        batch: model inputs with the batch dimension first; must not contain the task column.
        task_ids: [B] task index of each example, in 0 .. num_tasks - 1.
        num_tasks: N.
        loss_fn: returns the scalar loss of a sub-batch (for example its token-weighted mean).
        parameters: the parameters to differentiate, or (name, parameter) pairs from
            `select_parameters`.
        buffer: optional preallocated [N, d] (or [N, r] with a sketch) tensor to fill; its dtype and
            device set those of the result. Default a new float32 buffer on the parameters' device.
        sketch: optional object with `dim_out` and `project(flat[d]) -> [r]`.
        return_present: also return the bool [N] mask of tasks present on at least one rank.
        average_over_ranks: divide each summed row by the number of ranks where the task is
            present (True) or keep the sum over ranks (False).

    Returns:
        The [N, d] or [N, r] gradient matrix (rows of absent tasks are zero), and with
        `return_present` the presence mask.
    """
    params = [item[1] if isinstance(item, tuple) else item for item in parameters]
    if not params:
        raise ValueError("parameters is empty: select at least one parameter to differentiate.")
    task_ids = task_ids.reshape(-1)
    if task_ids.numel() and (int(task_ids.min()) < 0 or int(task_ids.max()) >= num_tasks):
        raise ValueError(
            f"task ids must be in 0..{num_tasks - 1}, got values in "
            f"{int(task_ids.min())}..{int(task_ids.max())}."
        )
    sizes = [param.numel() for param in params]
    dim = sum(sizes)
    out_dim = int(sketch.dim_out) if sketch is not None else dim
    param_device = params[0].device
    if buffer is None:
        buffer = allocate_gradient_buffer(num_tasks, out_dim, device=param_device)
    elif tuple(buffer.shape) != (num_tasks, out_dim):
        raise ValueError(
            f"buffer has shape {tuple(buffer.shape)} but {num_tasks} tasks x {out_dim} "
            f"{'sketch dimensions' if sketch is not None else 'parameter entries'} are needed."
        )
    buffer.zero_()
    flat = torch.empty(dim, dtype=torch.float32, device=param_device) if sketch is not None else None

    present = torch.zeros(num_tasks, dtype=torch.float32, device=param_device)
    no_sync = getattr(model, "no_sync", None)
    sync_context = no_sync() if callable(no_sync) else contextlib.nullcontext()
    with sync_context:
        for task in torch.unique(task_ids).tolist():
            sub_batch = _task_sub_batch(batch, task_ids == task)
            loss = loss_fn(model, sub_batch)
            if not loss.requires_grad:
                raise ValueError(
                    f"The loss of task {task} does not require grad: call collect_task_gradients "
                    "outside torch.no_grad() and with trainable parameters."
                )
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            if sketch is None:
                _write_flat(buffer[task], list(zip(grads, sizes)))
            else:
                _write_flat(flat, list(zip(grads, sizes)))
                buffer[task].copy_(sketch.project(flat).reshape(-1))
            present[task] = 1.0

    _all_reduce_rows(buffer, param_device)
    all_reduce_sum(present)
    if average_over_ranks:
        buffer.div_(present.clamp_min(1.0).to(buffer.device, buffer.dtype).unsqueeze(1))
    if return_present:
        return buffer, present > 0
    return buffer
