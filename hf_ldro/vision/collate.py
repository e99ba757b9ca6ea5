"""Batching of multitask image examples, and the channel statistics the model normalises with."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


def image_to_array(image: Any) -> np.ndarray:
    """Return an image (PIL image, array or nested list) as a (height, width, channels) uint8 array."""
    if hasattr(image, "convert") and hasattr(image, "mode"):
        image = image.convert("L" if image.mode in ("1", "L", "I", "F") else "RGB")
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"Expected an image of shape (height, width[, channels]), got shape {array.shape}.")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"Image values span {array.min()}..{array.max()}: expected 8-bit pixel values 0..255."
            )
        array = array.astype(np.uint8)
    return array


class MultitaskImageCollator:
    """Stack examples {pixel_values, labels, task_ids} into a batch of tensors.

    `pixel_values` becomes float32 (batch, channels, height, width) in [0, 1]; the model applies
    its own mean/std normalisation. `labels` and `task_ids` become int64 vectors.
    """

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        images = np.stack([image_to_array(example["pixel_values"]) for example in examples])
        pixel_values = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        batch = {"pixel_values": pixel_values.contiguous()}
        for key in ("labels", "task_ids"):
            if key in examples[0]:
                batch[key] = torch.as_tensor(np.asarray([example[key] for example in examples]), dtype=torch.long)
        return batch


def channel_statistics(dataset, max_images: int = 10_000, batch_size: int = 1_000) -> tuple[list[float], list[float]]:
    """Return the per-channel mean and standard deviation of [0, 1] pixel values.

    Computed on the first `max_images` examples of `dataset` (a multitask-schema dataset). The
    standard deviation is floored at 1e-3, so a constant channel cannot cause a division by zero.
    """
    count = min(len(dataset), max_images)
    if count == 0:
        raise ValueError("Cannot compute channel statistics of an empty dataset.")
    total = total_sq = None
    pixels = 0
    for start in range(0, count, batch_size):
        rows = dataset[start : min(start + batch_size, count)]["pixel_values"]
        images = np.stack([image_to_array(image) for image in rows]).astype(np.float64) / 255.0
        flat = images.reshape(-1, images.shape[-1])
        total = flat.sum(0) if total is None else total + flat.sum(0)
        total_sq = (flat**2).sum(0) if total_sq is None else total_sq + (flat**2).sum(0)
        pixels += flat.shape[0]
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean**2, 0.0))
    return mean.tolist(), np.maximum(std, 1e-3).tolist()
