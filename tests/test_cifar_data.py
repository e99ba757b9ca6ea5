"""CIFAR-100 taxonomy, pickle and Hub-schema readers, the image-folder reader and their errors."""

import csv
import io
import json
import pickle
import zipfile
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from hf_ldro.vision import (
    CIFARFormatError,
    ImageIndexLayout,
    MultitaskImageCollator,
    OMNIGLOT_LAYOUT,
    channel_statistics,
    cifar100_task_and_rank,
    cifar100_taxonomy,
    cifar100_to_multitask,
    load_cifar100,
    load_image_folder,
)
from hf_ldro.vision.synthetic import synthetic_cifar100_split, write_cifar100_pickles
from hf_ldro.vision.taxonomy import (
    CIFAR100_COARSE_LABEL_NAMES,
    CIFAR100_FINE_LABEL_NAMES,
    CIFAR100_FINE_TO_COARSE,
    CIFAR100_FINE_TO_RANK,
)

SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
CIFAR_SAMPLES = SHARED_IMAGES / "cifar100_samples"
OMNIGLOT = SHARED_IMAGES / "omniglot_small"


# ---- taxonomy ----------------------------------------------------------------------------------


def test_fine_to_task_rank_is_bijection():
    pairs = {cifar100_task_and_rank(fine) for fine in range(100)}
    assert len(pairs) == 100
    assert pairs == {(task, rank) for task in range(20) for rank in range(5)}


def test_rank_differs_from_fine_mod_5():
    differing = [fine for fine in range(100) if CIFAR100_FINE_TO_RANK[fine] != fine % 5]
    assert differing, "the rank within the superclass must not be fine % 5"
    # fine % 5 is not even a valid labelling: two classes of one superclass share a value.
    collisions = {
        task
        for task in range(20)
        if len({fine % 5 for fine in range(100) if CIFAR100_FINE_TO_COARSE[fine] == task}) < 5
    }
    assert collisions


def test_rank_orders_classes_by_fine_id():
    taxonomy = cifar100_taxonomy()
    for task, classes in enumerate(taxonomy.class_names):
        fine_ids = [CIFAR100_FINE_LABEL_NAMES.index(name) for name in classes]
        assert fine_ids == sorted(fine_ids), taxonomy.task_names[task]


def test_taxonomy_matches_published_table():
    path = CIFAR_SAMPLES / "cifar100_taxonomy.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent: the published taxonomy table is not on this machine.")
    published = json.loads(path.read_text())
    assert list(CIFAR100_FINE_LABEL_NAMES) == published["fine_label_names"]
    assert list(CIFAR100_COARSE_LABEL_NAMES) == published["coarse_label_names"]
    assert list(CIFAR100_FINE_TO_COARSE) == published["fine_to_coarse"]


def test_fine_label_outside_taxonomy_rejected():
    with pytest.raises(ValueError, match="fine label 100"):
        cifar100_task_and_rank(100)


# ---- pickles -----------------------------------------------------------------------------------


def test_pickle_reader_round_trip(tmp_path):
    folder = write_cifar100_pickles(tmp_path / "cifar-100-python", num_train=30, num_test=10)
    with (folder / "train").open("rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    train = load_cifar100("train", data_dir=folder)
    assert len(train) == 30
    row = train[3]
    expected_image = raw[b"data"][3].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(row["pixel_values"], expected_image)
    task, rank = cifar100_task_and_rank(raw[b"fine_labels"][3])
    assert int(row["task_ids"]) == task
    assert int(row["labels"]) == 5 * task + rank


def test_missing_folder_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_cifar100("train", data_dir=tmp_path / "nowhere")


def test_missing_key_names_file_and_key(tmp_path):
    folder = write_cifar100_pickles(tmp_path / "c", num_train=5, num_test=5)
    content = synthetic_cifar100_split(5)
    del content[b"fine_labels"]
    with (folder / "train").open("wb") as handle:
        pickle.dump(content, handle)
    with pytest.raises(CIFARFormatError) as error:
        load_cifar100("train", data_dir=folder)
    assert str(folder / "train") in str(error.value)
    assert "fine_labels" in str(error.value)


def test_string_keys_rejected(tmp_path):
    folder = write_cifar100_pickles(tmp_path / "c", num_train=5, num_test=5)
    content = {key.decode(): value for key, value in synthetic_cifar100_split(5).items()}
    with (folder / "test").open("wb") as handle:
        pickle.dump(content, handle)
    with pytest.raises(CIFARFormatError, match="missing the key"):
        load_cifar100("test", data_dir=folder)


def test_wrong_data_shape_rejected(tmp_path):
    folder = write_cifar100_pickles(tmp_path / "c", num_train=5, num_test=5)
    content = synthetic_cifar100_split(5)
    content[b"data"] = content[b"data"][:, :1024]
    with (folder / "train").open("wb") as handle:
        pickle.dump(content, handle)
    with pytest.raises(CIFARFormatError, match=r"\(5, 1024\)"):
        load_cifar100("train", data_dir=folder)


def test_label_outside_taxonomy_names_value_and_file(tmp_path):
    folder = write_cifar100_pickles(tmp_path / "c", num_train=5, num_test=5)
    content = synthetic_cifar100_split(5)
    content[b"fine_labels"][2] = 137
    with (folder / "train").open("wb") as handle:
        pickle.dump(content, handle)
    with pytest.raises(CIFARFormatError) as error:
        load_cifar100("train", data_dir=folder)
    assert "137" in str(error.value)
    assert str(folder / "train") in str(error.value)


def test_inconsistent_coarse_label_rejected(tmp_path):
    folder = write_cifar100_pickles(tmp_path / "c", num_train=5, num_test=5)
    content = synthetic_cifar100_split(5)
    content[b"coarse_labels"][0] = (content[b"coarse_labels"][0] + 1) % 20
    with (folder / "train").open("wb") as handle:
        pickle.dump(content, handle)
    with pytest.raises(CIFARFormatError, match="superclass"):
        load_cifar100("train", data_dir=folder)


def test_wrong_meta_names_rejected(tmp_path):
    folder = write_cifar100_pickles(tmp_path / "c", num_train=5, num_test=5)
    meta = {
        b"fine_label_names": [f"class{i}".encode() for i in range(100)],
        b"coarse_label_names": [name.encode() for name in CIFAR100_COARSE_LABEL_NAMES],
    }
    with (folder / "meta").open("wb") as handle:
        pickle.dump(meta, handle)
    with pytest.raises(CIFARFormatError, match="not CIFAR-100"):
        load_cifar100("train", data_dir=folder)


def test_not_a_pickle_rejected(tmp_path):
    folder = write_cifar100_pickles(tmp_path / "c", num_train=5, num_test=5)
    (folder / "train").write_text("not a pickle")
    with pytest.raises(CIFARFormatError, match="not a readable"):
        load_cifar100("train", data_dir=folder)


# ---- Hub schema ----------------------------------------------------------------------------------


def _real_samples() -> list[dict]:
    if not (CIFAR_SAMPLES / "labels.csv").is_file():
        pytest.skip(f"{CIFAR_SAMPLES} is absent: the 20 real CIFAR-100 images are not on this machine.")
    with (CIFAR_SAMPLES / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_real_images_map_through_hub_schema():
    rows = _real_samples()
    hub_like = datasets.Dataset.from_dict(
        {
            "img": [str(CIFAR_SAMPLES / row["file"]) for row in rows],
            "fine_label": [int(row["fine_label"]) for row in rows],
            "coarse_label": [int(row["coarse_label"]) for row in rows],
        },
        features=datasets.Features(
            {
                "img": datasets.Image(),
                "fine_label": datasets.ClassLabel(names=list(CIFAR100_FINE_LABEL_NAMES)),
                "coarse_label": datasets.ClassLabel(names=list(CIFAR100_COARSE_LABEL_NAMES)),
            }
        ),
    )
    multitask = cifar100_to_multitask(hub_like, source="cifar100 samples")
    taxonomy = cifar100_taxonomy()
    for index, row in enumerate(rows):
        example = multitask[index]
        task, label = int(example["task_ids"]), int(example["labels"])
        assert taxonomy.task_names[task] == row["coarse_name"], row["file"]
        assert label // 5 == task, row["file"]
        assert taxonomy.class_names[task][label % 5] == row["fine_name"], row["file"]
        assert example["pixel_values"].shape == (32, 32, 3)


def test_real_images_collate_to_unit_range():
    rows = _real_samples()
    examples = [
        {"pixel_values": Image.open(CIFAR_SAMPLES / row["file"]), "labels": 0, "task_ids": 0} for row in rows[:4]
    ]
    batch = MultitaskImageCollator()(examples)
    assert tuple(batch["pixel_values"].shape) == (4, 3, 32, 32)
    assert float(batch["pixel_values"].min()) >= 0.0
    assert float(batch["pixel_values"].max()) <= 1.0


def test_hub_schema_missing_column_rejected():
    dataset = datasets.Dataset.from_dict({"img": [np.zeros((32, 32, 3), np.uint8)], "label": [3]})
    with pytest.raises(CIFARFormatError, match="fine_label"):
        cifar100_to_multitask(dataset, source="my/dataset (train split)")


def test_channel_statistics_of_constant_images():
    dataset = datasets.Dataset.from_dict(
        {"pixel_values": [np.full((4, 4, 3), 51, np.uint8)] * 3, "labels": [0] * 3, "task_ids": [0] * 3}
    ).with_format("numpy")
    mean, std = channel_statistics(dataset)
    np.testing.assert_allclose(mean, [0.2] * 3)
    assert min(std) > 0


# ---- image folder ------------------------------------------------------------------------------


def _write_folder(root: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """Write PNGs into images.zip and an index CSV with columns path,task,label,split."""
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / "images.zip", "w") as archive:
        for index, (path, task, label, _) in enumerate(rows):
            buffer = io.BytesIO()
            Image.fromarray(np.full((10, 12), index * 10 % 256, np.uint8)).save(buffer, format="PNG")
            archive.writestr(path, buffer.getvalue())
    with (root / "index.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "task", "label", "split", "zip"])
        for path, task, label, split in rows:
            writer.writerow([path, task, label, split, "images.zip"])
    return root / "index.csv"


FOLDER_ROWS = [
    ("a/x1.png", "alpha", "x", "train"),
    ("a/y1.png", "alpha", "y", "train"),
    ("a/x2.png", "alpha", "x", "test"),
    ("b/p1.png", "beta", "p", "train"),
    ("b/q1.png", "beta", "q", "train"),
    ("b/r1.png", "beta", "r", "train"),
    ("b/r2.png", "beta", "r", "test"),
]
ZIP_LAYOUT = ImageIndexLayout(archive_column="zip")


def test_image_folder_reads_zip_members(tmp_path):
    index = _write_folder(tmp_path, FOLDER_ROWS)
    train, test, taxonomy = load_image_folder(index, ZIP_LAYOUT, image_size=8)
    assert taxonomy.task_names == ("alpha", "beta")
    assert taxonomy.num_classes_per_task == (2, 3)
    assert len(train) == 5
    assert len(test) == 2
    assert train[0]["pixel_values"].shape == (8, 8, 1)
    # alpha: x=0, y=1; beta: p=2, q=3, r=4.
    assert [int(test[i]["labels"]) for i in range(2)] == [0, 4]
    assert [int(test[i]["task_ids"]) for i in range(2)] == [0, 1]


def test_image_folder_unknown_test_label(tmp_path):
    index = _write_folder(tmp_path, FOLDER_ROWS + [("b/s2.png", "beta", "s", "test")])
    with pytest.raises(ValueError, match=r"line 9.*'s'"):
        load_image_folder(index, ZIP_LAYOUT)


def test_image_folder_missing_column(tmp_path):
    index = _write_folder(tmp_path, FOLDER_ROWS)
    with pytest.raises(ValueError, match="alphabet"):
        load_image_folder(index, OMNIGLOT_LAYOUT)


def test_image_folder_missing_member(tmp_path):
    index = _write_folder(tmp_path, FOLDER_ROWS)
    text = index.read_text().replace("b/r2.png", "b/gone.png")
    index.write_text(text)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        load_image_folder(index, ZIP_LAYOUT)


def test_image_folder_missing_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.csv"):
        load_image_folder(tmp_path / "index.csv")


def test_omniglot_layout_on_real_index():
    index = OMNIGLOT / "index.csv"
    if not index.is_file():
        pytest.skip(f"{index} is absent: the Omniglot sample is not on this machine.")
    train, test, taxonomy = load_image_folder(index, OMNIGLOT_LAYOUT, image_size=16)
    assert taxonomy.num_tasks == 8
    assert sum(taxonomy.num_classes_per_task) == 242
    # 242 characters x 20 drawers, drawers 16-20 held out; the shared copies count once.
    assert len(train) == 242 * 15
    assert len(test) == 242 * 5


def test_hub_offline_error_names_local_option():
    # The tests run with HF_HUB_OFFLINE=1 and an empty HF_HOME, so the Hub copy is unreachable.
    with pytest.raises(ConnectionError, match="--data_dir"):
        load_cifar100("test")
