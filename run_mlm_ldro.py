#!/usr/bin/env python
"""Multilingual language-model pretraining with task weighting: static mixing, DRO or L-DRO.

Each language is a task. The script follows transformers' `run_clm.py`: argument dataclasses
parsed by `HfArgumentParser` (or one `.json` file with the same keys), per-rank log levels,
last-checkpoint detection, and the `log_metrics` / `save_metrics` / `save_state` / model-card tail.

First run, on the chatterbot-corpus demo languages with a small GPT-2 (minutes on a 2-core CPU):

    python run_mlm_ldro.py --output_dir runs/demo

Other data: `--data_dir <dir>/<lang>/{train,validation}.jsonl[.gz]`, `--train_files lang=path`,
or `--mc4 --languages yo,sw` (streamed from the Hub). `--method monolingual` trains a reference
model on one language and writes `<output_dir>/reference.json`, which `--reference_losses` reads
for baselined DRO and relative perplexity. See docs/run_mlm.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import socket
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import datasets
import torch
import transformers
from transformers import (
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    HfArgumentParser,
    TrainerState,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from transformers.trainer import TRAINER_STATE_NAME

from hf_ldro.arguments import (
    WEIGHTING_METHODS,
    LDROArguments,
    check_argument_types,
    weighting_from_arguments,
)
from hf_ldro.checkpoints import (
    changed_weighting_settings,
    checkpoint_config_differences,
    checkpoint_global_step,
    checkpoint_problem,
    checkpoint_task_names,
    checkpoint_weighting_state,
    last_complete_checkpoint,
)
from hf_ldro.data import (
    BYTE_LEVEL,
    DataError,
    LanguageData,
    TaskStratifiedStream,
    build_eval_datasets,
    build_tokenizer,
    load_languages,
    load_pretrained_tokenizer,
)
from hf_ldro.metrics import perplexity_table
from hf_ldro.modeling import add_mask_token, build_config, build_model, check_config_overrides
from hf_ldro.reporting import plot_perplexities, plot_task_weights
from hf_ldro.trainer import (
    TASK_WEIGHTING_STATE_NAME,
    TASK_WEIGHTS_LOG_NAME,
    LDROTrainer,
    NonFiniteTaskLossError,
)
from hf_ldro.weighting import TaskWeighting

logger = logging.getLogger(__name__)

MONOLINGUAL = "monolingual"
SCRIPT_METHODS = (*WEIGHTING_METHODS, MONOLINGUAL)

# Demo languages of the chatterbot-corpus package used when no data is given: four scripts and a
# 200x spread in size (English about 200 KB of conversations, Yoruba about 1 KB).
DEMO_LANGUAGES = ("english", "hindi", "japanese", "yoruba")

REFERENCE_FILE_NAME = "reference.json"
TOKENIZER_FOLDER_NAME = "tokenizer"
TASK_WEIGHTS_PLOT_NAME = "task_weights.png"
PERPLEXITY_PLOT_NAME = "perplexity.png"

# Training defaults that differ from TrainingArguments' own, sized so that the first command
# trains a small model from scratch in a few minutes. Every one can be overridden on the command
# line or in the JSON config; real runs raise max_steps and the model size.
SCRIPT_TRAINING_DEFAULTS: dict[str, Any] = {
    "max_steps": 400,
    "learning_rate": 2e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "weight_decay": 0.01,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 16,
    "logging_steps": 20,
    "save_steps": 200,
    "save_total_limit": 2,
    "report_to": "none",
}


class UsageError(ValueError):
    """Invalid arguments or data found before training; the message names the value and the fix."""


def split_list_argument(values: str | Sequence[str] | None) -> list[str] | None:
    """Flatten `["a,b", "c"]` (or `"a,b"` from a JSON config) to `["a", "b", "c"]`."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values for item in str(value).split(",") if item.strip()]


@dataclass
class ModelArguments:
    """Model and tokenizer to train, and the pretraining objective."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Pretrained model (Hub id or folder) to continue training; default: a new "
            "model built from --config_name or --model_type."
        },
    )
    model_type: str | None = field(
        default=None,
        metadata={
            "help": "Model type of a new model (a transformers config name); default gpt2, or "
            "roberta with --mlm. A new model from a model type starts with 2 layers of width 128."
        },
    )
    config_name: str | None = field(
        default=None, metadata={"help": "Config (Hub id or folder) of a new model."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Config fields to override for a new model, as comma-separated field=value "
            "pairs, e.g. n_layer=4,n_embd=256,n_head=4."
        },
    )
    mlm: bool = field(
        default=False,
        metadata={
            "help": "Masked-LM pretraining (RoBERTa style, DataCollatorForLanguageModeling) "
            "instead of causal LM."
        },
    )
    mlm_probability: float = field(
        default=0.15, metadata={"help": "Fraction of tokens masked with --mlm."}
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={
            "help": "Pretrained tokenizer (Hub id or folder); default: the one of "
            "--model_name_or_path, or a SentencePiece unigram tokenizer trained on the training "
            "languages."
        },
    )
    byte_tokenizer: bool = field(
        default=False,
        metadata={"help": "Use UTF-8 bytes as tokens (ByT5Tokenizer) instead of training a tokenizer."},
    )
    tokenizer_vocab_size: int = field(
        default=4000,
        metadata={
            "help": "Maximum vocabulary size of the trained SentencePiece tokenizer (small "
            "corpora get fewer pieces)."
        },
    )
    tokenizer_temperature: float = field(
        default=10 / 3,
        metadata={
            "help": "Temperature T of the language mix the tokenizer is trained on: language i "
            "gets a share proportional to size_i^(1/T). 1 is proportional to size, larger is "
            "flatter; the default 3.33 is the exponent 0.3 of mT5 and XLM-R."
        },
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Folder for models and datasets downloaded from the Hub."}
    )
    model_revision: str = field(
        default="main", metadata={"help": "Branch, tag or commit of the pretrained model."}
    )
    token: str | None = field(
        default=None, metadata={"help": "Hub token for private models (default: the stored login)."}
    )

    def __post_init__(self) -> None:
        check_argument_types(self)
        if self.config_overrides and self.model_name_or_path:
            raise UsageError(
                f"--config_overrides {self.config_overrides!r} cannot be combined with "
                f"--model_name_or_path {self.model_name_or_path}: a pretrained model's weights fix "
                "its sizes. Drop one of them."
            )
        if self.byte_tokenizer and self.tokenizer_name:
            raise UsageError(
                f"--byte_tokenizer and --tokenizer_name {self.tokenizer_name} both choose the "
                "tokenizer: pass only one."
            )
        if not 0.0 < self.mlm_probability < 1.0:
            raise UsageError(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        if self.tokenizer_vocab_size < 300:
            raise UsageError(
                f"--tokenizer_vocab_size {self.tokenizer_vocab_size} is too small: the trained "
                "tokenizer keeps 259 byte and special pieces, so use at least 300."
            )
        if not (math.isfinite(self.tokenizer_temperature) and self.tokenizer_temperature > 0):
            raise UsageError(
                f"--tokenizer_temperature must be a finite number > 0, got {self.tokenizer_temperature}."
            )

    def hub_kwargs(self) -> dict[str, Any]:
        return {"cache_dir": self.cache_dir, "revision": self.model_revision, "token": self.token}


@dataclass
class DataTrainingArguments:
    """Languages to train on, the source of their text, and the block size."""

    languages: list[str] | None = field(
        default=None,
        metadata={
            "help": "Languages (task names) to train on, in task order: comma-separated or "
            "several values. Default: every language of the data (of the demo corpus: "
            + ",".join(DEMO_LANGUAGES)
            + "). Required with --mc4 (mC4 codes such as yo,sw,en).",
            "action": "extend",
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder with one subfolder per language holding train.jsonl[.gz] (or .txt) "
            "and validation.jsonl[.gz]; the subfolder name is the language."
        },
    )
    train_files: list[str] | None = field(
        default=None,
        metadata={
            "help": "Training files as LANG=PATH[,PATH...] entries, one per language "
            "(.jsonl, .json or .txt, optionally .gz).",
            "action": "extend",
        },
    )
    validation_files: list[str] | None = field(
        default=None,
        metadata={"help": "Validation files as LANG=PATH[,PATH...] entries.", "action": "extend"},
    )
    mc4: bool = field(
        default=False,
        metadata={
            "help": "Stream the --languages from mC4 on the Hub (datasets streaming); give "
            "--dataset_sizes for static mixing."
        },
    )
    mc4_dataset: str = field(
        default="allenai/c4", metadata={"help": "Hub dataset read by --mc4, one config per language."}
    )
    text_field: str = field(
        default="text", metadata={"help": "JSON field (or Hub column) that holds the text."}
    )
    block_size: int = field(
        default=128, metadata={"help": "Tokens per training example; each block holds one language."}
    )
    max_eval_blocks: int | None = field(
        default=64,
        metadata={"help": "Evaluate on at most this many blocks per language (all when unset)."},
    )
    encoding_errors: str = field(
        default="strict",
        metadata={
            "help": "Handling of invalid UTF-8 in local data files: strict stops with the file, "
            "line and byte offset; replace turns each invalid byte sequence into U+FFFD and logs "
            "a warning with the number of affected lines per file.",
            "choices": ["strict", "replace"],
        },
    )

    def __post_init__(self) -> None:
        check_argument_types(self)
        self.languages = split_list_argument(self.languages)
        self.train_files = split_list_argument_entries(self.train_files)
        self.validation_files = split_list_argument_entries(self.validation_files)
        if self.block_size < 2:
            raise UsageError(f"--block_size must be >= 2 tokens, got {self.block_size}.")
        if self.max_eval_blocks is not None and self.max_eval_blocks < 1:
            raise UsageError(f"--max_eval_blocks must be >= 1, got {self.max_eval_blocks}.")
        origins = [
            name
            for name, is_set in (
                ("--data_dir", self.data_dir is not None),
                ("--train_files", self.train_files is not None),
                ("--mc4", self.mc4),
            )
            if is_set
        ]
        if len(origins) > 1:
            raise UsageError(f"{' and '.join(origins)} both give the training data: pass only one.")
        if self.validation_files is not None and self.train_files is None:
            raise UsageError("--validation_files needs --train_files for the same languages.")
        if self.mc4 and not self.languages:
            raise UsageError("--mc4 needs --languages: name the mC4 language codes, e.g. yo,sw,en.")


def split_list_argument_entries(values: str | Sequence[str] | None) -> list[str] | None:
    """Normalise `LANG=PATH[,PATH]` entries from the command line or a JSON config to a list."""
    if values is None:
        return None
    if isinstance(values, str):
        return [values]
    return [str(value) for value in values]


@dataclass
class PretrainingLDROArguments(LDROArguments):
    """LDROArguments plus the `monolingual` method and reference values read from several sources."""

    method: str = field(
        default="ldro",
        metadata={
            "help": "Task-weighting method: static (|D_i|^alpha sampling), dro (online DRO), "
            "baselined_dro (DRO on loss minus a reference loss), ldro (online Lookahead-DRO), "
            "ldro_exact (Lookahead-DRO solved as a zero-sum game every step), or monolingual "
            f"(train on one language and write {REFERENCE_FILE_NAME} with its validation loss "
            "and perplexity).",
            "choices": list(SCRIPT_METHODS),
        },
    )
    reference_losses: list[str] | None = field(
        default=None,
        metadata={
            "help": f"Reference loss per language (nats per token): {REFERENCE_FILE_NAME} files of "
            "monolingual runs, JSON files {lang: loss}, or inline JSON objects; merged over "
            "languages. Needed by baselined_dro; also gives reference perplexities exp(loss).",
            "action": "extend",
        },
    )
    reference_perplexities: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reference perplexity per language, for relative perplexity: sources as for "
            "--reference_losses. Default: exp of the reference losses.",
            "action": "extend",
        },
    )

    def __post_init__(self) -> None:
        # {reference file: vocabulary fingerprint of the tokenizer it was measured with}
        self.reference_tokenizers: dict[str, str] = {}
        self.reference_losses = merge_reference_sources(
            "losses", self.reference_losses, self.reference_tokenizers
        )
        self.reference_perplexities = merge_reference_sources(
            "perplexities", self.reference_perplexities, self.reference_tokenizers
        )
        if self.reference_perplexities is None and self.reference_losses is not None:
            self.reference_perplexities = {
                language: math.exp(loss) for language, loss in self.reference_losses.items()
            }
        method = self.method
        if method == MONOLINGUAL:
            # The base class accepts only the weighting methods, and one task needs no weighting.
            self.method = "static"
        try:
            super().__post_init__()
        finally:
            self.method = method

    @property
    def monolingual(self) -> bool:
        return self.method == MONOLINGUAL


def read_reference_source(
    kind: str, source: str | Mapping[str, Any]
) -> tuple[dict[str, float], str, str | None]:
    """Read one reference source into {language: value}.

    A source is a mapping, an inline JSON object, or a JSON file holding either a mapping
    {language: value} or a `reference.json` written by a monolingual run (whose
    `reference_<kind>` entry is used).

    Returns:
        (values, description of the source for messages, vocabulary fingerprint of the tokenizer
        recorded in a reference.json or None).
    """
    flag = f"--reference_{kind}"
    if isinstance(source, Mapping):
        content, origin = dict(source), f"{flag} mapping"
    elif str(source).lstrip().startswith("{"):
        origin = f"{flag} inline JSON {source!r}"
        try:
            content = json.loads(source)
        except json.JSONDecodeError as error:
            raise UsageError(f"{origin} is not valid JSON: {error}.") from error
    else:
        path = Path(source)
        origin = str(path)
        if not path.is_file():
            raise UsageError(
                f"{flag}: file {origin} not found. Pass the {REFERENCE_FILE_NAME} of a "
                "monolingual run, a JSON file {lang: value} or an inline JSON object."
            )
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise UsageError(f"{flag}: {origin} is not valid JSON: {error}.") from error
    if not isinstance(content, dict):
        raise UsageError(f"{origin} must hold a JSON object {{lang: value}}, got {type(content).__name__}.")
    fingerprint = content.get("tokenizer_fingerprint")
    content = content.get(f"reference_{kind}", content)
    if not isinstance(content, dict):
        raise UsageError(f"{origin}: reference_{kind} must be a JSON object {{lang: value}}.")

    values: dict[str, float] = {}
    for language, value in content.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UsageError(
                f"{origin}: the reference value of {language!r} is {value!r}; expected a finite number."
            )
        if value < 0 or (kind == "perplexities" and value <= 0):
            raise UsageError(f"{origin}: the reference value of {language!r} is {value}; expected > 0.")
        values[str(language)] = float(value)
    return values, origin, fingerprint


def merge_reference_sources(
    kind: str,
    sources: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]] | None,
    fingerprints: dict[str, str] | None = None,
) -> dict[str, float] | None:
    """Merge reference `kind` ("losses" or "perplexities") from several sources over languages.

    `fingerprints`, when given, receives {source: tokenizer vocabulary fingerprint} for the
    reference.json files that record one.

    Raises:
        UsageError: a source is missing or invalid, or two sources give different values for one
            language.
    """
    if sources is None:
        return None
    if isinstance(sources, (str, Mapping)):
        sources = [sources]
    merged: dict[str, float] = {}
    origins: dict[str, str] = {}
    for source in sources:
        values, origin, fingerprint = read_reference_source(kind, source)
        if fingerprint is not None and fingerprints is not None:
            fingerprints[origin] = fingerprint
        for language, value in values.items():
            if language in merged and not math.isclose(merged[language], value, rel_tol=1e-9):
                raise UsageError(
                    f"--reference_{kind}: {language!r} is {merged[language]} in {origins[language]} "
                    f"but {value} in {origin}: keep one source per language."
                )
            merged[language] = value
            origins[language] = origin
    return merged


def vocabulary_fingerprint(tokenizer) -> str:
    """Return a short SHA-256 of the tokenizer's vocabulary (token -> id), to tell tokenizers apart."""
    vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    encoded = json.dumps(vocabulary, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:16]


def check_reference_tokenizers(reference_tokenizers: Mapping[str, str], tokenizer) -> None:
    """Raise a UsageError when a reference was measured with another tokenizer than this run's.

    Losses in nats per token, and the perplexities derived from them, are only comparable over
    the same vocabulary.
    """
    current = vocabulary_fingerprint(tokenizer)
    for origin, fingerprint in reference_tokenizers.items():
        if fingerprint != current:
            raise UsageError(
                f"{origin} was measured with another tokenizer (vocabulary {fingerprint}) than "
                f"this run's ({current}), so its losses and perplexities are not comparable. Use "
                "the same tokenizer in both runs: --byte_tokenizer, or --tokenizer_name with the "
                f"{TOKENIZER_FOLDER_NAME} folder of the first run."
            )


def require_references(kind: str, values: Mapping[str, float] | None, languages: Sequence[str]) -> None:
    """Raise a UsageError naming the languages that have no reference value."""
    if values is None:
        return
    missing = [language for language in languages if language not in values]
    if missing:
        raise UsageError(
            f"--reference_{kind} has no value for language(s) {missing} (it has "
            f"{sorted(values)}). Train a reference for each with --method {MONOLINGUAL} "
            f"--languages <lang> and pass its {REFERENCE_FILE_NAME}."
        )


def launched_world_size() -> int:
    """Return the number of processes a launcher (torchrun, accelerate launch) started; 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def accelerator_available() -> bool:
    """Return whether torch detects an accelerator (CUDA, XPU, MPS, ...)."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return accelerator.is_available()
    return torch.cuda.is_available()


def parse_arguments(
    args: Sequence[str] | None = None,
) -> tuple[ModelArguments, DataTrainingArguments, PretrainingLDROArguments, TrainingArguments]:
    """Parse the command line, or a single `.json` file with the same keys, into the four dataclasses.

    `SCRIPT_TRAINING_DEFAULTS` replaces TrainingArguments' defaults, and a run given neither
    --do_train nor --do_eval does both.
    """
    args = list(sys.argv[1:] if args is None else args)
    parser = HfArgumentParser(
        (ModelArguments, DataTrainingArguments, PretrainingLDROArguments, TrainingArguments)
    )
    defaults = dict(SCRIPT_TRAINING_DEFAULTS)
    if not accelerator_available():
        # Pinned memory only helps copies to an accelerator; without one torch warns on every loader.
        defaults["dataloader_pin_memory"] = False
        if launched_world_size() > 1:
            # transformers 5 runs each process of a CPU-only torchrun launch as its own
            # one-process job (same data, same output folder) unless use_cpu is set.
            defaults["use_cpu"] = True
    parser.set_defaults(**defaults)
    try:
        if len(args) == 1 and args[0].endswith(".json"):
            config_path = Path(args[0])
            if not config_path.is_file():
                raise UsageError(f"Config file {config_path} not found.")
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise UsageError(f"Config file {config_path} is not valid JSON: {error}.") from error
            try:
                parsed = parser.parse_dict({**defaults, **config})
            except ValueError as error:
                raise UsageError(f"Config file {config_path}: {error}") from error
        else:
            parsed = parser.parse_args_into_dataclasses(args=args)
    except UsageError:
        raise
    except ValueError as error:
        raise UsageError(str(error)) from error
    model_args, data_args, ldro_args, training_args = parsed

    # Reading the device sets up the process group, so world_size below is the Trainer's.
    training_args.device  # noqa: B018
    expected_world_size = launched_world_size()
    if training_args.world_size != expected_world_size:
        raise UsageError(
            f"The launcher started {expected_world_size} processes (WORLD_SIZE) but the Trainer "
            f"sees {training_args.world_size}, so each process would train alone on the same data. "
            "On a machine without GPU pass --use_cpu true."
        )
    if not training_args.do_train and not training_args.do_eval:
        training_args.do_train = True
        training_args.do_eval = True
    check_output_dir(training_args.output_dir)
    for flag in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        batch_size = getattr(training_args, flag)
        if batch_size < 1:
            raise UsageError(f"--{flag} must be an integer >= 1, got {batch_size}.")
    for flag in ("model_name_or_path", "config_name", "tokenizer_name"):
        name = getattr(model_args, flag)
        if name is not None:
            setattr(model_args, flag, check_local_folder(flag, name))
    if training_args.do_train and training_args.max_steps <= 0:
        raise UsageError(
            f"--max_steps is {training_args.max_steps}: the training data is an endless stream "
            "of blocks, so give the number of optimizer steps (> 0)."
        )
    if ldro_args.monolingual and not training_args.do_eval:
        raise UsageError(
            f"--method {MONOLINGUAL} writes the validation loss to {REFERENCE_FILE_NAME}: "
            "do not turn evaluation off (pass --do_eval or neither --do_train nor --do_eval)."
        )
    if model_args.config_overrides and not model_args.config_name:
        try:
            check_config_overrides(model_args.config_overrides, model_args.model_type, model_args.mlm)
        except ValueError as error:
            raise UsageError(str(error)) from error
    if model_args.mlm and ldro_args.lm_objective == "causal":
        raise UsageError("--mlm trains a masked LM but --lm_objective is causal: drop one of them.")
    return model_args, data_args, ldro_args, training_args


def check_output_dir(output_dir: str) -> None:
    """Raise a UsageError when --output_dir names an existing file (or lies below one)."""
    path = Path(output_dir)
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            raise UsageError(
                f"--output_dir {output_dir}: {candidate} is an existing file, not a folder. Pass "
                "a folder path (it is created when missing)."
            )


def looks_like_local_path(name: str) -> bool:
    """Return whether `name` can only be a local path: a Hub id is `name` or `namespace/name`."""
    return (
        name.startswith((".", "~", "/"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
        or (os.altsep is not None and os.altsep != "/" and os.altsep in name)
    )


def check_local_folder(flag: str, name: str) -> str:
    """Return `name` with `~` expanded; raise a UsageError when it is a path with no folder there."""
    expanded = os.path.expanduser(name)
    if looks_like_local_path(name) and not os.path.isdir(expanded):
        folder_kinds = {"tokenizer_name": "tokenizer", "model_name_or_path": "model"}
        kind = folder_kinds.get(flag, "config")
        raise UsageError(
            f"--{flag}: {kind} folder {name} not found. Check the path (for a Hub model, pass "
            "its id as namespace/name)."
        )
    return expanded


def pretrained_load_error(flag: str, name: str, error: Exception) -> UsageError:
    """Build the UsageError for a tokenizer, config or model that failed to load from `name`."""
    # transformers' messages span several lines and end with a period.
    reason = " ".join(str(error).split()).rstrip(".")
    if os.path.isdir(name):
        return UsageError(f"--{flag}: could not load {name}: {reason}.")
    alternative = ", or --byte_tokenizer" if flag == "tokenizer_name" else ""
    return UsageError(
        f"--{flag}: could not load {name} from the Hub (offline / unreachable): {reason}. Pass a "
        f"local folder{alternative}, or check the Hub id and the network (HF_HUB_OFFLINE)."
    )


def setup_logging(training_args: TrainingArguments) -> None:
    """Log to stdout with per-rank levels: the main process at INFO, replicas at WARNING."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    logging.getLogger("hf_ldro").setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.warning(
        "Process rank: %d, device: %s, n_gpu: %d, distributed training: %s, world size: %d",
        training_args.process_index,
        training_args.device,
        training_args.n_gpu,
        training_args.parallel_mode.value == "distributed",
        training_args.world_size,
    )


def check_hub_reachable(training_args: TrainingArguments, timeout: float = 10.0) -> None:
    """Fail before training when --push_to_hub is set but the Hub cannot be reached.

    Checks offline mode (HF_HUB_OFFLINE) and opens one TCP connection to the Hub endpoint
    (HF_ENDPOINT), or to the proxy that the environment names for it, within `timeout` seconds.
    Without it, the push would fail only after training, possibly after the Hub client's retries.
    """
    if not training_args.push_to_hub:
        return
    from huggingface_hub import constants

    upload_later = (
        "or drop --push_to_hub and upload the saved --output_dir later (`hf upload <repo> "
        "<output_dir>`, or trainer.push_to_hub())."
    )
    if constants.HF_HUB_OFFLINE:
        raise UsageError(
            "--push_to_hub uploads to the Hugging Face Hub, but offline mode is on "
            f"(HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE, {upload_later}"
        )
    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    host, port = endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname, proxy_url.port or 80
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        raise UsageError(
            f"--push_to_hub: cannot reach the Hub at {constants.ENDPOINT} (connecting to "
            f"{host}:{port} failed: {error}). Check the network connection and HF_ENDPOINT, "
            f"{upload_later}"
        ) from error


def load_language_data(data_args: DataTrainingArguments, ldro_args: PretrainingLDROArguments) -> LanguageData:
    """Select the languages and build their sources; raises UsageError for unknown languages."""
    languages = data_args.languages
    demo = data_args.data_dir is None and data_args.train_files is None and not data_args.mc4
    if demo and languages is None:
        languages = list(DEMO_LANGUAGES)
    try:
        return load_languages(
            data_dir=data_args.data_dir,
            train_files=data_args.train_files,
            validation_files=data_args.validation_files,
            hub_languages=data_args.languages if data_args.mc4 else None,
            languages=languages,
            hub_sizes=ldro_args.dataset_sizes if data_args.mc4 else None,
            hub_dataset=data_args.mc4_dataset,
            text_field=data_args.text_field,
            encoding_errors=data_args.encoding_errors,
        )
    except (DataError, ValueError) as error:
        raise UsageError(str(error)) from error


def check_run(
    data: LanguageData,
    data_args: DataTrainingArguments,
    ldro_args: PretrainingLDROArguments,
    training_args: TrainingArguments,
) -> None:
    """Check that method, languages and references fit together, before anything is trained."""
    languages = data.task_names
    if ldro_args.monolingual and len(languages) != 1:
        raise UsageError(
            f"--method {MONOLINGUAL} trains on one language but the run has {len(languages)}: "
            f"{languages}. Pick one with --languages."
        )
    if ldro_args.monolingual and languages[0] not in data.validation_sources:
        raise UsageError(
            f"--method {MONOLINGUAL} needs validation data for {languages[0]!r} to write "
            f"{REFERENCE_FILE_NAME}: add a validation file for it."
        )
    require_references("losses", ldro_args.reference_losses, languages)
    require_references("perplexities", ldro_args.reference_perplexities, list(data.validation_sources))
    if ldro_args.dataset_sizes is not None:
        missing = [language for language in languages if language not in ldro_args.dataset_sizes]
        if missing:
            raise UsageError(
                f"--dataset_sizes has no size for language(s) {missing}: give one for every "
                "training language."
            )
    needs_sizes = ldro_args.method == "static" and ldro_args.mixing_alpha > 0
    if needs_sizes and data_args.mc4 and ldro_args.dataset_sizes is None:
        raise UsageError(
            "--method static with --mixing_alpha > 0 samples languages by size, and streamed "
            "mC4 languages have no known size: pass --dataset_sizes '{\"yo\": 4.6e7, ...}' "
            "(any unit) or --mixing_alpha 0."
        )
    if training_args.do_eval and not data.validation_sources:
        raise UsageError(
            f"None of the languages {languages} has validation data: add validation files, "
            "or pass --do_train without --do_eval."
        )


def detect_last_checkpoint(training_args: TrainingArguments, task_names: Sequence[str]) -> str | None:
    """Return the checkpoint to resume from: --resume_from_checkpoint, else the last complete one.

    Raises:
        UsageError: the checkpoint is incomplete (its saving was interrupted, or a file is missing
            or truncated), or it was saved for another task list.
    """
    if not training_args.do_train:
        return None
    if training_args.resume_from_checkpoint is not None:
        checkpoint = training_args.resume_from_checkpoint
        problem = checkpoint_problem(checkpoint)
        if problem is not None:
            raise UsageError(
                f"--resume_from_checkpoint {checkpoint}: {problem}. Resume from an earlier "
                "checkpoint, or leave the flag out to resume from the last complete checkpoint of "
                "--output_dir."
            )
    else:
        if not os.path.isdir(training_args.output_dir):
            return None
        checkpoint = last_complete_checkpoint(training_args.output_dir)
        if checkpoint is None:
            return None
        logger.info(
            "Checkpoint detected, resuming training at %s. To train from scratch, use another "
            "--output_dir or delete its checkpoint-* folders.",
            checkpoint,
        )
    saved_tasks = checkpoint_task_names(checkpoint, TASK_WEIGHTING_STATE_NAME)
    if saved_tasks is not None and saved_tasks != list(task_names):
        raise UsageError(
            f"Checkpoint {checkpoint} was saved for the languages {saved_tasks}, but this run has "
            f"{list(task_names)}. Resume with the same --languages in the same order, or train "
            "from scratch in another --output_dir."
        )
    return checkpoint


def check_checkpoint_settings(
    checkpoint: str,
    config: transformers.PretrainedConfig,
    weighting: TaskWeighting,
    ldro_args: PretrainingLDROArguments,
) -> None:
    """Raise a UsageError when this run's model or method cannot resume `checkpoint`.

    A changed model shape (vocabulary, block size, sizes) would fail while loading the weights,
    and a changed method while loading the task-weighting state. A changed hyperparameter of the
    same method is allowed and logged at WARNING, and the new value applies from here on.
    """
    fix = "Resume with the settings of the run that wrote it, or train in a new --output_dir."
    for name, saved, new in checkpoint_config_differences(checkpoint, config):
        if name == "vocab_size":
            cause = "the tokenizer changed (--tokenizer_name, --byte_tokenizer, --mlm)"
        elif name in ("n_positions", "max_position_embeddings"):
            cause = "--block_size (or the position embeddings of --config_overrides) changed"
        else:
            cause = "the model changed (--model_type, --config_name, --config_overrides)"
        raise UsageError(
            f"Checkpoint {checkpoint} has {name}={saved} but this run's model has {name}={new}: "
            f"{cause}. {fix}"
        )
    saved_state = checkpoint_weighting_state(checkpoint, TASK_WEIGHTING_STATE_NAME)
    if saved_state is None:
        return
    new_state = weighting.state_dict()
    if saved_state.get("strategy", new_state["strategy"]) != new_state["strategy"]:
        raise UsageError(
            f"Checkpoint {checkpoint} contains {saved_state['strategy']} task weights, but --method "
            f"{ldro_args.method} uses {new_state['strategy']}. {fix}"
        )
    for name, saved, new in changed_weighting_settings(saved_state, new_state):
        logger.warning(
            "Checkpoint %s was trained with %s=%s; this run uses %s=%s from now on.",
            checkpoint,
            name,
            saved,
            name,
            new,
        )


def finished_training(checkpoint: str, max_steps: int) -> bool:
    """Return whether `checkpoint` already reached `max_steps`, and log that training is skipped.

    Resuming such a checkpoint would let the Trainer take one more optimizer step on the
    endless stream (transformers 5.25), so the run evaluates it instead.
    """
    global_step = checkpoint_global_step(checkpoint)
    if global_step < max_steps:
        return False
    logger.info(
        "Already trained to step %d (max_steps %d) in %s; evaluating only. Raise --max_steps to "
        "train further.",
        global_step,
        max_steps,
        checkpoint,
    )
    return True


def restore_finished_state(trainer: LDROTrainer, checkpoint: str) -> None:
    """Load the trainer state and task weights of a finished checkpoint, for evaluation and the card."""
    trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
    trainer.load_task_weighting_state(checkpoint)


def load_tokenizer(
    model_args: ModelArguments,
    data: LanguageData,
    training_args: TrainingArguments,
    checkpoint: str | None,
):
    """Load, or train and save, the tokenizer; call inside `main_process_first`.

    The local main process trains the tokenizer and saves it in `<output_dir>/tokenizer`, and the
    other processes load that copy. A resumed run loads the copy saved in its checkpoint. So every
    process and every resume uses the same vocabulary.
    """
    hub_kwargs = model_args.hub_kwargs()
    if model_args.byte_tokenizer:
        tokenizer = build_tokenizer(BYTE_LEVEL)
    elif model_args.tokenizer_name or model_args.model_name_or_path:
        flag = "tokenizer_name" if model_args.tokenizer_name else "model_name_or_path"
        name = getattr(model_args, flag)
        try:
            tokenizer = load_pretrained_tokenizer(name, **hub_kwargs)
        except (OSError, ValueError) as error:
            raise pretrained_load_error(flag, name, error) from error
    elif checkpoint is not None:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        logger.info(
            "Resuming from %s with the tokenizer saved there (%d entries); --tokenizer_vocab_size "
            "and --tokenizer_temperature apply only when a new tokenizer is trained.",
            checkpoint,
            len(tokenizer),
        )
    else:
        folder = Path(training_args.output_dir) / TOKENIZER_FOLDER_NAME
        if training_args.local_process_index == 0:
            try:
                tokenizer = build_tokenizer(
                    None,
                    train_sources=data.train_sources,
                    output_dir=folder,
                    vocab_size=model_args.tokenizer_vocab_size,
                    alpha=1.0 / model_args.tokenizer_temperature,
                    seed=training_args.seed,
                )
            except ValueError as error:
                raise UsageError(
                    f"{error} With this script: raise --tokenizer_vocab_size, or pass --byte_tokenizer."
                ) from error
        else:
            tokenizer = AutoTokenizer.from_pretrained(folder)
    if model_args.mlm:
        add_mask_token(tokenizer)
    return tokenizer


def build_task_weighting(
    ldro_args: PretrainingLDROArguments, task_names: list[str], stream: TaskStratifiedStream | None
) -> TaskWeighting:
    """Build the weighting strategy; static mixing defaults |D_i| to the stream's token counts."""
    if ldro_args.monolingual:
        return weighting_from_arguments(
            dataclasses.replace(ldro_args, method="static", mixing_alpha=0.0), task_names
        )
    needs_sizes = ldro_args.method == "static" and ldro_args.mixing_alpha > 0
    if needs_sizes and ldro_args.dataset_sizes is None and stream is not None:
        sizes = stream.dataset_sizes
        unknown = [name for name, size in sizes.items() if size is None]
        if unknown:
            raise UsageError(f"The sizes of {unknown} are unknown (streamed data): pass --dataset_sizes.")
        logger.info("Static mixing with the training token counts as dataset sizes: %s", sizes)
        return weighting_from_arguments(dataclasses.replace(ldro_args, dataset_sizes=sizes), task_names)
    return weighting_from_arguments(ldro_args, task_names)


def write_plots(output_dir: str, eval_metrics: Mapping[str, Any]) -> list[str]:
    """Draw task_weights.png from task_weights.jsonl and perplexity.png from the eval metrics."""
    written = []
    weights_log = os.path.join(output_dir, TASK_WEIGHTS_LOG_NAME)
    if os.path.isfile(weights_log) and os.path.getsize(weights_log) > 0:
        written.append(plot_task_weights(weights_log, os.path.join(output_dir, TASK_WEIGHTS_PLOT_NAME)))
    else:
        logger.warning(
            "No %s in %s (no training log was written): %s is not drawn. Lower --logging_steps "
            "below --max_steps to log task weights.",
            TASK_WEIGHTS_LOG_NAME,
            output_dir,
            TASK_WEIGHTS_PLOT_NAME,
        )
    if eval_metrics:
        written.append(plot_perplexities(eval_metrics, os.path.join(output_dir, PERPLEXITY_PLOT_NAME)))
    return written


def write_reference_file(
    output_dir: str, language: str, metrics: Mapping[str, Any], global_step: int, tokenizer
) -> Path:
    """Write `<output_dir>/reference.json` from the validation metrics of a monolingual run."""
    reference = {
        "method": MONOLINGUAL,
        "language": language,
        "global_step": global_step,
        "tokenizer_fingerprint": vocabulary_fingerprint(tokenizer),
        "tokenizer_size": len(tokenizer),
        "reference_losses": {language: metrics[f"eval_{language}_loss"]},
        "reference_perplexities": {language: metrics[f"eval_{language}_perplexity"]},
    }
    path = Path(output_dir) / REFERENCE_FILE_NAME
    path.write_text(json.dumps(reference, indent=2) + "\n", encoding="utf-8")
    logger.info("Wrote the reference loss and perplexity of %r to %s", language, path)
    return path


def prepare_datasets(
    data: LanguageData,
    tokenizer,
    data_args: DataTrainingArguments,
    training_args: TrainingArguments,
) -> tuple[TaskStratifiedStream | None, dict[str, Any] | None]:
    """Build the training stream and the per-language evaluation sets that the run needs."""
    try:
        train_stream = None
        if training_args.do_train:
            train_stream = TaskStratifiedStream(
                data.train_sources,
                tokenizer,
                block_size=data_args.block_size,
                batch_size=training_args.per_device_train_batch_size,
                task_names=data.task_names,
                seed=training_args.seed,
            )
        eval_datasets = None
        if training_args.do_eval:
            eval_datasets = build_eval_datasets(
                data.validation_sources,
                tokenizer,
                data_args.block_size,
                data.task_names,
                max_blocks_per_language=data_args.max_eval_blocks,
            )
    except DataError as error:
        raise UsageError(str(error)) from error
    return train_stream, eval_datasets


def train_and_save(trainer: LDROTrainer, training_args: TrainingArguments, checkpoint: str | None) -> None:
    """Train, save the model and tokenizer, and write the training metrics and state."""
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    train_metrics = dict(train_result.metrics)
    train_metrics["train_samples"] = (
        trainer.state.global_step
        * training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * training_args.world_size
    )
    trainer.log_metrics("train", train_metrics)
    trainer.save_metrics("train", train_metrics)
    trainer.save_state()


def model_card_kwargs(
    data: LanguageData,
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
    ldro_args: PretrainingLDROArguments,
) -> dict[str, Any]:
    """Return the `create_model_card` / `push_to_hub` metadata: languages, tags, task, dataset."""
    kwargs: dict[str, Any] = {
        "language": list(data.task_names),
        "tags": ["hf_ldro", ldro_args.method, "masked-lm" if model_args.mlm else "causal-lm"],
        "tasks": "fill-mask" if model_args.mlm else "text-generation",
    }
    dataset_name = {"demo": "chatterbot-corpus", "hub": data_args.mc4_dataset}.get(data.origin)
    if dataset_name is not None:
        kwargs["dataset"] = dataset_name
    if model_args.model_name_or_path:
        kwargs["finetuned_from"] = model_args.model_name_or_path
    return kwargs


def main(args: Sequence[str] | None = None) -> dict[str, Any]:
    """Run pretraining and evaluation; returns the final evaluation metrics (empty without eval)."""
    model_args, data_args, ldro_args, training_args = parse_arguments(args)
    setup_logging(training_args)
    check_hub_reachable(training_args)
    logger.info("Training arguments %s", training_args)
    logger.info("Task-weighting arguments %s", ldro_args)

    data = load_language_data(data_args, ldro_args)
    check_run(data, data_args, ldro_args, training_args)
    task_names = list(data.task_names)
    checkpoint = detect_last_checkpoint(training_args, task_names)
    set_seed(training_args.seed)

    with training_args.main_process_first(desc="tokenizer training and data preparation"):
        tokenizer = load_tokenizer(model_args, data, training_args, checkpoint)
        train_stream, eval_datasets = prepare_datasets(data, tokenizer, data_args, training_args)
    check_reference_tokenizers(ldro_args.reference_tokenizers, tokenizer)

    weighting = build_task_weighting(ldro_args, task_names, train_stream)
    if train_stream is not None and weighting.sampling_probabilities is not None:
        train_stream.set_sampling_probabilities(weighting.sampling_probabilities.tolist())
    logger.info("Task weighting %r over %s", weighting, task_names)

    config_flag = "config_name" if model_args.config_name else "model_name_or_path"
    try:
        config = build_config(
            tokenizer,
            block_size=data_args.block_size,
            mlm=model_args.mlm,
            model_type=model_args.model_type,
            config_name=model_args.config_name,
            model_name_or_path=model_args.model_name_or_path,
            config_overrides=model_args.config_overrides,
            hub_kwargs=model_args.hub_kwargs(),
        )
    except OSError as error:
        raise pretrained_load_error(config_flag, getattr(model_args, config_flag), error) from error
    already_trained = False
    if checkpoint is not None:
        check_checkpoint_settings(checkpoint, config, weighting, ldro_args)
        already_trained = finished_training(checkpoint, training_args.max_steps)

    # A finished run evaluates the weights of its last checkpoint instead of training again.
    weights_source = checkpoint if already_trained else model_args.model_name_or_path
    try:
        model = build_model(
            config,
            tokenizer,
            mlm=model_args.mlm,
            model_name_or_path=weights_source,
            hub_kwargs=model_args.hub_kwargs(),
        )
    except OSError as error:
        raise pretrained_load_error("model_name_or_path", weights_source, error) from error
    if not model_args.model_name_or_path:
        # create_model_card takes a config name_or_path that is not a local folder as the base
        # model. A new model has an empty one, so the card would say "a fine-tuned version of
        # []". An existing folder keeps "trained from scratch" (transformers 5.25).
        model.config.name_or_path = training_args.output_dir
    if model_args.mlm:
        data_collator = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=model_args.mlm_probability
        )
    else:
        # The stream and the evaluation sets already hold labels (-100 on evaluation padding).
        data_collator = default_data_collator

    trainer = LDROTrainer(
        model=model,
        args=training_args,
        weighting=weighting,
        ldro_args=ldro_args,
        reference_perplexities=ldro_args.reference_perplexities,
        train_dataset=train_stream,
        eval_dataset=eval_datasets,
        processing_class=tokenizer,
        data_collator=data_collator,
    )

    if already_trained:
        restore_finished_state(trainer, checkpoint)
    elif training_args.do_train:
        train_and_save(trainer, training_args, checkpoint)

    eval_metrics: dict[str, Any] = {}
    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        if ldro_args.monolingual and trainer.is_world_process_zero():
            write_reference_file(
                training_args.output_dir, task_names[0], eval_metrics, trainer.state.global_step, tokenizer
            )

    if trainer.is_world_process_zero():
        for path in write_plots(training_args.output_dir, eval_metrics):
            logger.info("Wrote %s", path)

    card_kwargs = model_card_kwargs(data, model_args, data_args, ldro_args)
    if training_args.push_to_hub:
        trainer.push_to_hub(**card_kwargs)
    else:
        trainer.create_model_card(**card_kwargs)

    if eval_metrics and trainer.is_world_process_zero():
        print(f"\nPer-language validation perplexity ({ldro_args.method}, step {trainer.state.global_step}):")
        print(perplexity_table(eval_metrics))
    return eval_metrics


if __name__ == "__main__":
    try:
        main()
    except (UsageError, NonFiniteTaskLossError) as error:
        sys.exit(f"run_mlm_ldro.py: error: {error}")
