"""Per-task gradients and interaction-matrix refreshes in LDROTrainer."""

from __future__ import annotations

import pytest
import torch
from transformers import default_data_collator

from hf_ldro.arguments import LDROArguments
from hf_ldro.task_gradients import collect_task_gradients, select_parameters
from hf_ldro.trainer import LDROTrainer
from hf_ldro.weighting import TaskWeighting
from test_trainer_data import LANGUAGES, language_dataset, tiny_gpt2, training_arguments


class RecordingInteractionWeighting(TaskWeighting):
    """Uniform weights; records every interaction matrix it receives."""

    requires_interaction = True

    def __init__(self, task_names, interval):
        super().__init__(task_names)
        self.interaction_interval = interval
        self.matrices = []

    def set_interaction(self, matrix):
        self.matrices.append(torch.as_tensor(matrix).clone())

    def _compute_weights(self, loss_estimates):
        return self._weights


@pytest.fixture(scope="module")
def train_dataset():
    return language_dataset(LANGUAGES, "train", blocks_per_language=8, masked_prefix=True)


def make_trainer(tmp_path, train_dataset, interval=2, ldro_args=None, **overrides):
    weighting = RecordingInteractionWeighting(LANGUAGES, interval)
    return LDROTrainer(
        tiny_gpt2(),
        training_arguments(tmp_path, **overrides),
        data_collator=default_data_collator,
        train_dataset=train_dataset,
        weighting=weighting,
        ldro_args=ldro_args,
    )


def first_batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def manual_gradients(model, batch, parameters):
    """Per-task gradients from transformers' own loss on each task's examples."""
    rows = []
    for task in range(len(LANGUAGES)):
        mask = batch["task_ids"] == task
        loss = model(input_ids=batch["input_ids"][mask], labels=batch["labels"][mask]).loss
        grads = torch.autograd.grad(loss, parameters)
        rows.append(torch.cat([grad.reshape(-1) for grad in grads]))
    return torch.stack(rows)


def test_refresh_every_k_steps_and_first(tmp_path, train_dataset):
    trainer = make_trainer(tmp_path, train_dataset, interval=2, max_steps=5)
    trainer.train()

    assert trainer.interaction_refresh_count == 3
    assert len(trainer.weighting.matrices) == 3


def test_refresh_with_accumulation_happens_once_per_step(tmp_path, train_dataset):
    trainer = make_trainer(
        tmp_path, train_dataset, interval=1, max_steps=2, per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
    )
    trainer.train()

    assert trainer.interaction_refresh_count == 2


def test_refresh_leaves_grad_unchanged(tmp_path, train_dataset):
    trainer = make_trainer(tmp_path, train_dataset)
    batch = first_batch(trainer)
    model = trainer.model
    torch.manual_seed(1)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    before = [param.grad.clone() for param in model.parameters()]
    trainer.refresh_interaction(model, batch)

    for (name, param), grad in zip(model.named_parameters(), before):
        assert torch.equal(param.grad, grad), name


def test_refresh_costs_one_forward_per_task_share(tmp_path, train_dataset):
    trainer = make_trainer(tmp_path, train_dataset)
    batch = first_batch(trainer)
    forward_sizes = []
    handle = trainer.model.register_forward_pre_hook(
        lambda module, args, kwargs: forward_sizes.append(kwargs["input_ids"].shape[0]),
        with_kwargs=True,
    )
    trainer.refresh_interaction(trainer.model, batch)
    handle.remove()
    expected = torch.bincount(batch["task_ids"], minlength=len(LANGUAGES))
    expected = sorted(int(count) for count in expected if count > 0)

    assert sorted(forward_sizes) == expected


def test_interaction_matrix_matches_manual_gradients(tmp_path, train_dataset):
    trainer = make_trainer(tmp_path, train_dataset)
    batch = first_batch(trainer)
    trainer.refresh_interaction(trainer.model, batch)
    parameters = [param for param in trainer.model.parameters() if param.requires_grad]
    # GPT-2 ties lm_head to the input embedding: named_parameters lists the shared tensor once.
    grads = manual_gradients(trainer.model, batch, parameters)
    norms = grads.norm(dim=1)
    expected = (grads @ grads.T) / norms

    assert torch.allclose(trainer.weighting.matrices[-1], expected, rtol=1e-4, atol=1e-6)


def test_parameter_subset_and_buffer_options(tmp_path, train_dataset):
    ldro_args = LDROArguments(
        method="dro", interaction_parameters=r"^transformer\.h\.1\.", gradient_buffer_dtype="bfloat16",
        gradient_buffer_device="cpu",
    )
    trainer = make_trainer(tmp_path, train_dataset, ldro_args=ldro_args)
    trainer.refresh_interaction(trainer.model, first_batch(trainer))
    expected_dim = sum(
        param.numel() for name, param in trainer.model.named_parameters() if name.startswith("transformer.h.1.")
    )

    assert trainer._gradient_buffer.shape == (len(LANGUAGES), expected_dim)
    assert trainer._gradient_buffer.dtype == torch.bfloat16
    assert all(name.startswith("transformer.h.1.") for name, _ in trainer._interaction_parameters)


def test_parameter_regex_without_match_is_rejected():
    with pytest.raises(ValueError, match="No trainable parameter name matches 'nothing'"):
        select_parameters(tiny_gpt2(), "nothing")


def test_absent_task_gets_zero_row(train_dataset):
    model = tiny_gpt2()
    rows = train_dataset.select(range(3))
    batch = default_data_collator([rows[i] for i in range(3)])
    task_ids = batch.pop("task_ids")

    def loss_fn(module, sub_batch):
        return module(**sub_batch).loss

    grads, present = collect_task_gradients(
        model, batch, task_ids, 4, loss_fn, select_parameters(model), return_present=True
    )

    assert present.tolist() == [True, True, True, False]
    assert float(grads[3].abs().sum()) == 0.0
    assert float(grads[0].abs().sum()) > 0.0


class ScaleSketch:
    """Keep the first `dim_out` entries, times 2: a fixed linear map that is easy to check."""

    def __init__(self, dim_out):
        self.dim_out = dim_out

    def project(self, flat):
        return 2 * flat[: self.dim_out]


def test_sketch_projects_each_gradient(train_dataset):
    model = tiny_gpt2()
    batch = default_data_collator([train_dataset[i] for i in range(4)])
    task_ids = batch.pop("task_ids")
    parameters = select_parameters(model)

    def loss_fn(module, sub_batch):
        return module(**sub_batch).loss

    exact = collect_task_gradients(model, batch, task_ids, 4, loss_fn, parameters)
    sketched = collect_task_gradients(model, batch, task_ids, 4, loss_fn, parameters, sketch=ScaleSketch(10))

    assert sketched.shape == (4, 10)
    assert torch.allclose(sketched, 2 * exact[:, :10])
