"""The small multitask CNN of Michel, Ruder & Yogatama's CIFAR-100 experiment, as a `PreTrainedModel`.

Architecture (paper, section 5.1): 3x3 convolutions, each followed by ReLU and 2x2 max-pooling, a
spatial average, an MLP with ReLU, and an output layer. The paper's model ("small") has four
convolutions of 32 filters and a 3-layer MLP of width 128; its larger model ("large", appendix A.2)
has three convolutions of 160 filters and a 2-layer MLP of width 320 "leading into a final fully
connected layer". We read both MLP descriptions the same way: `num_hidden_layers` Linear+ReLU
layers of width `hidden_size`, then the output layer.

Output layers:
    shared: one linear layer and one softmax over the classes of all tasks (the paper's choice:
        "a shared softmax layer across all tasks, i.e. across all 100 classes").
    per_task: one linear layer per task; an example's softmax runs over its own task's classes.

Classes are numbered task by task: task t owns class indices (and logit columns)
`class_offsets[t] : class_offsets[t] + num_classes_per_task[t]`, so a label is
`class_offsets[task] + rank` and names its task too. The model therefore needs no task ids: with
per-task heads, `logits` holds every head's scores side by side and the loss restricts the softmax
to the slice of the label's task. On CIFAR-100 (20 tasks of 5 classes) the label of a fine class is
5 * superclass + its rank within the superclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

HEAD_TYPES = ("shared", "per_task")

# Architecture presets: "small" is the paper's main CIFAR-100 model, "large" its appendix A.2 model.
MODEL_PRESETS = {
    "small": {"conv_channels": [32, 32, 32, 32], "hidden_size": 128, "num_hidden_layers": 3},
    "large": {"conv_channels": [160, 160, 160], "hidden_size": 320, "num_hidden_layers": 2},
}


class MultitaskCNNConfig(PreTrainedConfig):
    """Configuration of `MultitaskCNN`.

    Args:
        num_channels: input image channels (3 for CIFAR, 1 for grayscale).
        conv_channels: filters of each 3x3 convolution; one entry per convolution block.
        hidden_size: width of the MLP layers.
        num_hidden_layers: Linear+ReLU layers between the pooled features and the output layer.
        num_classes_per_task: classes of each task, in task-id order.
        task_names: one name per task (defaults to "task_0", ...).
        head: "shared" (one softmax over all classes) or "per_task" (one output layer per task).
        image_mean, image_std: per-channel statistics of [0, 1] pixel values, used by the model to
            normalise its input (defaults: 0.5 and 0.5 per channel).
    """

    model_type = "hf_ldro_multitask_cnn"
    # Outputs the Trainer's evaluation loop leaves out of the gathered predictions.
    keys_to_ignore_at_inference = ["per_example_loss"]

    def __init__(
        self,
        num_channels: int = 3,
        conv_channels: Sequence[int] = (32, 32, 32, 32),
        hidden_size: int = 128,
        num_hidden_layers: int = 3,
        num_classes_per_task: Sequence[int] = (5,) * 20,
        task_names: Sequence[str] | None = None,
        head: str = "shared",
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        **kwargs,
    ):
        if head not in HEAD_TYPES:
            raise ValueError(f"Invalid head {head!r}: use one of {list(HEAD_TYPES)}.")
        if not conv_channels or any(int(c) < 1 for c in conv_channels):
            raise ValueError(f"conv_channels must be a non-empty list of positive ints, got {conv_channels!r}.")
        if not num_classes_per_task or any(int(n) < 2 for n in num_classes_per_task):
            raise ValueError(
                f"num_classes_per_task must list at least 2 classes for every task, got {num_classes_per_task!r}."
            )
        if task_names is None:
            task_names = [f"task_{i}" for i in range(len(num_classes_per_task))]
        if len(task_names) != len(num_classes_per_task):
            raise ValueError(
                f"{len(task_names)} task names for {len(num_classes_per_task)} tasks: give one name per task."
            )
        image_mean = [0.5] * num_channels if image_mean is None else [float(x) for x in image_mean]
        image_std = [0.5] * num_channels if image_std is None else [float(x) for x in image_std]
        if len(image_mean) != num_channels or len(image_std) != num_channels:
            raise ValueError(
                f"image_mean {image_mean} and image_std {image_std} need one value per channel "
                f"({num_channels} channels)."
            )
        if any(s <= 0 for s in image_std):
            raise ValueError(f"image_std must be > 0 for every channel, got {image_std}.")

        self.num_channels = int(num_channels)
        self.conv_channels = [int(c) for c in conv_channels]
        self.hidden_size = int(hidden_size)
        self.num_hidden_layers = int(num_hidden_layers)
        self.num_classes_per_task = [int(n) for n in num_classes_per_task]
        self.task_names = list(task_names)
        self.head = head
        self.image_mean = image_mean
        self.image_std = image_std
        super().__init__(**kwargs)

    @classmethod
    def from_preset(cls, preset: str, **kwargs) -> "MultitaskCNNConfig":
        """Build the config of a named architecture ("small" or "large"); kwargs override it."""
        if preset not in MODEL_PRESETS:
            raise ValueError(f"Unknown model preset {preset!r}: use one of {list(MODEL_PRESETS)}.")
        return cls(**{**MODEL_PRESETS[preset], **kwargs})

    @property
    def class_offsets(self) -> list[int]:
        offsets, total = [], 0
        for count in self.num_classes_per_task:
            offsets.append(total)
            total += count
        return offsets

    @property
    def num_classes(self) -> int:
        return sum(self.num_classes_per_task)


@dataclass
class MultitaskClassifierOutput(ModelOutput):
    """Output of `MultitaskCNN`.

    Attributes:
        loss: mean cross-entropy over the batch (when `labels` is given).
        logits: (batch, num_classes) scores in task-major class order.
        per_example_loss: (batch,) cross-entropy of each example (when `labels` is given).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    per_example_loss: torch.Tensor | None = None


class MultitaskCNN(PreTrainedModel):
    """Convolutional multitask classifier; see the module docstring for the architecture.

    Inputs:
        pixel_values: (batch, channels, height, width) floats in [0, 1]; the model normalises
            them with `config.image_mean` / `config.image_std`.
        labels: (batch,) class index of each example in the task-major numbering.

    Example:
        >>> config = MultitaskCNNConfig.from_preset("small", num_classes_per_task=[5, 5])
        >>> model = MultitaskCNN(config)
        >>> out = model(torch.rand(2, 3, 32, 32), labels=torch.tensor([4, 5]))
        >>> tuple(out.logits.shape), tuple(out.per_example_loss.shape)
        ((2, 10), (2,))
    """

    config_class = MultitaskCNNConfig
    base_model_prefix = "cnn"
    main_input_name = "pixel_values"

    def __init__(self, config: MultitaskCNNConfig):
        super().__init__(config)
        blocks: list[nn.Module] = []
        in_channels = config.num_channels
        for out_channels in config.conv_channels:
            # ceil_mode keeps a 1x1 map at 1x1, so images smaller than 2**num_blocks still work.
            blocks += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=2, ceil_mode=True),
            ]
            in_channels = out_channels
        self.convs = nn.Sequential(*blocks)

        layers: list[nn.Module] = []
        width = in_channels
        for _ in range(config.num_hidden_layers):
            layers += [nn.Linear(width, config.hidden_size), nn.ReLU()]
            width = config.hidden_size
        self.mlp = nn.Sequential(*layers)

        if config.head == "shared":
            self.classifier = nn.Linear(width, config.num_classes)
        else:
            self.task_heads = nn.ModuleList(nn.Linear(width, n) for n in config.num_classes_per_task)
        # The normalisation constants and the class-to-task map are rebuilt from the config at
        # each call rather than kept as buffers: from_pretrained leaves non-persistent buffers
        # uninitialised.
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # He initialisation (normal, fan-in, ReLU gain, zero bias) for the convolutions and hidden
        # layers, PyTorch's default for the output layers. The paper does not state its
        # initialisation. Without normalisation layers, the Transformers default N(0, 0.02) and
        # even PyTorch's default shrink the signal through the 7 layers: on Omniglot this model
        # then sat at chance loss for several epochs of SGD at lr 0.025.
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            return
        output_layers = [getattr(self, "classifier", None), *getattr(self, "task_heads", [])]
        if any(module is layer for layer in output_layers):
            module.reset_parameters()
        else:
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)

    def task_specific_parameter_names(self) -> list[str]:
        """Names of the parameters that only one task's loss depends on (the per-task heads).

        Gradient-surgery methods such as PCGrad project only the other (shared) parameters.
        """
        if self.config.head == "shared":
            return []
        return [name for name, _ in self.named_parameters() if name.startswith("task_heads.")]

    def extract_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Return the (batch, hidden_size) MLP output that feeds the output layer."""
        expected = self.config.num_channels
        if pixel_values.dim() != 4 or pixel_values.shape[1] != expected:
            raise ValueError(
                f"pixel_values must have shape (batch, {expected}, height, width), got "
                f"{tuple(pixel_values.shape)}."
            )
        mean = pixel_values.new_tensor(self.config.image_mean).view(1, -1, 1, 1)
        std = pixel_values.new_tensor(self.config.image_std).view(1, -1, 1, 1)
        normalised = (pixel_values - mean) / std
        pooled = self.convs(normalised).mean(dim=(2, 3))
        return self.mlp(pooled)

    def task_of_class(self, device: torch.device | None = None) -> torch.Tensor:
        """Return the (num_classes,) task id of every class index."""
        return torch.repeat_interleave(
            torch.arange(len(self.config.num_classes_per_task), device=device),
            torch.tensor(self.config.num_classes_per_task, device=device),
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MultitaskClassifierOutput | tuple:
        features = self.extract_features(pixel_values)
        if self.config.head == "shared":
            logits = self.classifier(features)
        else:
            logits = torch.cat([head(features) for head in self.task_heads], dim=1)

        loss = per_example_loss = None
        if labels is not None:
            per_example_loss = self.per_example_loss(logits, labels)
            loss = per_example_loss.mean()

        output = MultitaskClassifierOutput(loss=loss, logits=logits, per_example_loss=per_example_loss)
        use_dict = self.config.return_dict if return_dict is None else return_dict
        return output if use_dict else output.to_tuple()

    def per_example_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return the (batch,) cross-entropy of each example.

        Shared head: softmax over all classes. Per-task heads: softmax over the classes of the
        label's task only.
        """
        labels = labels.reshape(-1).long()
        num_classes = self.config.num_classes
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
            raise ValueError(
                f"label {bad} is out of range: the model has {num_classes} classes (0..{num_classes - 1}), "
                "numbered task by task (label = class offset of the task + rank within the task)."
            )
        logits = logits.float()
        if self.config.head == "per_task":
            task_of_class = self.task_of_class(logits.device)
            in_task = task_of_class.unsqueeze(0) == task_of_class[labels].unsqueeze(1)
            logits = logits.masked_fill(~in_task, torch.finfo(logits.dtype).min)
        return nn.functional.cross_entropy(logits, labels, reduction="none")
