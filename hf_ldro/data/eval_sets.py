"""Per-language evaluation sets of packed blocks, for ``trainer.evaluate(eval_dataset={lang: ds})``."""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

from datasets import Dataset

from .packing import check_block_size, eos_token_id, pack_documents
from .sources import DataError, LanguageSource

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def build_eval_datasets(
    sources: Mapping[str, LanguageSource],
    tokenizer,
    block_size: int,
    task_names: Sequence[str] | None = None,
    max_blocks_per_language: int | None = None,
) -> dict[str, Dataset]:
    """Pack each language's validation documents into a map-style `datasets.Dataset`.

    Columns: ``input_ids``, ``attention_mask`` and ``labels`` (lists of ``block_size`` ints) and ``task_ids`` (the
    language's index in `task_names`, which must be the training task order). Documents are packed
    as in training. The tokens left after the last full block form one more block, right-padded
    with the pad token (EOS when the tokenizer has none), masked out of attention and labelled -100
    there, so neither the loss nor a bidirectional (masked-LM) model sees the padding. `max_blocks_per_language` keeps only the first blocks.
    """
    check_block_size(block_size)
    if max_blocks_per_language is not None and max_blocks_per_language < 1:
        raise ValueError(f"max_blocks_per_language must be >= 1 or None, got {max_blocks_per_language!r}.")
    task_names = list(task_names) if task_names is not None else list(sources)
    eos_id = eos_token_id(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    datasets: dict[str, Dataset] = {}
    for name, source in sources.items():
        if name not in task_names:
            raise DataError(
                f"Validation language {name!r} is not a training task {task_names}: train on it "
                f"too, or drop its validation data."
            )
        blocks, leftover = pack_documents(tokenizer, source.iter_documents(), block_size, eos_id)
        labels = [list(block) for block in blocks]
        attention_masks = [[1] * block_size for _ in blocks]
        if leftover and (max_blocks_per_language is None or len(blocks) < max_blocks_per_language):
            padding = block_size - len(leftover)
            blocks.append(leftover + [pad_id] * padding)
            labels.append(leftover + [IGNORE_INDEX] * padding)
            attention_masks.append([1] * len(leftover) + [0] * padding)
        if max_blocks_per_language is not None:
            blocks = blocks[:max_blocks_per_language]
            labels = labels[:max_blocks_per_language]
            attention_masks = attention_masks[:max_blocks_per_language]
        task_id = task_names.index(name)
        datasets[name] = Dataset.from_dict(
            {
                "input_ids": blocks,
                "attention_mask": attention_masks,
                "labels": labels,
                "task_ids": [task_id] * len(blocks),
            }
        )
        logger.info("Evaluation set %r: %d blocks of %d tokens.", name, len(blocks), block_size)
    return datasets
