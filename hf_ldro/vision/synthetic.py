"""Small synthetic CIFAR-100 files in the official `cifar-100-python` pickle format.

For tests and dry runs of the CIFAR pipeline without the real data: each fine class gets its own
random mean image, and every example is that mean plus noise, so a model can learn something.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .taxonomy import CIFAR100_COARSE_LABEL_NAMES, CIFAR100_FINE_LABEL_NAMES, CIFAR100_FINE_TO_COARSE


def synthetic_cifar100_split(num_images: int, seed: int = 0, noise: float = 40.0) -> dict[bytes, object]:
    """Return the content of one split file: b"data" (N x 3072 uint8), b"fine_labels", b"coarse_labels"."""
    class_means = np.random.default_rng(1234).uniform(40, 215, size=(100, 3072))
    rng = np.random.default_rng(seed)
    fine = rng.integers(0, 100, size=num_images)
    data = class_means[fine] + rng.normal(0.0, noise, size=(num_images, 3072))
    return {
        b"data": np.clip(data, 0, 255).astype(np.uint8),
        b"fine_labels": fine.tolist(),
        b"coarse_labels": [CIFAR100_FINE_TO_COARSE[f] for f in fine],
        b"filenames": [f"synthetic_{i}.png".encode() for i in range(num_images)],
    }


def write_cifar100_pickles(folder: str | Path, num_train: int = 200, num_test: int = 100, seed: int = 0) -> Path:
    """Write `train`, `test` and `meta` pickles (protocol 2, as the originals) into `folder`; return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        b"fine_label_names": [name.encode() for name in CIFAR100_FINE_LABEL_NAMES],
        b"coarse_label_names": [name.encode() for name in CIFAR100_COARSE_LABEL_NAMES],
    }
    contents = {
        "train": synthetic_cifar100_split(num_train, seed=seed),
        "test": synthetic_cifar100_split(num_test, seed=seed + 1),
        "meta": meta,
    }
    for name, content in contents.items():
        with (folder / name).open("wb") as handle:
            pickle.dump(content, handle, protocol=2)
    return folder
