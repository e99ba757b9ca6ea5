#!/usr/bin/env python
"""Multitask image classification with static mixing, DRO, L-DRO or PCGrad (Michel, Ruder &
Yogatama, "Balancing Average and Worst-Case Accuracy in Multitask Learning", section 5.1).

Tasks: the 20 CIFAR-100 superclasses (5-way each), or the tasks of an image folder with an index
CSV (Omniglot: alphabets). Every run goes into `<output_dir>/<run name>/`; every evaluation of
every run is a line of `<output_dir>/evals.jsonl`, and `<output_dir>/pareto.{json,png}` hold the
Pareto frontiers of (average, worst) task accuracy per method.

Example (the paper's grid on CIFAR-100 from the Hub, three seeds):

    python run_cifar_ldro.py --output_dir runs/cifar --sweep paper --seeds 0 1 2 --num_train_epochs 20

Arguments: the dataclasses below plus `transformers.TrainingArguments` (with the paper's SGD
defaults, see `ExperimentTrainingArguments`); a single .json argument is read as a file of them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import transformers
from transformers import HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType
from transformers.training_args import OptimizerNames

from hf_ldro.arguments import LDROArguments, weighting_from_arguments
from hf_ldro.vision import (
    OMNIGLOT_LAYOUT,
    CIFARFormatError,
    ImageIndexLayout,
    MultitaskCNN,
    MultitaskCNNConfig,
    MultitaskImageCollator,
    channel_statistics,
    cifar100_taxonomy,
    load_cifar100,
    load_image_folder,
    make_compute_metrics,
)
from hf_ldro.vision.experiment import (
    EVALS_FILE,
    METHODS,
    PAPER_SWEEP_METHODS,
    EvaluationRecorder,
    RunSpec,
    build_run_specs,
    drop_run_records,
    format_summary_table,
    read_evals,
    write_pareto_summary,
)
from hf_ldro.vision.metrics import ACCURACY_SCOPES
from hf_ldro.vision.models import HEAD_TYPES, MODEL_PRESETS
from hf_ldro.vision.trainer import MultitaskClassificationPCGradTrainer, MultitaskClassificationTrainer

logger = logging.getLogger(__name__)

DATASETS = ("cifar100", "omniglot", "image_folder")


@dataclass
class DataArguments:
    dataset: str = field(
        default="cifar100",
        metadata={
            "help": "cifar100 (20 superclasses as 5-way tasks; local pickles with --data_dir, else "
            "the Hub copy), omniglot (alphabets as tasks, from the small Omniglot index and zips), "
            "or image_folder (any index CSV, see the *_column options).",
            "choices": list(DATASETS),
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "cifar100: the extracted cifar-100-python folder (files train, test, meta); "
            "omniglot and image_folder: the folder of the index CSV."
        },
    )
    hub_dataset_name: str = field(
        default="uoft-cs/cifar100", metadata={"help": "Hub dataset used for cifar100 without --data_dir."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder of the Hub download."})
    index_file: str = field(default="index.csv", metadata={"help": "Index CSV name inside --data_dir."})
    task_column: str = field(default="task", metadata={"help": "image_folder: CSV column of the task name."})
    label_column: str = field(default="label", metadata={"help": "image_folder: CSV column of the class within the task."})
    path_column: str = field(default="path", metadata={"help": "image_folder: CSV column of the image path."})
    archive_column: str | None = field(
        default=None, metadata={"help": "image_folder: CSV column naming the zip archive holding the image."}
    )
    split_column: str = field(default="split", metadata={"help": "image_folder: CSV column deciding the split."})
    test_values: list[str] = field(
        default_factory=lambda: ["test"],
        metadata={"help": "image_folder: values of --split_column that put a row in the test split."},
    )
    exclude_column: str | None = field(
        default=None, metadata={"help": "image_folder: rows where this column is 1/true/yes are skipped."}
    )
    image_size: int = field(
        default=32, metadata={"help": "omniglot and image_folder: resize images to this many pixels square."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on a random subset of this many examples (fixed by --data_seed or 0)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on a random subset of this many test examples."}
    )

    def __post_init__(self):
        if self.dataset != "cifar100" and self.data_dir is None:
            raise ValueError(f"--dataset {self.dataset} needs --data_dir, the folder of its index CSV.")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}.")


@dataclass
class ModelArguments:
    model: str = field(
        default="small",
        metadata={
            "help": "small: 4 conv layers of 32 filters + 3-layer MLP of width 128 (the paper's); "
            "large: 3 conv layers of 160 filters + 2-layer MLP of width 320.",
            "choices": list(MODEL_PRESETS),
        },
    )
    head: str = field(
        default="shared",
        metadata={
            "help": "shared: one softmax over the classes of all tasks (the paper's); per_task: one "
            "output layer and softmax per task.",
            "choices": list(HEAD_TYPES),
        },
    )
    accuracy_scope: str = field(
        default="task",
        metadata={
            "help": "task: predict the argmax over the example's own task's classes (the n-way task); "
            "all: argmax over every class of every task (shared head only).",
            "choices": list(ACCURACY_SCOPES),
        },
    )

    def __post_init__(self):
        if self.accuracy_scope == "all" and self.head == "per_task":
            raise ValueError(
                "--accuracy_scope all compares the scores of separately normalised per-task heads: "
                "use it with --head shared only."
            )


@dataclass
class MethodArguments:
    method: list[str] | None = field(
        default=None,
        metadata={
            "help": "Method(s) to train: static (uniform weights), dro (online DRO), ldro (online "
            "Lookahead-DRO), ldro_exact (Lookahead-DRO solved every step), pcgrad. Default: static, "
            f"or {' '.join(PAPER_SWEEP_METHODS)} with --sweep paper.",
            "choices": list(METHODS),
        },
    )
    sweep: str = field(
        default="none",
        metadata={
            "help": "none: each method once with the hyperparameters below; paper: DRO eta in "
            "{0, 1e-4, 1e-3, 1e-2, 1e-1}, L-DRO eta in {1e-2, 1e-3, 1e-4} x lambda in {1e-3, 1e-2, 1e-1}.",
            "choices": ["none", "paper"],
        },
    )
    seeds: list[int] | None = field(
        default=None, metadata={"help": "Seeds; every run is repeated for each (default: --seed)."}
    )
    dro_eta: float = field(default=1e-2, metadata={"help": "DRO weight update rate (without --sweep paper)."})
    ldro_eta: float = field(default=1e-2, metadata={"help": "L-DRO weight update rate (without --sweep paper)."})
    ldro_lookahead_lr: float = field(
        default=1e-2, metadata={"help": "L-DRO lookahead learning rate lambda (without --sweep paper)."}
    )
    ldro_update_interval: int = field(
        default=100, metadata={"help": "Refresh the L-DRO interaction matrix every this many optimizer steps."}
    )


@dataclass
class ExperimentTrainingArguments(TrainingArguments):
    """TrainingArguments with the paper's defaults: SGD, lr 0.025, Nesterov momentum 0.9, batch 128."""

    output_dir: str | None = field(default=None, metadata={"help": "Folder of the runs, evals.jsonl and pareto.*."})
    learning_rate: float = field(default=0.025, metadata={"help": "Initial learning rate of the optimizer."})
    optim: OptimizerNames | str = field(default="sgd", metadata={"help": "Optimizer name."})
    optim_args: str | None = field(
        default="momentum=0.9,nesterov=True", metadata={"help": "Comma-separated optimizer options, e.g. SGD momentum and nesterov."}
    )
    lr_scheduler_type: SchedulerType | str = field(default="constant", metadata={"help": "Learning-rate schedule."})
    per_device_train_batch_size: int = field(default=128, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=512, metadata={"help": "Evaluation batch size per device."})
    eval_strategy: IntervalStrategy | str = field(default="epoch", metadata={"help": "When to evaluate on the test split: steps or epoch."})
    save_strategy: SaveStrategy | str = field(default="no", metadata={"help": "When to save checkpoints; the final model of each run is always saved."})
    logging_steps: float = field(default=50, metadata={"help": "Log the training loss and task weights every this many steps."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Experiment trackers that receive the logs (none, tensorboard, wandb, ...)."})


def load_data(data_args: DataArguments, seed: int):
    """Return (train, test, task names, classes per task) in the multitask schema."""
    if data_args.dataset == "cifar100":
        train = load_cifar100("train", data_args.data_dir, data_args.hub_dataset_name, data_args.cache_dir)
        test = load_cifar100("test", data_args.data_dir, data_args.hub_dataset_name, data_args.cache_dir)
        taxonomy = cifar100_taxonomy()
    else:
        if data_args.dataset == "omniglot":
            layout = OMNIGLOT_LAYOUT
        else:
            layout = ImageIndexLayout(
                task_column=data_args.task_column,
                label_column=data_args.label_column,
                path_column=data_args.path_column,
                archive_column=data_args.archive_column,
                split_column=data_args.split_column,
                test_values=tuple(data_args.test_values),
                exclude_column=data_args.exclude_column,
            )
        index = Path(data_args.data_dir) / data_args.index_file
        if not Path(data_args.data_dir).is_dir():
            raise FileNotFoundError(f"--data_dir {data_args.data_dir} not found: pass the folder of {data_args.index_file}.")
        train, test, taxonomy = load_image_folder(index, layout, image_size=data_args.image_size)

    if data_args.max_train_samples is not None and data_args.max_train_samples < len(train):
        train = train.shuffle(seed=seed).select(range(data_args.max_train_samples))
    if data_args.max_eval_samples is not None and data_args.max_eval_samples < len(test):
        test = test.shuffle(seed=seed).select(range(data_args.max_eval_samples))
    return train, test, list(taxonomy.task_names), list(taxonomy.num_classes_per_task)


def train_one_run(run: RunSpec, data, model_args, method_args, training_args, image_stats) -> dict:
    """Train one run in its own folder; return its final evaluation metrics."""
    train, test, task_names, classes_per_task = data
    run_dir = Path(training_args.output_dir) / run.name
    args = dataclasses.replace(training_args, output_dir=str(run_dir), seed=run.seed)
    evals_path = Path(training_args.output_dir) / EVALS_FILE
    removed = drop_run_records(evals_path, run)
    if removed:
        logger.info("Replacing %d earlier evaluation records of %s.", removed, run.name)

    set_seed(run.seed)
    mean, std = image_stats
    config = MultitaskCNNConfig.from_preset(
        model_args.model,
        num_channels=len(mean),
        num_classes_per_task=classes_per_task,
        task_names=task_names,
        head=model_args.head,
        image_mean=mean,
        image_std=std,
    )
    model = MultitaskCNN(config)

    weighting_method = "static" if run.method == "pcgrad" else run.method
    ldro_args = LDROArguments(
        method=weighting_method,
        mixing_alpha=0.0,  # uniform static weights, the paper's static-mixing baseline
        ldro_update_interval=method_args.ldro_update_interval,
        **run.hparams,
    )
    trainer_class = MultitaskClassificationPCGradTrainer if run.method == "pcgrad" else MultitaskClassificationTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        data_collator=MultitaskImageCollator(),
        compute_metrics=make_compute_metrics(task_names, classes_per_task, scope=model_args.accuracy_scope),
        weighting=weighting_from_arguments(ldro_args, task_names),
        ldro_args=ldro_args,
        callbacks=[EvaluationRecorder(evals_path, run, task_names)],
    )
    logger.info("Run %s: %s, %d parameters", run.name, trainer.weighting, model.num_parameters())
    train_result = trainer.train()
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    (run_dir / "run.json").write_text(
        json.dumps({"method": run.method, "hparams": dict(run.hparams), "seed": run.seed}, indent=2) + "\n"
    )
    return train_result.metrics


def check_paths_and_sample_limits(data_args: DataArguments, training_args: TrainingArguments) -> str | None:
    """Return a usage error for a missing data folder or a file given as the output folder."""
    if data_args.data_dir is not None:
        data_dir = Path(data_args.data_dir)
        if not data_dir.exists():
            return f"--data_dir {data_dir} does not exist: pass the folder that holds the data."
        if not data_dir.is_dir():
            return f"--data_dir {data_dir} is a file, not a folder: pass the folder that holds the data."
    output_dir = Path(training_args.output_dir)
    for path in (output_dir, *output_dir.parents):
        if path.exists() and not path.is_dir():
            return f"--output_dir {output_dir}: {path} is an existing file, not a folder."
    return None


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((DataArguments, ModelArguments, MethodArguments, ExperimentTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            data_args, model_args, method_args, training_args = parser.parse_json_file(json_file=argv[0])
        else:
            data_args, model_args, method_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:
        # The argument dataclasses check their values in __post_init__.
        parser.error(str(error))
    if training_args.output_dir is None:
        parser.error("--output_dir is required: the runs, evals.jsonl and pareto.* are written there.")
    problem = check_paths_and_sample_limits(data_args, training_args)
    if problem:
        parser.error(problem)

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    logging.getLogger("hf_ldro").setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)

    methods = method_args.method or (list(PAPER_SWEEP_METHODS) if method_args.sweep == "paper" else ["static"])
    seeds = method_args.seeds if method_args.seeds is not None else [training_args.seed]
    runs = build_run_specs(
        methods,
        seeds,
        method_args.sweep,
        dro_eta=method_args.dro_eta,
        ldro_eta=method_args.ldro_eta,
        ldro_lookahead_lr=method_args.ldro_lookahead_lr,
    )
    data_seed = training_args.data_seed if training_args.data_seed is not None else 0
    data = load_data(data_args, data_seed)
    image_stats = channel_statistics(data[0])
    logger.info(
        "%d tasks, %d train and %d test examples; %d run(s): %s",
        len(data[2]),
        len(data[0]),
        len(data[1]),
        len(runs),
        ", ".join(run.name for run in runs),
    )

    Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
    started = time.time()
    for index, run in enumerate(runs, start=1):
        logger.info("Run %d/%d: %s", index, len(runs), run.name)
        train_one_run(run, data, model_args, method_args, training_args, image_stats)

    elapsed = time.time() - started
    if not read_evals(Path(training_args.output_dir) / EVALS_FILE):
        logger.warning(
            "%d run(s) in %.0f s, but no evaluation was recorded (--eval_strategy %s), so no Pareto "
            "frontier was written.",
            len(runs),
            elapsed,
            getattr(training_args.eval_strategy, "value", training_args.eval_strategy),
        )
        return {}
    summary = write_pareto_summary(training_args.output_dir, title=f"{data_args.dataset}, {model_args.model} model")
    logger.info("%d run(s) in %.0f s; Pareto frontiers in %s", len(runs), elapsed, training_args.output_dir)
    print(format_summary_table(summary))
    return summary


if __name__ == "__main__":
    try:
        main()
    except (CIFARFormatError, FileNotFoundError, ConnectionError) as error:
        # Bad data and an unreachable Hub are user errors: one line, not a traceback.
        sys.exit(f"run_cifar_ldro.py: error: {error}")
