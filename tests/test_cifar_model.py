"""The multitask CNN (both presets, both heads) and the per-task accuracy metrics."""

import numpy as np
import pytest
import torch

from hf_ldro.vision import MultitaskCNN, MultitaskCNNConfig, per_task_accuracy, summarize_accuracy

CIFAR_TASKS = [5] * 20


def _batch(num_channels=3, size=32, labels=(4, 15, 97, 16)):
    generator = torch.Generator().manual_seed(0)
    return {
        "pixel_values": torch.rand(len(labels), num_channels, size, size, generator=generator),
        "labels": torch.tensor(labels),
    }


@pytest.mark.parametrize("preset", ["small", "large"])
@pytest.mark.parametrize("head", ["shared", "per_task"])
def test_output_shapes(preset, head):
    model = MultitaskCNN(MultitaskCNNConfig.from_preset(preset, num_classes_per_task=CIFAR_TASKS, head=head))
    output = model(**_batch())
    assert tuple(output.logits.shape) == (4, 100)
    assert tuple(output.per_example_loss.shape) == (4,)
    assert output.loss.dim() == 0


def test_small_preset_architecture():
    model = MultitaskCNN(MultitaskCNNConfig.from_preset("small", num_classes_per_task=CIFAR_TASKS))
    convs = [m for m in model.convs if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (3, 3))] * 4
    assert [layer.out_features for layer in linears] == [128, 128, 128]
    assert model.classifier.out_features == 100


def test_large_preset_architecture():
    model = MultitaskCNN(MultitaskCNNConfig.from_preset("large", num_classes_per_task=CIFAR_TASKS))
    convs = [m for m in model.convs if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [160] * 3
    assert [layer.out_features for layer in linears] == [320, 320]


def test_per_task_loss_uses_own_task_softmax():
    config = MultitaskCNNConfig.from_preset("small", num_classes_per_task=[3, 7, 4], head="per_task", num_channels=1)
    model = MultitaskCNN(config)
    # Label 9 is rank 6 of task 1 (classes 3..9); label 13 is rank 3 of task 2 (classes 10..13).
    output = model(**_batch(num_channels=1, size=20, labels=(9, 13)))
    assert tuple(output.logits.shape) == (2, 14)
    expected_0 = torch.nn.functional.cross_entropy(output.logits[0:1, 3:10], torch.tensor([6]))
    expected_1 = torch.nn.functional.cross_entropy(output.logits[1:2, 10:14], torch.tensor([3]))
    torch.testing.assert_close(output.per_example_loss[0], expected_0)
    torch.testing.assert_close(output.per_example_loss[1], expected_1)


def test_per_task_head_gradient_stays_in_task():
    config = MultitaskCNNConfig.from_preset("small", num_classes_per_task=[5, 5], head="per_task")
    model = MultitaskCNN(config)
    model(**_batch(size=8, labels=(5, 9))).loss.backward()
    assert float(model.task_heads[0].weight.grad.abs().sum()) == 0
    assert float(model.task_heads[1].weight.grad.abs().sum()) > 0
    assert model.task_specific_parameter_names() == [
        "task_heads.0.weight", "task_heads.0.bias", "task_heads.1.weight", "task_heads.1.bias"
    ]


def test_shared_head_loss_is_softmax_over_all_classes():
    model = MultitaskCNN(MultitaskCNNConfig.from_preset("small", num_classes_per_task=CIFAR_TASKS))
    batch = _batch()
    output = model(**batch)
    torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(output.logits, batch["labels"]))
    assert model.task_specific_parameter_names() == []


def test_save_and_reload(tmp_path):
    config = MultitaskCNNConfig.from_preset(
        "small", num_classes_per_task=[2, 3], head="per_task", task_names=["a", "b"], image_mean=[0.1, 0.2, 0.3]
    )
    model = MultitaskCNN(config)
    model.save_pretrained(tmp_path)
    reloaded = MultitaskCNN.from_pretrained(tmp_path)
    batch = _batch(size=8, labels=(1, 4))
    model.eval()
    reloaded.eval()
    torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)
    torch.testing.assert_close(reloaded(**batch).loss, model(**batch).loss)
    assert reloaded.config.task_names == ["a", "b"]


def test_label_out_of_range_rejected():
    model = MultitaskCNN(MultitaskCNNConfig.from_preset("small", num_classes_per_task=[2, 3]))
    with pytest.raises(ValueError, match="label 5 is out of range"):
        model(**_batch(size=8, labels=(0, 5)))


def test_wrong_channel_count_rejected():
    model = MultitaskCNN(MultitaskCNNConfig.from_preset("small", num_classes_per_task=[2, 3], num_channels=1))
    with pytest.raises(ValueError, match=r"\(batch, 1, height, width\)"):
        model(**_batch(size=8, labels=(0, 0)))


def test_unknown_preset_rejected():
    with pytest.raises(ValueError, match="huge"):
        MultitaskCNNConfig.from_preset("huge")


# ---- accuracy ----------------------------------------------------------------------------------


def test_task_scope_restricts_argmax():
    # Two tasks of 2 classes. Example 0 (label 1, task 0): the global argmax is column 3 (task 1)
    # but within task 0 the best column is 1, the correct class.
    logits = np.array([[0.0, 1.0, 0.0, 5.0], [0.0, 0.0, 2.0, 1.0]])
    labels = np.array([1, 3])
    task_scope = per_task_accuracy(logits, labels, [2, 2], scope="task")
    all_scope = per_task_accuracy(logits, labels, [2, 2], scope="all")
    np.testing.assert_array_equal(task_scope, [1.0, 0.0])
    np.testing.assert_array_equal(all_scope, [0.0, 0.0])


def test_accuracy_with_unequal_tasks():
    # Tasks of 3 and 2 classes: labels 0..2 belong to task 0, 3..4 to task 1.
    logits = np.eye(5)[[2, 0, 4, 3]]
    labels = np.array([2, 1, 4, 4])
    np.testing.assert_array_equal(per_task_accuracy(logits, labels, [3, 2]), [0.5, 0.5])


def test_accuracy_absent_task_is_nan():
    accuracy = per_task_accuracy(np.zeros((1, 4)), np.array([0]), [2, 2])
    assert np.isnan(accuracy[1])
    summary = summarize_accuracy(accuracy, ["a", "b"])
    assert summary["task_accuracy"] == {"a": 1.0}


def test_summary_average_and_worst():
    summary = summarize_accuracy(np.array([0.5, 0.9, 0.2]), ["a", "b", "c"])
    assert summary["avg_accuracy"] == pytest.approx(1.6 / 3)
    assert summary["worst_accuracy"] == 0.2
    assert summary["worst_task"] == "c"
