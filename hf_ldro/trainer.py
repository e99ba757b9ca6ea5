"""LDROTrainer: a transformers.Trainer that weights per-task losses with a TaskWeighting strategy.

Objective: sum_i w_i l_i, where l_i is task i's token-weighted mean cross-entropy over the global
batch of one optimizer step (all ranks, all gradient-accumulation micro-batches) and w the weights
of the strategy. The weights change once per optimizer step, from the per-task losses of that step.

Only public extension points of the Trainer are used: `compute_loss`, `training_step`,
`get_batch_samples`, `get_train_dataloader`, `get_resumed_dataloader`, `evaluate`, `log`, `train`,
a callback, and `_save_checkpoint` (which calls the original first).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints, speed_metrics

from .arguments import LDROArguments, weighting_from_arguments
from .callbacks import TaskWeightUpdateCallback
from .checkpoints import (
    check_checkpoint_complete,
    checkpoint_global_step,
    discard_task_weight_records_after,
    last_complete_checkpoint,
    mark_checkpoint_complete,
    unmark_checkpoint,
)
from .distributed import all_reduce_sum, get_rank
from .interaction import GradientSketch, interaction_matrix
from .metrics import IGNORE_INDEX, language_metrics, per_example_loss_sums, per_task_sums
from .reporting import append_task_weights_line, model_card_section, write_json_atomic
from .task_gradients import (
    allocate_gradient_buffer,
    collect_task_gradients,
    gradient_dimension,
    select_parameters,
)
from .weighting import NonFiniteLossError, TaskWeighting

logger = logging.getLogger(__name__)

TASK_WEIGHTING_STATE_NAME = "task_weighting.json"
TRAIN_STREAM_STATE_PATTERN = "task_stream_state_rank{rank}.json"
TASK_WEIGHTS_LOG_NAME = "task_weights.jsonl"
MODEL_CARD_NAME = "README.md"
STATE_FORMAT_VERSION = 1


class NonFiniteTaskLossError(RuntimeError):
    """Training stopped because task losses were non-finite for too many consecutive steps."""


def infer_shift_labels(model: nn.Module, lm_objective: str = "auto") -> bool:
    """Return True when position t of the model's logits predicts label t + 1 (causal LM).

    `lm_objective` "causal" or "masked" decides directly; "auto" decides from the model class
    (transformers' causal-LM and masked-LM auto mappings, then the model's `loss_type`).
    """
    if lm_objective == "causal":
        return True
    if lm_objective == "masked":
        return False
    class_name = type(model).__name__
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return False
    if class_name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        return True
    if class_name in MODEL_FOR_MASKED_LM_MAPPING_NAMES.values():
        return False
    loss_type = getattr(model, "loss_type", None)
    if loss_type == "ForCausalLM":
        return True
    if loss_type == "ForMaskedLM":
        return False
    raise ValueError(
        f"Cannot tell whether {class_name} is a causal or a masked language model: set "
        "LDROArguments.lm_objective (or the trainer's lm_objective) to 'causal' or 'masked'."
    )


def _logits_of(outputs: Any) -> torch.Tensor:
    if isinstance(outputs, Mapping):
        return outputs["logits"]
    if hasattr(outputs, "logits"):
        return outputs.logits
    return outputs[0]


def _nan_to_none(values: Mapping[str, float]) -> dict[str, float | None]:
    return {key: (None if value != value else value) for key, value in values.items()}


class LDROTrainer(Trainer):
    """A drop-in `transformers.Trainer` for multitask (e.g. multilingual) language modelling.

    Each training example carries its task index in a batch column (`task_ids` by default). The
    trainer computes the per-token cross-entropy from the model's logits itself (the model is
    called without labels), sums it per task, and minimises sum_i w_i l_i with the strategy's
    weights. Static mixing (a strategy whose `sampling_probabilities` is not None) is already
    applied by the sampling when the training dataset samples tasks by probabilities, i.e. its
    `sampling_probabilities` attribute is not None (a `TaskStratifiedStream` in sampling mode).
    The objective is then the plain token-weighted mean over the batch. On any other dataset the
    static weights are loss weights.

    Args:
        model, args, *trainer_args, **trainer_kwargs: as for `transformers.Trainer`
            (`compute_loss_func` is not supported: the loss is the trainer's own).
        weighting: a `TaskWeighting` strategy; default one built from `ldro_args`.
        ldro_args: `LDROArguments`; default `LDROArguments()` (online L-DRO).
        task_names: the N task names, in task-index order; default `weighting.task_names`.
        task_column: batch column of task indices; default `ldro_args.task_column`.
        reference_perplexities: {language: perplexity} of reference models, for relative
            perplexity in `evaluate`.
        lm_objective: "causal", "masked" or "auto"; default `ldro_args.lm_objective`.
    """

    # The loss returned by compute_loss is already normalised by the token counts of the whole
    # optimizer step, so the Trainer must not divide it by the number of accumulation steps.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: nn.Module | None = None,
        args=None,
        *trainer_args,
        weighting: TaskWeighting | None = None,
        ldro_args: LDROArguments | None = None,
        task_names: Sequence[str] | None = None,
        task_column: str | None = None,
        reference_perplexities: Mapping[str, float] | None = None,
        lm_objective: str | None = None,
        **trainer_kwargs,
    ):
        if trainer_kwargs.get("compute_loss_func") is not None:
            raise ValueError(
                "LDROTrainer computes its own per-task loss: do not pass compute_loss_func."
            )
        self.ldro_args = ldro_args if ldro_args is not None else LDROArguments()
        if weighting is None:
            if task_names is None:
                raise ValueError("Pass task_names (one name per task index) or a weighting strategy.")
            weighting = weighting_from_arguments(self.ldro_args, list(task_names))
        elif task_names is not None and list(task_names) != weighting.task_names:
            raise ValueError(
                f"task_names {list(task_names)} differ from the weighting strategy's tasks "
                f"{weighting.task_names}: pass the same names in the same order."
            )
        self.weighting = weighting
        self.task_names = list(weighting.task_names)
        self.task_column = task_column or self.ldro_args.task_column
        self.reference_perplexities = (
            dict(reference_perplexities) if reference_perplexities is not None else None
        )
        self.lm_objective = lm_objective or self.ldro_args.lm_objective

        super().__init__(model, args, *trainer_args, **trainer_kwargs)
        self._warn_on_world_size_mismatch()

        # The model is called without labels, so transformers must not count items for it.
        self.model_accepts_loss_kwargs = False
        self._keep_task_column()
        self.add_callback(TaskWeightUpdateCallback(self))

        self._shift_labels: bool | None = None
        self._weights_on_device: torch.Tensor | None = None
        self._weighted_loss_active = False
        self._step_token_counts: torch.Tensor | None = None
        num_tasks = len(self.task_names)
        # Per-step statistics stay on the training device, so micro-batches never sync with the host.
        self._observed_sums = torch.zeros(num_tasks, dtype=self._statistics_dtype, device=self.args.device)
        self._observed_counts = torch.zeros(num_tasks, dtype=self._statistics_dtype, device=self.args.device)
        self._interval_sums = torch.zeros(num_tasks, dtype=torch.float64)
        self._interval_counts = torch.zeros(num_tasks, dtype=torch.float64)
        self.consecutive_nonfinite_steps = 0
        self._pending_stream_state: Any = None
        self._interaction_parameters: list | None = None
        self._gradient_buffer: torch.Tensor | None = None
        self._sketch = None
        self._interaction_refreshed_at: int | None = None
        self.interaction_refresh_count = 0
        self.last_eval_metrics: dict[str, Any] | None = None
        self._check_sampling_consistency()
        self._warn_if_steps_miss_tasks()

    # ---- configuration -------------------------------------------------------------------------

    def _warn_on_world_size_mismatch(self) -> None:
        # With transformers 5.25 on a machine without GPUs, torchrun processes each train alone
        # (world size 1) unless TrainingArguments(use_cpu=True) is set, and the Trainer says nothing.
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1 and self.args.world_size != launched:
            logger.warning(
                "The launcher started %d processes (WORLD_SIZE) but the Trainer runs with world "
                "size %d, so every process trains alone on the same data. On a CPU-only machine "
                "pass TrainingArguments(use_cpu=True).",
                launched,
                self.args.world_size,
            )

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def _statistics_dtype(self) -> torch.dtype:
        # Loss sums over many tokens need float64, which MPS devices do not support.
        return torch.float32 if self.args.device.type == "mps" else torch.float64

    @property
    def applies_weights_by_sampling(self) -> bool:
        """True when the strategy's weights are applied by the training data's sampling."""
        return (
            self.weighting.sampling_probabilities is not None
            and getattr(self.train_dataset, "sampling_probabilities", None) is not None
        )

    @property
    def shift_labels(self) -> bool:
        if self._shift_labels is None:
            self._shift_labels = infer_shift_labels(self.model, self.lm_objective)
        return self._shift_labels

    def _keep_task_column(self) -> None:
        # With remove_unused_columns=True (the transformers default) the Trainer drops every column
        # that the model's forward does not accept; registering the task column as a signature
        # column keeps it. compute_loss removes it before calling the model.
        self._set_signature_columns_if_needed()
        if self.task_column not in self._signature_columns:
            self._signature_columns.append(self.task_column)

    def _check_sampling_consistency(self) -> None:
        if not self.applies_weights_by_sampling:
            return
        expected = self.weighting.sampling_probabilities.to(torch.float64)
        actual = torch.as_tensor(self.train_dataset.sampling_probabilities, dtype=torch.float64)
        if actual.shape != expected.shape or not torch.allclose(actual, expected, atol=1e-6):
            logger.warning(
                "The training data samples tasks with probabilities %s but the %s strategy has "
                "weights %s; the objective is the plain token mean, so the data's probabilities "
                "are the ones in effect.",
                actual.tolist(),
                type(self.weighting).__name__,
                expected.tolist(),
            )

    def _warn_if_steps_miss_tasks(self) -> None:
        examples_per_step = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
        if examples_per_step < self.num_tasks:
            logger.warning(
                "An optimizer step has %d example(s) per device but there are %d tasks, so every "
                "step misses some tasks: a missing task keeps its last loss estimate, and an "
                "interaction refresh counts its gradient as zero. Raise "
                "per_device_train_batch_size or gradient_accumulation_steps to at least %d to see "
                "every task in every step.",
                examples_per_step,
                self.num_tasks,
                self.num_tasks,
            )

    # ---- data ----------------------------------------------------------------------------------

    def _uses_task_stream(self) -> bool:
        return self.train_dataset is not None and hasattr(self.train_dataset, "set_distributed")

    def get_train_dataloader(self) -> DataLoader:
        """Build the training DataLoader; a task stream gets a plain per-rank DataLoader.

        A dataset with `set_distributed(rank, world_size)` (such as `TaskStratifiedStream`) shards
        itself. It receives this process's rank and is read through a DataLoader with
        `num_workers=0` that is not passed to `accelerator.prepare`, because accelerate would shard
        or dispatch it again and read one batch ahead. That would put the stream's saved position
        one batch past the last trained batch. `training_step` moves the batches to the device. Any other dataset
        goes through `Trainer.get_train_dataloader`.
        """
        if not self._uses_task_stream():
            return super().get_train_dataloader()
        stream = self.train_dataset
        rank, world_size = self.args.process_index, self.args.world_size
        if getattr(stream, "examples_yielded", 0) == 0:
            stream.set_distributed(rank, world_size)
        elif (stream.rank, stream.world_size) != (rank, world_size):
            raise ValueError(
                f"The training stream was already read as rank {stream.rank} of "
                f"{stream.world_size}, but this process is rank {rank} of {world_size}: pass a "
                "new stream."
            )
        if self._pending_stream_state is not None:
            stream.load_state_dict(self._pending_stream_state)
            self._pending_stream_state = None
        return DataLoader(
            stream,
            batch_size=self._train_batch_size,
            collate_fn=self.data_collator,
            num_workers=0,
            pin_memory=self.args.dataloader_pin_memory,
        )

    def get_resumed_dataloader(self, dataloader: DataLoader, num_batches: int) -> DataLoader:
        """Skip already-trained batches on resume, except for a stream that restored its position."""
        if self._uses_task_stream():
            return dataloader
        return super().get_resumed_dataloader(dataloader, num_batches)

    def _to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return {
            key: value.to(self.args.device) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()
        }

    def _task_ids_of(self, batch: Mapping[str, Any], check_range: bool = True) -> torch.Tensor:
        """Return the batch's [B] task ids, raising a ValueError that explains what is wrong.

        `check_range=False` skips the range check, which reads the ids on the host.
        """
        if self.task_column not in batch:
            raise ValueError(
                f"The training batch has no {self.task_column!r} column (it has "
                f"{sorted(batch)}). LDROTrainer needs each example's task index (0..."
                f"{self.num_tasks - 1}, in the order {self.task_names}) in that column. Add it to "
                "the dataset or name your column with LDROArguments.task_column. If the dataset "
                "has it, the data collator dropped it: transformers' remove_unused_columns=True "
                "drops columns the model's forward does not accept (LDROTrainer keeps only the "
                "column named task_column), and a custom collator must pass it through."
            )
        task_ids = batch[self.task_column]
        if not isinstance(task_ids, torch.Tensor):
            task_ids = torch.as_tensor(task_ids)
        if task_ids.dim() == 2 and task_ids.shape[1] == 1:
            task_ids = task_ids[:, 0]
        if task_ids.dim() != 1:
            raise ValueError(
                f"Column {self.task_column!r} must hold one task index per example (shape [batch]), "
                f"got shape {tuple(task_ids.shape)}."
            )
        if task_ids.is_floating_point():
            raise ValueError(
                f"Column {self.task_column!r} must hold integer task indices, got {task_ids.dtype}."
            )
        if check_range and task_ids.numel():
            low, high = int(task_ids.min()), int(task_ids.max())
            if low < 0 or high >= self.num_tasks:
                bad = low if low < 0 else high
                raise ValueError(
                    f"Task id {bad} in column {self.task_column!r} is out of range: there are "
                    f"{self.num_tasks} tasks {self.task_names}, so ids must be in 0.."
                    f"{self.num_tasks - 1}."
                )
        return task_ids.long()

    def _labels_of(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if "labels" not in batch:
            raise ValueError(
                f"The batch has no 'labels' (it has {sorted(batch)}): LDROTrainer computes the "
                "per-task loss from labels. Use a collator that sets them, such as "
                "DataCollatorForLanguageModeling."
            )
        return batch["labels"]

    def _task_token_counts(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Count the labelled (predicted) tokens of each task in one micro-batch, on the device."""
        task_ids = self._task_ids_of(batch).to(self.args.device)
        labels = self._labels_of(batch).to(self.args.device)
        example_counts = self.example_target_counts(labels)
        counts = torch.zeros(self.num_tasks, dtype=torch.long, device=self.args.device)
        return counts.index_add(0, task_ids, example_counts)

    def example_target_counts(self, labels: torch.Tensor) -> torch.Tensor:
        """Return the [B] number of targets of each example: its labelled (predicted) tokens.

        Extension point for objectives other than language modelling; override it together with
        `example_loss_sums` (a classifier has one target per example, see
        `hf_ldro.vision.trainer`).
        """
        if self.shift_labels:
            labels = labels[:, 1:]
        return (labels != IGNORE_INDEX).sum(dim=1)

    def example_loss_sums(self, outputs: Any, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return each example's summed loss and number of targets, both [B], from the model outputs.

        Extension point for objectives other than language modelling. The model was called
        without labels and without the task column. The default sums the token cross-entropy of
        `outputs.logits` [B, T, V] against `labels` [B, T]; a task's loss is then
        sum(loss sums) / sum(targets) over its examples.
        """
        return per_example_loss_sums(_logits_of(outputs), labels, self.shift_labels)

    # ---- loss ----------------------------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Fetch the micro-batches of one optimizer step and count their tokens per task.

        The per-task token counts of the whole step (all micro-batches, all ranks) normalise every
        micro-batch's loss, so gradient accumulation over micro-batches of size B gives the same
        gradient as one batch of the same examples.
        """
        batch_samples, num_items_in_batch = super().get_batch_samples(
            epoch_iterator, num_batches, device
        )
        counts = torch.zeros(self.num_tasks, dtype=torch.long, device=self.args.device)
        for batch in batch_samples:
            counts += self._task_token_counts(batch)
        self._step_token_counts = all_reduce_sum(counts)
        return batch_samples, num_items_in_batch

    def _forward_loss_sums(
        self, model: nn.Module, inputs: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Run the model without labels; return per-example (loss sums, token counts) and outputs."""
        model_inputs = dict(inputs)
        model_inputs.pop(self.task_column, None)
        labels = self._labels_of(model_inputs)
        del model_inputs["labels"]
        outputs = model(**model_inputs)
        loss_sums, token_counts = self.example_loss_sums(outputs, labels)
        return loss_sums, token_counts, outputs

    def _loss_weights(self, device: torch.device) -> torch.Tensor:
        if self._weights_on_device is None or self._weights_on_device.device != device:
            self._weights_on_device = self.weighting.weights.to(device=device, dtype=torch.float32)
        return self._weights_on_device

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Return the weighted task loss during training, the token-mean loss otherwise.

        During `training_step` the returned loss is world_size * sum_i w_i * s_i / C_i, with s_i
        this rank's loss sum of task i in this micro-batch, C_i task i's token count over the
        whole optimizer step on all ranks, and w renormalised over the tasks with C_i > 0. DDP
        averages gradients over ranks and the Trainer sums them over micro-batches, so the applied
        gradient is that of sum_i w_i l_i over the global batch of the step.
        `num_items_in_batch` is ignored.
        """
        loss_sums, token_counts, outputs = self._forward_loss_sums(model, inputs)
        if not self._weighted_loss_active:
            loss = loss_sums.sum() / token_counts.sum().clamp_min(1)
            return (loss, outputs) if return_outputs else loss

        # get_batch_samples already checked the task ids of this step's micro-batches.
        task_ids = self._task_ids_of(inputs, check_range=self._step_token_counts is None)
        task_ids = task_ids.to(loss_sums.device)
        task_loss_sums, task_token_counts = per_task_sums(
            loss_sums, token_counts, task_ids, self.num_tasks
        )
        self._observed_sums += task_loss_sums.detach().to(self._statistics_dtype)
        self._observed_counts += task_token_counts.to(self._statistics_dtype)

        step_counts = self._step_token_counts
        if step_counts is None:
            # training_step was called without get_batch_samples (e.g. directly by a user):
            # normalise by this micro-batch's global counts.
            step_counts = all_reduce_sum(task_token_counts.clone())
        step_counts = step_counts.to(loss_sums.device)

        world_size = self.args.world_size
        if self.applies_weights_by_sampling:
            loss = world_size * task_loss_sums.sum() / step_counts.sum().clamp_min(1)
        else:
            # Weights are renormalised over the tasks present in the step, so a step that misses
            # a task keeps the scale of the loss (and so the effective learning rate).
            weights = self._loss_weights(loss_sums.device) * (step_counts > 0)
            weights = weights / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)
            loss = world_size * (weights * task_loss_sums / step_counts.clamp_min(1)).sum()
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Refresh the interaction matrix when due, then run the Trainer's step with the task loss."""
        if self._interaction_due():
            self.refresh_interaction(model, inputs)
        self._weighted_loss_active = True
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            self._weighted_loss_active = False

    # ---- weight update (called by TaskWeightUpdateCallback) ------------------------------------

    def finish_optimizer_step(self) -> None:
        """Update the weights from the task losses of the optimizer step that just ended.

        The per-task (loss sum, token count) observed on this rank are all-reduced, so every rank
        computes the same weights. A task absent from the whole step keeps its loss estimate. A
        non-finite loss skips the update and logs a warning; after
        `ldro_args.max_consecutive_nonfinite` such steps in a row, training stops with
        `NonFiniteTaskLossError`.
        """
        statistics = all_reduce_sum(torch.cat([self._observed_sums, self._observed_counts]))
        statistics = statistics.cpu().double()
        sums, counts = statistics[: self.num_tasks], statistics[self.num_tasks :]
        self._observed_sums.zero_()
        self._observed_counts.zero_()
        self._step_token_counts = None

        present = counts > 0
        losses = torch.where(present, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))
        self._interval_sums += sums
        self._interval_counts += counts

        step = self.state.global_step
        try:
            self.weighting.update(losses, present)
        except NonFiniteLossError as error:
            self.consecutive_nonfinite_steps += 1
            limit = self.ldro_args.max_consecutive_nonfinite
            bad_tasks = [
                name
                for name, loss, seen in zip(self.task_names, losses.tolist(), present.tolist())
                if seen and not torch.isfinite(torch.tensor(loss))
            ]
            logger.warning(
                "Step %d: non-finite loss for task(s) %s, task weights not updated "
                "(%d consecutive step(s), limit %d). %s",
                step,
                bad_tasks,
                self.consecutive_nonfinite_steps,
                limit,
                error,
            )
            if self.consecutive_nonfinite_steps >= limit:
                raise NonFiniteTaskLossError(
                    f"Training stopped at step {step}: the loss of task(s) {bad_tasks} was NaN or "
                    f"infinite for {self.consecutive_nonfinite_steps} consecutive optimizer steps "
                    "(LDROArguments.max_consecutive_nonfinite). Lower the learning rate, check "
                    "these tasks' data, or resume from an earlier checkpoint."
                ) from error
            return
        self.consecutive_nonfinite_steps = 0
        self._weights_on_device = None

    # ---- interaction matrix --------------------------------------------------------------------

    def _interaction_due(self) -> bool:
        if not getattr(self.weighting, "requires_interaction", False):
            return False
        step = self.state.global_step
        interval = max(1, int(getattr(self.weighting, "interaction_interval", 0) or 1))
        return step % interval == 0 and self._interaction_refreshed_at != step

    def _global_task_loss_fn(self, global_token_counts: torch.Tensor):
        """Return a loss function that divides a task's loss sum by its token count on all ranks.

        Summed over ranks, the gradients of these losses are exactly the gradients of each task's
        token-weighted mean over the global micro-batch, as one process would compute them.
        """

        def task_loss(model: nn.Module, sub_batch: Mapping[str, Any]) -> torch.Tensor:
            # Every example of the sub-batch has the same task id; indexing with a tensor keeps
            # the count on the device.
            task = sub_batch[self.task_column][0]
            with self.compute_loss_context_manager():
                loss_sums, _, _ = self._forward_loss_sums(model, sub_batch)
            return loss_sums.sum() / global_token_counts[task].clamp_min(1)

        return task_loss

    def _prepare_interaction(self) -> None:
        if self._interaction_parameters is not None:
            return
        args = self.ldro_args
        self._interaction_parameters = select_parameters(self.model, args.interaction_parameters)
        dim = gradient_dimension(param for _, param in self._interaction_parameters)
        device = args.gradient_buffer_device or self.args.device
        if args.sketch_dim > 0:
            self._sketch = GradientSketch(dim, args.sketch_dim, args.sketch_seed, args.buffer_dtype)
            dim = args.sketch_dim
        self._gradient_buffer = allocate_gradient_buffer(
            self.num_tasks, dim, dtype=args.buffer_dtype, device=device
        )
        logger.info(
            "Interaction matrix from %d parameter tensors (%d entries per task%s), buffer %s on %s.",
            len(self._interaction_parameters),
            gradient_dimension(param for _, param in self._interaction_parameters),
            f", sketched to {args.sketch_dim}" if args.sketch_dim > 0 else "",
            args.gradient_buffer_dtype,
            device,
        )

    def refresh_interaction(self, model: nn.Module, inputs: Mapping[str, Any]) -> None:
        """Recompute the interaction matrix from per-task gradients on this micro-batch.

        Each task's gradient comes from a forward and backward pass on that task's examples of
        `inputs` only; the parameters' `.grad` are not touched.
        """
        self._prepare_interaction()
        batch = self._to_device(inputs)
        task_ids = self._task_ids_of(batch)
        # The task column stays in the batch: each task's sub-batch carries its task id to the
        # loss function, and _forward_loss_sums drops it before calling the model.
        global_token_counts = all_reduce_sum(self._task_token_counts(batch))
        model.train()
        grads, present = collect_task_gradients(
            model,
            batch,
            task_ids,
            self.num_tasks,
            self._global_task_loss_fn(global_token_counts),
            self._interaction_parameters,
            buffer=self._gradient_buffer,
            sketch=self._sketch,
            return_present=True,
            average_over_ranks=False,
        )
        # The buffer goes in as stored: the Gram matrix is accumulated in chunks, so a bfloat16
        # buffer is never copied to float32 in full. A_ii = ||g_i||, so the diagonal gives the norms.
        matrix = interaction_matrix(grads)
        zero_gradient = [
            name
            for name, seen, norm in zip(self.task_names, present.tolist(), torch.diagonal(matrix).tolist())
            if seen and norm == 0
        ]
        if zero_gradient:
            logger.info(
                "Step %d: tasks %s have a zero gradient (converged, or no trainable parameter "
                "affects them); their interaction entries are 0.",
                self.state.global_step,
                zero_gradient,
            )
        if not bool(present.all()):
            absent = [name for name, seen in zip(self.task_names, present.tolist()) if not seen]
            # A task whose row of A stays zero keeps its stale loss and can stay the worst task,
            # so its weight stops moving without any error.
            logger.warning(
                "Step %d: tasks %s are absent from the interaction batch; their gradients count "
                "as zero in this refresh, so their L-DRO weights can stop moving. Use batches "
                "that hold every task (e.g. TaskStratifiedStream) or a batch size >= the number "
                "of tasks (%d). With fewer examples than tasks the stratified stream rotates "
                "tasks across batches, and an update interval that is a multiple of the rotation "
                "period misses the same tasks at every refresh.",
                self.state.global_step,
                absent,
                self.num_tasks,
            )
        self.weighting.set_interaction(matrix.cpu())
        self._interaction_refreshed_at = self.state.global_step
        self.interaction_refresh_count += 1

    # ---- logging -------------------------------------------------------------------------------

    def task_log_values(self) -> tuple[dict[str, float], dict[str, float]]:
        """Return the current weights and the token-weighted task losses since the last log.

        A task without tokens since the last log reports its last loss estimate (NaN if never seen).
        """
        weights = self.weighting.weight_dict()
        estimates = self.weighting.loss_estimates
        losses = {}
        for index, name in enumerate(self.task_names):
            count = float(self._interval_counts[index])
            if count > 0:
                losses[name] = float(self._interval_sums[index]) / count
            else:
                losses[name] = float(estimates[index])
        return weights, losses

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add `task_weight/<task>` and `task_loss/<task>` to every training log.

        On the main process the same values also go to `<output_dir>/task_weights.jsonl`.
        """
        if "loss" in logs and self.is_in_train:
            weights, losses = self.task_log_values()
            logs = dict(logs)
            for name in self.task_names:
                logs[f"task_weight/{name}"] = weights[name]
                if losses[name] == losses[name]:
                    logs[f"task_loss/{name}"] = losses[name]
            if self.is_world_process_zero():
                append_task_weights_line(
                    os.path.join(self.args.output_dir, TASK_WEIGHTS_LOG_NAME),
                    self.state.global_step,
                    weights,
                    _nan_to_none(losses),
                )
            self._interval_sums.zero_()
            self._interval_counts.zero_()
        super().log(logs, start_time)

    # ---- evaluation ----------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Evaluate; a dict of per-language sets gets per-language loss and perplexity metrics.

        For a dict {language: dataset}, returns for every language `<prefix>_<language>_loss`
        (token-weighted over the whole set) and `<prefix>_<language>_perplexity`, plus
        `<prefix>_loss`, `<prefix>_avg_perplexity`, `<prefix>_worst_perplexity`,
        `<prefix>_worst_language`, and relative perplexities when `reference_perplexities` was
        given (see `hf_ldro.metrics.language_metrics`). A single dataset goes to
        `Trainer.evaluate`.
        """
        datasets_by_language = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(datasets_by_language, Mapping):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

        start_time = time.time()
        loss_sums: dict[str, float] = {}
        token_counts: dict[str, int] = {}
        num_examples = 0
        for language, dataset in datasets_by_language.items():
            loss_sum, token_count, examples = self._evaluate_loss_sum(dataset)
            if examples == 0:
                raise ValueError(
                    f"Evaluation set {language!r} yielded no example: it is empty, or smaller "
                    f"than per_device_eval_batch_size={self.args.per_device_eval_batch_size} "
                    "with dataloader_drop_last=True."
                )
            loss_sums[language] = loss_sum
            token_counts[language] = token_count
            num_examples += examples

        metrics: dict[str, Any] = language_metrics(
            loss_sums, token_counts, self.reference_perplexities, prefix=metric_key_prefix
        )
        total_batch_size = self.args.eval_batch_size * self.args.world_size
        metrics.update(
            speed_metrics(
                metric_key_prefix,
                start_time,
                num_samples=num_examples,
                num_steps=-(-num_examples // total_batch_size),
            )
        )
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self.last_eval_metrics = dict(metrics)
        return metrics

    def _evaluate_loss_sum(self, dataset) -> tuple[float, int, int]:
        """Return (summed cross-entropy, labelled tokens, examples) of `dataset` over all ranks."""
        dataloader = self.get_eval_dataloader(dataset)
        model = self.model_wrapped
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), dtype=self._statistics_dtype, device=self.args.device)
        token_count = torch.zeros((), dtype=torch.long, device=self.args.device)
        num_examples = 0
        with torch.no_grad():
            for batch in dataloader:
                batch = self._to_device(batch)
                with self.autocast_smart_context_manager():
                    example_sums, example_counts, _ = self._forward_loss_sums(model, batch)
                # gather_for_metrics drops the examples that accelerate duplicates to even out
                # the last batch across ranks, so no token is counted twice.
                example_sums, example_counts = self.accelerator.gather_for_metrics(
                    (example_sums.to(self._statistics_dtype), example_counts)
                )
                loss_sum += example_sums.sum()
                token_count += example_counts.sum()
                num_examples += int(example_counts.shape[0])
        model.train(was_training)
        return float(loss_sum), int(token_count), num_examples

    # ---- model card ----------------------------------------------------------------------------

    def create_model_card(self, *args, **kwargs) -> None:
        """Write transformers' model card, then append the task-weighting section.

        The section lists the method, its options, the final task weights and, after a
        per-language `evaluate`, the absolute and relative perplexity table with its average and
        worst rows (`hf_ldro.reporting.model_card_section`). `push_to_hub` calls this method, so
        the uploaded card has the section too.
        """
        super().create_model_card(*args, **kwargs)
        if not self.is_world_process_zero():
            return
        section = model_card_section(
            self.ldro_args.method,
            self.ldro_args.to_dict(),
            self.weighting.weight_dict(),
            self.last_eval_metrics,
        )
        with open(os.path.join(self.args.output_dir, MODEL_CARD_NAME), "a", encoding="utf-8") as card:
            card.write("\n" + section)

    # ---- checkpoints ---------------------------------------------------------------------------

    def task_weighting_state(self) -> dict[str, Any]:
        """Return the JSON-serialisable state saved in every checkpoint folder."""
        return {
            "format_version": STATE_FORMAT_VERSION,
            "task_names": list(self.task_names),
            "weighting": self.weighting.state_dict(),
            "consecutive_nonfinite_steps": self.consecutive_nonfinite_steps,
            "global_step": self.state.global_step,
            # Task losses accumulated since the last log, so the first log after a resume
            # reports the same values as an uninterrupted run.
            "interval_loss_sums": self._interval_sums.tolist(),
            "interval_token_counts": self._interval_counts.tolist(),
        }

    def save_task_weighting_state(self, checkpoint_dir: str) -> None:
        """Write the weighting state (main process) and each rank's stream state, atomically."""
        os.makedirs(checkpoint_dir, exist_ok=True)
        if self.is_world_process_zero():
            write_json_atomic(
                os.path.join(checkpoint_dir, TASK_WEIGHTING_STATE_NAME), self.task_weighting_state()
            )
        if self._uses_task_stream() and hasattr(self.train_dataset, "state_dict"):
            stream_path = os.path.join(
                checkpoint_dir, TRAIN_STREAM_STATE_PATTERN.format(rank=get_rank())
            )
            write_json_atomic(stream_path, self.train_dataset.state_dict())

    def load_task_weighting_state(self, checkpoint_dir: str) -> None:
        """Restore the weights, loss estimates, interaction matrix and stream position.

        Raises:
            FileNotFoundError: the checkpoint has no task-weighting state.
            ValueError: the checkpoint was written for another task list or strategy.
        """
        path = os.path.join(checkpoint_dir, TASK_WEIGHTING_STATE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: {checkpoint_dir} was not written by LDROTrainer, so the task "
                "weights cannot be restored. Resume from an LDROTrainer checkpoint."
            )
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        saved_tasks = list(state.get("task_names", []))
        if saved_tasks != self.task_names:
            raise ValueError(
                f"{path} was saved for tasks {saved_tasks} but this trainer has tasks "
                f"{self.task_names}: resume with the same task list, in the same order."
            )
        self.weighting.load_state_dict(state["weighting"])
        self.consecutive_nonfinite_steps = int(state.get("consecutive_nonfinite_steps", 0))
        if "interval_loss_sums" in state:
            self._interval_sums = torch.tensor(state["interval_loss_sums"], dtype=torch.float64)
            self._interval_counts = torch.tensor(state["interval_token_counts"], dtype=torch.float64)
        self._weights_on_device = None

        if self._uses_task_stream() and hasattr(self.train_dataset, "load_state_dict"):
            if self.args.ignore_data_skip:
                logger.info("ignore_data_skip is set: the training stream restarts from its start.")
                return
            stream_path = os.path.join(
                checkpoint_dir, TRAIN_STREAM_STATE_PATTERN.format(rank=self.args.process_index)
            )
            if not os.path.isfile(stream_path):
                raise FileNotFoundError(
                    f"{stream_path} not found: the checkpoint has no stream position for rank "
                    f"{self.args.process_index} (was it written with another number of processes?). "
                    "Resume with the same number of processes, or set ignore_data_skip=True to "
                    "restart the stream."
                )
            with open(stream_path, encoding="utf-8") as handle:
                self._pending_stream_state = json.load(handle)

    def _save_checkpoint(self, model, trial):
        """Save the Trainer's checkpoint and the task-weighting state, then mark it complete.

        transformers deletes old checkpoints (save_total_limit) at the end of its own save, before
        the task-weighting files and the completion marker exist; that deletion is deferred until
        the new checkpoint is marked complete, so a kill at any moment leaves a complete one.
        """
        run_dir = self._get_output_dir(trial=trial)
        checkpoint_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save:
            unmark_checkpoint(checkpoint_dir)
        save_total_limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = save_total_limit
        self.save_task_weighting_state(checkpoint_dir)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            mark_checkpoint_complete(checkpoint_dir, self.state.global_step)
            if self.consecutive_nonfinite_steps > 0:
                # The weights may already be NaN: deleting older checkpoints could remove the
                # last one trained on finite losses.
                logger.warning(
                    "Saved %s after %d step(s) with non-finite task losses; older checkpoints are "
                    "kept (save_total_limit is not applied) so that the last finite one survives.",
                    checkpoint_dir,
                    self.consecutive_nonfinite_steps,
                )
                return
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Train; on resume, first restore the task-weighting state of the checkpoint.

        `resume_from_checkpoint=True` picks the last complete checkpoint of `output_dir` (see
        `hf_ldro.checkpoints`), skipping folders whose saving was interrupted; a path must name a
        complete checkpoint. Records of `task_weights.jsonl` logged after the starting step
        (by an interrupted run, or by an earlier run in the same folder) are dropped.

        Raises:
            IncompleteCheckpointError: the checkpoint folder is incomplete.
            ValueError: the checkpoint was written for another task list or strategy.
        """
        checkpoint = resume_from_checkpoint
        if isinstance(checkpoint, bool):
            checkpoint = last_complete_checkpoint(self.args.output_dir) if checkpoint else None
            if resume_from_checkpoint and checkpoint is None:
                raise ValueError(
                    f"No complete checkpoint found in {self.args.output_dir} to resume from: "
                    "train without resume_from_checkpoint."
                )
        start_step = 0
        if checkpoint is not None:
            check_checkpoint_complete(checkpoint)
            self.load_task_weighting_state(checkpoint)
            start_step = checkpoint_global_step(checkpoint)
        if self.is_world_process_zero():
            discard_task_weight_records_after(
                os.path.join(self.args.output_dir, TASK_WEIGHTS_LOG_NAME), start_step
            )
        return super().train(
            resume_from_checkpoint=checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )
