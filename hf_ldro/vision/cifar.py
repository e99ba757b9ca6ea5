"""CIFAR-100 readers: the official `cifar-100-python` pickles and the Hub copy, as multitask data.

Both sources first give a `datasets.Dataset` with the Hub schema (`img`, `fine_label`,
`coarse_label`); `cifar100_to_multitask` then turns either into the multitask schema used by
the rest of the package:

    pixel_values: the image (height, width, channels), uint8
    labels: class index 5 * superclass + rank of the fine class within its superclass (0..99)
    task_ids: superclass id (0..19)

The official pickles (Python pickles written with `encoding="bytes"` keys) contain:
    train, test: b"data" (N x 3072 uint8, each row the red, green and blue 32x32 planes in turn),
        b"fine_labels", b"coarse_labels" (N ints each)
    meta: b"fine_label_names", b"coarse_label_names"
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import datasets
import numpy as np

from .taxonomy import (
    CIFAR100_COARSE_LABEL_NAMES,
    CIFAR100_FINE_LABEL_NAMES,
    CIFAR100_FINE_TO_COARSE,
    CIFAR100_FINE_TO_RANK,
)

logger = logging.getLogger(__name__)

CIFAR100_HUB_NAME = "uoft-cs/cifar100"
CIFAR100_SPLITS = ("train", "test")
CIFAR100_IMAGE_SHAPE = (32, 32, 3)
HUB_COLUMNS = ("img", "fine_label", "coarse_label")

_SPLIT_KEYS = (b"data", b"fine_labels", b"coarse_labels")
_META_KEYS = (b"fine_label_names", b"coarse_label_names")


class CIFARFormatError(ValueError):
    """A CIFAR-100 file or dataset does not have the expected layout or labels."""


def _unpickle(path: Path, required_keys: tuple[bytes, ...]) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"CIFAR-100 file {path} not found: --data_dir must be the extracted `cifar-100-python` "
            "folder, containing the files train, test and meta."
        )
    try:
        with path.open("rb") as handle:
            content = pickle.load(handle, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
        raise CIFARFormatError(f"{path} is not a readable CIFAR-100 pickle: {error}.") from error
    if not isinstance(content, dict):
        raise CIFARFormatError(f"{path} holds a {type(content).__name__}, expected a dict with keys {list(required_keys)}.")
    missing = [key for key in required_keys if key not in content]
    if missing:
        raise CIFARFormatError(
            f"{path} is missing the key(s) {missing} (found {sorted(content)}): expected the "
            "official cifar-100-python layout, read with encoding='bytes'."
        )
    return content


def check_cifar100_meta(data_dir: str | Path) -> None:
    """Check that the `meta` file's label names are the taxonomy this package carries."""
    path = Path(data_dir) / "meta"
    meta = _unpickle(path, _META_KEYS)
    for key, expected in ((b"fine_label_names", CIFAR100_FINE_LABEL_NAMES), (b"coarse_label_names", CIFAR100_COARSE_LABEL_NAMES)):
        names = tuple(name.decode() if isinstance(name, bytes) else str(name) for name in meta[key])
        if names != expected:
            different = [i for i, (a, b) in enumerate(zip(names, expected)) if a != b][:3]
            raise CIFARFormatError(
                f"{path}: {key!r} lists {len(names)} names that differ from the official CIFAR-100 "
                f"taxonomy (first differing ids: {different or 'length'}); this is not CIFAR-100."
            )


def read_cifar100_pickle_split(data_dir: str | Path, split: str) -> datasets.Dataset:
    """Read one split of the official pickles into a Dataset with the Hub schema.

    Raises:
        FileNotFoundError: the folder or the split's file is missing.
        CIFARFormatError: a key is missing, `data` is not N x 3072 uint8, or label counts differ.
    """
    if split not in CIFAR100_SPLITS:
        raise ValueError(f"Unknown CIFAR-100 split {split!r}: use one of {list(CIFAR100_SPLITS)}.")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"CIFAR-100 folder {data_dir} not found: pass the extracted `cifar-100-python` folder "
            "(files train, test, meta) as --data_dir, or leave --data_dir unset to use the Hub copy."
        )
    path = data_dir / split
    content = _unpickle(path, _SPLIT_KEYS)

    data = np.asarray(content[b"data"])
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise CIFARFormatError(
            f"{path}: b'data' has shape {data.shape} and dtype {data.dtype}, expected (N, 3072) "
            "uint8 (three 32x32 colour planes per row)."
        )
    fine = np.asarray(content[b"fine_labels"], dtype=np.int64)
    coarse = np.asarray(content[b"coarse_labels"], dtype=np.int64)
    if not len(fine) == len(coarse) == len(data):
        raise CIFARFormatError(
            f"{path}: {len(data)} images but {len(fine)} fine and {len(coarse)} coarse labels; "
            "every image needs one of each."
        )

    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    features = datasets.Features(
        {
            "img": datasets.Array3D(CIFAR100_IMAGE_SHAPE, "uint8"),
            "fine_label": datasets.Value("int64"),
            "coarse_label": datasets.Value("int64"),
        }
    )
    logger.info("Read %d CIFAR-100 %s images from %s", len(images), split, path)
    return datasets.Dataset.from_dict({"img": images, "fine_label": fine, "coarse_label": coarse}, features=features)


def load_cifar100_hub(split: str, dataset_name: str = CIFAR100_HUB_NAME, cache_dir: str | None = None) -> datasets.Dataset:
    """Load one split of CIFAR-100 from the Hugging Face Hub (columns img, fine_label, coarse_label).

    Raises:
        ConnectionError: the Hub cannot be reached and the split is not cached; the message names
            the local alternative.
    """
    try:
        return datasets.load_dataset(dataset_name, split=split, cache_dir=cache_dir)
    except ConnectionError as error:
        raise ConnectionError(
            f"Could not load {dataset_name} ({split} split) from the Hugging Face Hub: {error}. "
            "Without Hub access, download and extract cifar-100-python and pass it as --data_dir."
        ) from error


def cifar100_to_multitask(dataset: datasets.Dataset, source: str) -> datasets.Dataset:
    """Turn a Dataset with the Hub schema into the multitask schema (see the module docstring).

    Args:
        dataset: columns img (image or array), fine_label (0..99), coarse_label (0..19).
        source: where the data comes from (file or Hub name and split), named in errors.

    Raises:
        CIFARFormatError: a column is missing, a fine label is outside the taxonomy, or a coarse
            label disagrees with the taxonomy's superclass of the fine label.
    """
    missing = [column for column in HUB_COLUMNS if column not in dataset.column_names]
    if missing:
        raise CIFARFormatError(
            f"{source} is missing the column(s) {missing} (found {dataset.column_names}): "
            f"expected the CIFAR-100 schema {list(HUB_COLUMNS)}."
        )
    fine = np.asarray(dataset["fine_label"], dtype=np.int64)
    coarse = np.asarray(dataset["coarse_label"], dtype=np.int64)

    outside = np.flatnonzero((fine < 0) | (fine >= len(CIFAR100_FINE_LABEL_NAMES)))
    if len(outside):
        row = int(outside[0])
        raise CIFARFormatError(
            f"{source}: fine label {int(fine[row])} (example {row}, {len(outside)} such examples) is "
            f"outside the CIFAR-100 taxonomy, whose fine labels are 0..{len(CIFAR100_FINE_LABEL_NAMES) - 1}."
        )
    expected_coarse = np.asarray(CIFAR100_FINE_TO_COARSE)[fine]
    disagree = np.flatnonzero(expected_coarse != coarse)
    if len(disagree):
        row = int(disagree[0])
        raise CIFARFormatError(
            f"{source}: example {row} has fine label {int(fine[row])} "
            f"({CIFAR100_FINE_LABEL_NAMES[fine[row]]}) with coarse label {int(coarse[row])}, but the "
            f"CIFAR-100 taxonomy puts it in superclass {int(expected_coarse[row])} "
            f"({CIFAR100_COARSE_LABEL_NAMES[expected_coarse[row]]})."
        )

    # Five classes per superclass: the task-major class index is 5 * superclass + rank.
    labels = 5 * coarse + np.asarray(CIFAR100_FINE_TO_RANK)[fine]
    multitask = dataset.select_columns(["img"]).rename_column("img", "pixel_values")
    multitask = multitask.add_column("labels", labels.tolist()).add_column("task_ids", coarse.tolist())
    return multitask.with_format("numpy")


def load_cifar100(
    split: str,
    data_dir: str | Path | None = None,
    dataset_name: str = CIFAR100_HUB_NAME,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Load one CIFAR-100 split in the multitask schema, from local pickles if `data_dir` is set."""
    if data_dir is not None:
        check_cifar100_meta(data_dir)
        raw = read_cifar100_pickle_split(data_dir, split)
        source = str(Path(data_dir) / split)
    else:
        raw = load_cifar100_hub(split, dataset_name=dataset_name, cache_dir=cache_dir)
        source = f"{dataset_name} ({split} split)"
    return cifar100_to_multitask(raw, source)
