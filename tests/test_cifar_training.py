"""run_cifar_ldro.py end to end on generated CIFAR-100 pickles, and the trainers' gradients."""

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainingArguments

from hf_ldro.arguments import LDROArguments, weighting_from_arguments
from hf_ldro.pcgrad import project_conflicting
from hf_ldro.vision import MultitaskCNN, MultitaskCNNConfig, MultitaskImageCollator, load_cifar100
from hf_ldro.vision.experiment import build_run_specs, read_evals
from hf_ldro.vision.synthetic import write_cifar100_pickles
from hf_ldro.vision.taxonomy import cifar100_taxonomy
from hf_ldro.vision.trainer import MultitaskClassificationPCGradTrainer, MultitaskClassificationTrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run_cifar_ldro  # noqa: E402

TASKS = list(cifar100_taxonomy().task_names)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    return write_cifar100_pickles(tmp_path_factory.mktemp("data") / "cifar-100-python", num_train=200, num_test=100)


def _needs_weighting(method):
    """Skip when the weighting package does not provide `method` yet."""
    try:
        weighting_from_arguments(LDROArguments(method=method, mixing_alpha=0.0), TASKS)
    except NotImplementedError as error:
        pytest.skip(f"hf_ldro.weighting has no {method} strategy in this checkout: {error}")


def _run_script(cifar_dir, output_dir, *extra):
    argv = [
        "--data_dir", str(cifar_dir), "--output_dir", str(output_dir),
        "--max_steps", "2", "--eval_strategy", "steps", "--eval_steps", "1",
        "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "100",
        "--max_train_samples", "120", "--max_eval_samples", "60",
        "--use_cpu", "true", "--disable_tqdm", "true", "--log_level", "warning",
        "--ldro_update_interval", "1", *extra,
    ]
    return run_cifar_ldro.main(argv)


@pytest.mark.parametrize(
    "method, extra",
    [
        ("static", []),
        ("dro", ["--dro_eta", "0.1"]),
        ("ldro", ["--head", "per_task"]),
        ("ldro_exact", []),
        ("pcgrad", ["--head", "per_task"]),
    ],
)
def test_script_trains_each_method(cifar_dir, tmp_path, method, extra):
    if method != "pcgrad":
        _needs_weighting(method)
    summary = _run_script(cifar_dir, tmp_path, "--method", method, *extra)
    records = read_evals(tmp_path / "evals.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert {r["method"] for r in records} == {method}
    assert set(records[0]["task_accuracy"]) <= set(TASKS)
    assert records[0]["worst_accuracy"] == min(records[0]["task_accuracy"].values())
    assert (tmp_path / "pareto.png").stat().st_size > 0
    assert json.loads((tmp_path / "pareto.json").read_text()) == summary
    assert method in summary["panels"]["seed 42"]
    run_dir = next(tmp_path.glob(f"{method}*_seed42"))
    assert MultitaskCNN.from_pretrained(run_dir).config.task_names == TASKS


def test_rerun_replaces_records_and_keeps_others(cifar_dir, tmp_path):
    _run_script(cifar_dir, tmp_path, "--method", "static", "--seeds", "0", "1", "--max_steps", "1")
    _run_script(cifar_dir, tmp_path, "--method", "static", "--seeds", "1", "--max_steps", "1")
    records = read_evals(tmp_path / "evals.jsonl")
    assert sorted(r["seed"] for r in records) == [0, 1]
    summary = json.loads((tmp_path / "pareto.json").read_text())
    assert sorted(summary["panels"]) == ["seed 0", "seed 1"]


def test_paper_sweep_grid():
    runs = build_run_specs(["static", "dro", "ldro", "pcgrad"], [0, 1, 2], sweep="paper")
    assert len(runs) == 3 * (1 + 5 + 9 + 1)
    names = {run.name for run in runs}
    assert len(names) == len(runs)
    assert "ldro_eta0.0001_lambda0.1_seed2" in names
    assert {run.hparams["dro_eta"] for run in runs if run.method == "dro"} == {0.0, 1e-4, 1e-3, 1e-2, 1e-1}


def test_missing_data_dir_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _run_script(tmp_path / "nowhere", tmp_path / "out", "--method", "static")

    assert "nowhere does not exist" in capsys.readouterr().err


def test_data_dir_file_error(tmp_path, capsys):
    data_file = tmp_path / "cifar.tar.gz"
    data_file.write_bytes(b"not a folder")

    with pytest.raises(SystemExit):
        _run_script(data_file, tmp_path / "out", "--method", "static")

    assert "is a file, not a folder" in capsys.readouterr().err


def test_output_dir_file_error(tmp_path, capsys):
    output_file = tmp_path / "out"
    output_file.write_text("keep me")

    with pytest.raises(SystemExit):
        _run_script(tmp_path, output_file, "--method", "static")

    assert "is an existing file" in capsys.readouterr().err
    assert output_file.read_text() == "keep me"


def test_zero_sample_limit_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _run_script(tmp_path, tmp_path / "out", "--method", "static", "--max_train_samples", "0")

    assert "--max_train_samples must be >= 1" in capsys.readouterr().err


# ---- trainer internals on one batch ------------------------------------------------------------


def _trainer(trainer_class, cifar_dir, tmp_path, head, method="static", **kwargs):
    train = load_cifar100("train", data_dir=cifar_dir).select(range(40))
    config = MultitaskCNNConfig.from_preset("small", num_classes_per_task=[5] * 20, task_names=TASKS, head=head)
    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=40, use_cpu=True, report_to=[],
        learning_rate=0.0, max_steps=1, save_strategy="no", disable_tqdm=True,
    )
    ldro_args = LDROArguments(method=method, mixing_alpha=0.0, dro_eta=1.0)
    return trainer_class(
        model=MultitaskCNN(config), args=args, train_dataset=train, data_collator=MultitaskImageCollator(),
        ldro_args=ldro_args, task_names=TASKS, **kwargs,
    ), train


def test_task_losses_are_per_task_means(cifar_dir, tmp_path):
    trainer, train = _trainer(MultitaskClassificationTrainer, cifar_dir, tmp_path, "shared", method="dro")
    trainer.train()  # one step on the whole set with learning rate 0: the model is unchanged
    batch = MultitaskImageCollator()([train[i] for i in range(len(train))])
    with torch.no_grad():
        losses = trainer.model(pixel_values=batch["pixel_values"], labels=batch["labels"]).per_example_loss
    estimates = trainer.weighting.loss_estimates
    for task in range(20):
        mask = batch["task_ids"] == task
        if mask.any():
            assert float(estimates[task]) == pytest.approx(float(losses[mask].mean()), rel=1e-5), TASKS[task]
        else:
            assert torch.isnan(estimates[task])


def test_pcgrad_writes_projected_gradient(cifar_dir, tmp_path):
    trainer, train = _trainer(MultitaskClassificationPCGradTrainer, cifar_dir, tmp_path, "per_task", pcgrad_seed=5)
    model = trainer.model
    batch = MultitaskImageCollator()([train[i] for i in range(len(train))])
    model.zero_grad(set_to_none=True)
    trainer.training_step(model, dict(batch))

    # Expected: per-task gradients of each task's mean loss, shared parameters projected.
    names = [name for name, _ in model.named_parameters()]
    params = [param for _, param in model.named_parameters()]
    grads = torch.zeros(20, sum(p.numel() for p in params))
    for task in batch["task_ids"].unique().tolist():
        mask = batch["task_ids"] == task
        loss = model(pixel_values=batch["pixel_values"][mask], labels=batch["labels"][mask]).loss
        grads[task] = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
    shared = torch.cat([torch.full((p.numel(),), not n.startswith("task_heads."), dtype=torch.bool) for n, p in zip(names, params)])
    weights = torch.full((20,), 1 / 20)
    expected = weights @ grads
    expected[shared] = project_conflicting(grads[:, shared], torch.Generator().manual_seed(5), weights=weights)

    actual = torch.cat([p.grad.reshape(-1) for p in params])
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(actual[shared], (weights @ grads)[shared])
    assert trainer.conflict_count > 0
    present = len(batch["task_ids"].unique())
    assert trainer.pair_count == present * (present - 1) // 2
