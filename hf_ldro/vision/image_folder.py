"""Multitask image data from a folder of images described by an index CSV.

Each CSV row is one image: its path (relative to the CSV's folder, or a member of a zip archive
named in another column), its task and its label within the task. A column decides the split:
rows whose value is one of `test_values` form the test split, every other row the train split.
Tasks are sorted by name and, within a task, classes by label value; the taxonomy comes from the
train split, and a test label absent from it raises an error.

`OMNIGLOT_LAYOUT` reads the small Omniglot background sets (Lake et al.): alphabets as tasks,
characters as classes, drawers 16-20 as the test split, and the copies that the two archives
share counted once.
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from PIL import Image, UnidentifiedImageError

from .taxonomy import TaskTaxonomy

logger = logging.getLogger(__name__)

TRUE_VALUES = ("1", "true", "yes")


@dataclass(frozen=True)
class ImageIndexLayout:
    """Which CSV columns hold what.

    Attributes:
        task_column: task name of the image.
        label_column: class of the image within its task.
        path_column: image path, relative to the CSV's folder or, with `archive_column`, inside the archive.
        archive_column: optional column naming a zip archive (relative to the CSV's folder).
        split_column: column whose value decides the split.
        test_values: values of `split_column` that put a row in the test split.
        exclude_column: optional column; rows where it is 1/true/yes are skipped (e.g. duplicates).
    """

    task_column: str = "task"
    label_column: str = "label"
    path_column: str = "path"
    archive_column: str | None = None
    split_column: str = "split"
    test_values: tuple[str, ...] = ("test",)
    exclude_column: str | None = None

    def required_columns(self) -> list[str]:
        columns = [self.task_column, self.label_column, self.path_column, self.split_column]
        return columns + [c for c in (self.archive_column, self.exclude_column) if c]


OMNIGLOT_LAYOUT = ImageIndexLayout(
    task_column="alphabet",
    label_column="character",
    path_column="path_in_zip",
    archive_column="zip",
    split_column="drawer",
    test_values=("16", "17", "18", "19", "20"),
    exclude_column="duplicate_of_other_zip",
)


@dataclass
class _IndexRow:
    line: int
    task: str
    label: str
    path: str
    archive: str | None


def _read_index(index_csv: Path, layout: ImageIndexLayout) -> tuple[list[_IndexRow], list[_IndexRow]]:
    if not index_csv.is_file():
        raise FileNotFoundError(f"Image index {index_csv} not found: pass the CSV that lists the images.")
    train, test = [], []
    with index_csv.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in layout.required_columns() if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{index_csv} has no column(s) {missing} (columns: {reader.fieldnames}): set the "
                "matching --*_column options to the CSV's column names."
            )
        for line, row in enumerate(reader, start=2):
            if layout.exclude_column and row[layout.exclude_column].strip().lower() in TRUE_VALUES:
                continue
            for column in (layout.task_column, layout.label_column, layout.path_column):
                if not row[column]:
                    raise ValueError(f"{index_csv}, line {line}: empty {column!r}; every image needs one.")
            entry = _IndexRow(
                line=line,
                task=row[layout.task_column],
                label=row[layout.label_column],
                path=row[layout.path_column],
                archive=row[layout.archive_column] if layout.archive_column else None,
            )
            (test if row[layout.split_column] in layout.test_values else train).append(entry)
    if not train:
        raise ValueError(f"{index_csv}: no training image (every row is excluded or in the test split {list(layout.test_values)}).")
    if not test:
        raise ValueError(
            f"{index_csv}: no test image: no row has {layout.split_column!r} in {list(layout.test_values)}."
        )
    return train, test


class _ImageSource:
    """Open image files under a folder or inside zip archives, keeping each archive open once."""

    def __init__(self, root: Path, index_csv: Path):
        self.root = root
        self.index_csv = index_csv
        self._archives: dict[str, zipfile.ZipFile] = {}

    def read_bytes(self, row: _IndexRow) -> bytes:
        if row.archive is None:
            path = self.root / row.path
            if not path.is_file():
                raise FileNotFoundError(f"{self.index_csv}, line {row.line}: image {path} not found.")
            return path.read_bytes()
        if row.archive not in self._archives:
            archive_path = self.root / row.archive
            if not archive_path.is_file():
                raise FileNotFoundError(f"{self.index_csv}, line {row.line}: archive {archive_path} not found.")
            self._archives[row.archive] = zipfile.ZipFile(archive_path)
        try:
            return self._archives[row.archive].read(row.path)
        except KeyError:
            raise FileNotFoundError(
                f"{self.index_csv}, line {row.line}: {row.path!r} is not in archive {self.root / row.archive}."
            ) from None

    def close(self) -> None:
        for archive in self._archives.values():
            archive.close()


def _decode(source: _ImageSource, row: _IndexRow, mode: str | None, image_size: int | None) -> tuple[np.ndarray, str]:
    try:
        image = Image.open(io.BytesIO(source.read_bytes(row)))
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"{source.index_csv}, line {row.line}: cannot decode image {row.path!r}: {error}.") from error
    if mode is None:
        mode = "L" if image.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
    image = image.convert(mode)
    if image_size is not None and image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return (array[:, :, None] if array.ndim == 2 else array), mode


def load_image_folder(
    index_csv: str | Path,
    layout: ImageIndexLayout = ImageIndexLayout(),
    image_size: int | None = 32,
) -> tuple[datasets.Dataset, datasets.Dataset, TaskTaxonomy]:
    """Read the images listed in `index_csv` into train and test datasets in the multitask schema.

    Args:
        index_csv: the index file; image paths and archives are relative to its folder.
        layout: the CSV's column names and split rule.
        image_size: resize every image to image_size x image_size (None keeps the size, which must
            then be the same for every image).

    Returns:
        (train, test, taxonomy); the datasets have columns pixel_values (H, W, C uint8),
        labels (class index, numbered task by task: class offset of the task + rank within it)
        and task_ids.
    """
    index_csv = Path(index_csv)
    train_rows, test_rows = _read_index(index_csv, layout)

    task_to_labels: dict[str, set[str]] = defaultdict(set)
    for row in train_rows:
        task_to_labels[row.task].add(row.label)
    taxonomy = TaskTaxonomy.from_labels(task_to_labels)
    class_index = {
        (task, label): offset + rank
        for task, labels, offset in zip(taxonomy.task_names, taxonomy.class_names, taxonomy.class_offsets)
        for rank, label in enumerate(labels)
    }
    for row in test_rows:
        if (row.task, row.label) not in class_index:
            raise ValueError(
                f"{index_csv}, line {row.line}: test image of task {row.task!r} has label {row.label!r}, "
                "which no training image has; every test class needs training images."
            )

    source = _ImageSource(index_csv.parent, index_csv)
    mode = None
    splits = []
    try:
        for rows in (train_rows, test_rows):
            images, labels, task_ids = [], [], []
            for row in rows:
                array, mode = _decode(source, row, mode, image_size)
                if images and array.shape != images[0].shape:
                    raise ValueError(
                        f"{index_csv}, line {row.line}: image {row.path!r} has shape {array.shape} but "
                        f"earlier images have {images[0].shape}; set an image size to resize them all."
                    )
                images.append(array)
                labels.append(class_index[(row.task, row.label)])
                task_ids.append(taxonomy.task_id(row.task))
            features = datasets.Features(
                {
                    "pixel_values": datasets.Array3D(images[0].shape, "uint8"),
                    "labels": datasets.Value("int64"),
                    "task_ids": datasets.Value("int64"),
                }
            )
            data = {"pixel_values": np.stack(images), "labels": labels, "task_ids": task_ids}
            splits.append(datasets.Dataset.from_dict(data, features=features).with_format("numpy"))
    finally:
        source.close()

    logger.info(
        "Read %d train and %d test images of %d tasks from %s",
        len(splits[0]),
        len(splits[1]),
        taxonomy.num_tasks,
        index_csv,
    )
    return splits[0], splits[1], taxonomy
