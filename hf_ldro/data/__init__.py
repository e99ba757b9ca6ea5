"""Multilingual LM data: language sources, tokenizers, packing and the task-stratified stream.

Typical use::

    data = load_languages(data_dir="data/ud", languages=["eng_Latn", "yor_Latn"])
    tokenizer = build_tokenizer("byte-level")
    stream = TaskStratifiedStream(data.train_sources, tokenizer, block_size=128, batch_size=8,
                                  task_names=data.task_names)
    eval_sets = build_eval_datasets(data.validation_sources, tokenizer, 128, data.task_names)
"""

from .demo_corpus import demo_languages, demo_sources
from .eval_sets import build_eval_datasets
from .hub import MC4_DATASET, MC4_LANGUAGE_CODES, HubLanguageSource
from .languages import LanguageData, load_languages
from .packing import BlockPacker, pack_documents
from .sources import DataError, InMemorySource, LanguageSource, TextFileSource
from .stream import TaskStratifiedStream, stratified_batch_tasks
from .tokenizer import (
    BYTE_LEVEL,
    build_tokenizer,
    byte_level_tokenizer,
    load_pretrained_tokenizer,
    temperature_probabilities,
    train_sentencepiece_tokenizer,
)

__all__ = [
    "BYTE_LEVEL",
    "BlockPacker",
    "DataError",
    "HubLanguageSource",
    "InMemorySource",
    "LanguageData",
    "LanguageSource",
    "MC4_DATASET",
    "MC4_LANGUAGE_CODES",
    "TaskStratifiedStream",
    "TextFileSource",
    "build_eval_datasets",
    "build_tokenizer",
    "byte_level_tokenizer",
    "demo_languages",
    "demo_sources",
    "load_languages",
    "load_pretrained_tokenizer",
    "pack_documents",
    "stratified_batch_tasks",
    "temperature_probabilities",
    "train_sentencepiece_tokenizer",
]
