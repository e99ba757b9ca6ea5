"""Two-level label taxonomies: tasks (superclasses) and the classes of each task.

A multitask image dataset here is a set of tasks, each a classification over its own classes. A
class's *rank* is its index within its task (0 .. n_task - 1). All classes are numbered task by
task, so task t owns the contiguous class indices (and logit columns)
`class_offsets[t] : class_offsets[t] + num_classes_per_task[t]`, and an example's label is
`class_offsets[task] + rank`.

The CIFAR-100 taxonomy is carried here as data (the superclass table published with the dataset
by Krizhevsky, 2009) so that the package needs no download to map labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Mapping, Sequence

# CIFAR-100 superclass -> its five fine classes, as published with the dataset. The label ids of
# the official `meta` file are the alphabetical order of these names (fine and coarse alike).
CIFAR100_SUPERCLASSES: Mapping[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}

CIFAR100_COARSE_LABEL_NAMES: tuple[str, ...] = tuple(sorted(CIFAR100_SUPERCLASSES))
CIFAR100_FINE_LABEL_NAMES: tuple[str, ...] = tuple(
    sorted(name for names in CIFAR100_SUPERCLASSES.values() for name in names)
)


@dataclass(frozen=True)
class TaskTaxonomy:
    """Tasks and the classes of each task, in a fixed order.

    Attributes:
        task_names: one name per task; the task id is the index in this tuple.
        class_names: per task, the names of its classes; a class's rank is its index there.
    """

    task_names: tuple[str, ...]
    class_names: tuple[tuple[str, ...], ...]

    def __post_init__(self):
        if len(self.task_names) != len(self.class_names):
            raise ValueError(
                f"{len(self.task_names)} task names but {len(self.class_names)} class lists: "
                "give one class list per task."
            )
        if len(set(self.task_names)) != len(self.task_names):
            raise ValueError(f"Duplicate task names in {list(self.task_names)}.")
        for task, classes in zip(self.task_names, self.class_names):
            if len(classes) < 2:
                raise ValueError(
                    f"Task {task!r} has {len(classes)} class(es) {list(classes)}: a "
                    "classification task needs at least 2 classes."
                )

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @cached_property
    def num_classes_per_task(self) -> tuple[int, ...]:
        return tuple(len(classes) for classes in self.class_names)

    @cached_property
    def class_offsets(self) -> tuple[int, ...]:
        """Index of each task's first class in the task-major order of all classes."""
        offsets, total = [], 0
        for count in self.num_classes_per_task:
            offsets.append(total)
            total += count
        return tuple(offsets)

    @property
    def num_classes(self) -> int:
        return sum(self.num_classes_per_task)

    def task_id(self, task_name: str) -> int:
        try:
            return self.task_names.index(task_name)
        except ValueError:
            raise KeyError(f"Unknown task {task_name!r}; known tasks: {list(self.task_names)}.")

    def to_dict(self) -> dict:
        return {"task_names": list(self.task_names), "class_names": [list(c) for c in self.class_names]}

    @classmethod
    def from_dict(cls, data: Mapping) -> "TaskTaxonomy":
        return cls(
            task_names=tuple(data["task_names"]),
            class_names=tuple(tuple(names) for names in data["class_names"]),
        )

    @classmethod
    def from_labels(cls, task_to_labels: Mapping[str, Sequence[str]]) -> "TaskTaxonomy":
        """Build a taxonomy from each task's label values, with tasks and classes sorted."""
        task_names = tuple(sorted(task_to_labels))
        return cls(
            task_names=task_names,
            class_names=tuple(tuple(sorted(set(task_to_labels[t]))) for t in task_names),
        )


def cifar100_taxonomy() -> TaskTaxonomy:
    """Return the 20 CIFAR-100 superclasses as tasks, each over its 5 fine classes.

    Task ids are the official coarse label ids and, within a task, the classes are ordered by
    their official fine label id, so rank r of task t is the r-th smallest fine id of superclass t.
    """
    return TaskTaxonomy(
        task_names=CIFAR100_COARSE_LABEL_NAMES,
        class_names=tuple(
            tuple(sorted(CIFAR100_SUPERCLASSES[coarse], key=CIFAR100_FINE_LABEL_NAMES.index))
            for coarse in CIFAR100_COARSE_LABEL_NAMES
        ),
    )


def _build_cifar100_fine_maps() -> tuple[tuple[int, ...], tuple[int, ...]]:
    taxonomy = cifar100_taxonomy()
    coarse_of_fine = [0] * len(CIFAR100_FINE_LABEL_NAMES)
    rank_of_fine = [0] * len(CIFAR100_FINE_LABEL_NAMES)
    for task_id, classes in enumerate(taxonomy.class_names):
        for rank, name in enumerate(classes):
            fine = CIFAR100_FINE_LABEL_NAMES.index(name)
            coarse_of_fine[fine] = task_id
            rank_of_fine[fine] = rank
    return tuple(coarse_of_fine), tuple(rank_of_fine)


# CIFAR100_FINE_TO_COARSE[f] is the official coarse label of fine label f and
# CIFAR100_FINE_TO_RANK[f] its rank within that superclass.
CIFAR100_FINE_TO_COARSE, CIFAR100_FINE_TO_RANK = _build_cifar100_fine_maps()


def cifar100_task_and_rank(fine_label: int) -> tuple[int, int]:
    """Map a CIFAR-100 fine label (0..99) to (superclass id, rank within the superclass)."""
    if not 0 <= int(fine_label) < len(CIFAR100_FINE_TO_COARSE):
        raise ValueError(
            f"CIFAR-100 fine label {fine_label!r} is outside the taxonomy (valid labels: 0..99)."
        )
    return CIFAR100_FINE_TO_COARSE[fine_label], CIFAR100_FINE_TO_RANK[fine_label]
