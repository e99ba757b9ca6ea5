"""Multitask image classification: taxonomies, data readers, a small CNN and accuracy metrics.

The CNN and the CIFAR-100 task split follow Michel, Ruder & Yogatama, "Balancing Average and
Worst-Case Accuracy in Multitask Learning" (section 5.1).
"""

from .cifar import CIFARFormatError, cifar100_to_multitask, load_cifar100, read_cifar100_pickle_split
from .collate import MultitaskImageCollator, channel_statistics
from .image_folder import OMNIGLOT_LAYOUT, ImageIndexLayout, load_image_folder
from .metrics import make_compute_metrics, per_task_accuracy, summarize_accuracy
from .models import MODEL_PRESETS, MultitaskClassifierOutput, MultitaskCNN, MultitaskCNNConfig
from .taxonomy import TaskTaxonomy, cifar100_task_and_rank, cifar100_taxonomy

__all__ = [
    "CIFARFormatError",
    "ImageIndexLayout",
    "MODEL_PRESETS",
    "MultitaskClassifierOutput",
    "MultitaskCNN",
    "MultitaskCNNConfig",
    "MultitaskImageCollator",
    "OMNIGLOT_LAYOUT",
    "TaskTaxonomy",
    "channel_statistics",
    "cifar100_task_and_rank",
    "cifar100_taxonomy",
    "cifar100_to_multitask",
    "load_cifar100",
    "load_image_folder",
    "make_compute_metrics",
    "per_task_accuracy",
    "read_cifar100_pickle_split",
    "summarize_accuracy",
]
